//! The site's health reaches HQ (issue 9): capture's batches carry a health report (versions,
//! source lag, outbox, disk, last error), and HQ's `status` (text and `--json`), its metrics
//! and its console show it with the site's state in words. A site database that goes down
//! shows as failing, with its error, while capture retries, and as recovered once it is back;
//! a site HQ stops hearing from shows as offline, then streaming again once its batches flow.

use anyhow::{Context, Result, ensure};
use serde_json::Value as Json;
use tributary::dataset::{self, PatientShape};
use tributary_suite::pipeline::{CATCH_UP, CLINIC, Pipeline, PipelineOptions};
use tributary_suite::{ChildGuard, scrape, wait_metrics_address, wait_until};

/// How long HQ waits before it shows a silent site as offline, in this test.
const SILENT_AFTER_S: u64 = 4;

/// The site's entry of `tributary status --json`.
fn site_status(p: &Pipeline) -> Result<Json> {
    let out = p.run(&["status", "--json"])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Json = serde_json::from_slice(&out.stdout)?;
    Ok(status["hq"]["sites"][0].clone())
}

/// Waits until the site's status satisfies `done` (checked on `status --json`).
async fn wait_status(
    p: &Pipeline,
    what: &str,
    logs: &[&ChildGuard],
    done: impl Fn(&Json) -> bool,
) -> Result<Json> {
    let done = &done;
    wait_until(what, CATCH_UP, || async move {
        Ok(site_status(p).is_ok_and(|s| done(&s)))
    })
    .await
    .map_err(|e| {
        let logs: Vec<String> = logs.iter().map(|c| c.logs()).collect();
        e.context(format!("{:?}\n{}", site_status(p).ok(), logs.join("\n")))
    })?;
    site_status(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sites_health_reaches_hq_and_its_state_is_shown_in_words() -> Result<()> {
    let mut p = Pipeline::start(
        "site-health",
        PipelineOptions {
            health_interval_ms: 300,
            ..PipelineOptions::default()
        },
    )
    .await?;
    let config = std::fs::read_to_string(&p.config)?;
    std::fs::write(
        &p.config,
        config.replacen(
            "[hq]\n",
            &format!("[hq]\nsite_silent_after_s = {SILENT_AFTER_S}\n"),
            1,
        ),
    )?;
    let mut capture = p.spawn("capture", "capture")?;
    let mut apply = p.spawn_with_args(
        "apply",
        &p.config,
        "apply",
        &["--metrics-listen", "127.0.0.1:0"],
    )?;
    let metrics = wait_metrics_address(&apply).await?;
    p.wait_capture_started("state", &capture).await?;
    let shape = PatientShape::default();
    dataset::load_patients(&mut p.site.conn().await?, CLINIC, "clinic-a", 0, 2, shape).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;

    // 1. Healthy: the report is there, with the agent's and the database's versions.
    let healthy = wait_status(&p, "a health report at HQ", &[&capture, &apply], |s| {
        s["health"]["agent_version"] == env!("CARGO_PKG_VERSION")
    })
    .await?;
    let health = &healthy["health"];
    ensure!(
        health["database_version"]
            .as_str()
            .is_some_and(|v| v.contains("MariaDB")),
        "{health}"
    );
    for field in [
        "source_lag_seconds",
        "spool_bytes",
        "spool_oldest_age_seconds",
        "disk_free_bytes",
    ] {
        ensure!(health[field].is_u64(), "{field}: {health}");
    }
    ensure!(
        health["source_position"]
            .as_str()
            .is_some_and(|p| !p.is_empty()),
        "{health}"
    );
    ensure!(health["failing"] == false && health["last_error"].is_null());
    ensure!(healthy["data_silent_seconds"].is_i64(), "{healthy}");
    let text = p.status()?;
    ensure!(
        text.contains("streaming") && text.contains("agent ") && text.contains("last data"),
        "{text}"
    );

    // 2. The site database goes down: capture keeps retrying, and says so to HQ.
    p.site.stop_server()?;
    let failing = wait_status(
        &p,
        "the site to show as failing",
        &[&capture, &apply],
        |s| s["health"]["failing"] == true,
    )
    .await?;
    ensure!(
        failing["health"]["last_error"]["class"] == "transient",
        "{failing}"
    );
    let text = p.status()?;
    ensure!(text.contains("failing: transient: "), "{text}");
    wait_until("the failing gauge", CATCH_UP, || async move {
        Ok(
            scrape(metrics)?.value("tributary_apply_site_failing", &[("site", "clinic-a")])
                == Some(1.0),
        )
    })
    .await?;
    p.site.start_server()?;
    let recovered = wait_status(&p, "the site to recover", &[&capture, &apply], |s| {
        s["health"]["failing"] == false && !s["health"]["last_error"].is_null()
    })
    .await?;
    ensure!(
        recovered["health"]["last_error"]["class"] == "transient",
        "the error stays reported once recovered: {recovered}"
    );
    wait_until("the failing gauge to clear", CATCH_UP, || async move {
        Ok(
            scrape(metrics)?.value("tributary_apply_site_failing", &[("site", "clinic-a")])
                == Some(0.0),
        )
    })
    .await?;

    // 3. HQ stops hearing from the site (the applier is down while the clinic works): once
    // it is back, the site shows offline, then its backlog is applied and it streams again.
    apply.kill9()?;
    dataset::load_patients(&mut p.site.conn().await?, CLINIC, "clinic-a", 2, 2, shape).await?;
    p.wait_capture_published("state", &capture).await?;
    wait_status(&p, "the site to show as offline", &[&capture], |s| {
        s["silent_seconds"]
            .as_i64()
            .is_some_and(|silent| silent >= SILENT_AFTER_S as i64)
    })
    .await?;
    let text = p.status()?;
    ensure!(text.contains("offline since "), "{text}");
    let mut apply = p.spawn("apply", "apply-again")?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    wait_status(&p, "the site to stream again", &[&capture, &apply], |s| {
        s["silent_seconds"]
            .as_i64()
            .is_some_and(|silent| silent < 2)
    })
    .await?;
    let text = p.status()?;
    ensure!(
        !text.contains("offline since") && text.contains("streaming"),
        "{text}"
    );
    p.verify().context("HQ equals the site")?;
    Ok(())
}
