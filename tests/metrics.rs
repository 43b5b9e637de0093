//! `tributary apply`'s `/metrics` endpoint (invariant 9: every failure is visible, in the
//! metrics too): each rejection HQ records is counted by site and by its reason's stable name,
//! a site HQ has no key for never becomes a label, applied batches and rows are counted by
//! site and agree with HQ's own bookkeeping; and a taken address stops the command with the
//! address and the remedy instead of running without metrics.

use anyhow::Result;
use std::time::Duration;
use tributary::dataset::PatientShape;
use tributary_suite::pipeline::{Pipeline, PipelineOptions, deliver};
use tributary_suite::{Scrape, scrape, wait_metrics_address, wait_until};

const REJECTED: &str = "tributary_apply_batches_rejected_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_counts_each_rejection_by_site_and_reason_on_its_metrics_endpoint() -> Result<()> {
    let p = Pipeline::start("metrics-apply", PipelineOptions::default()).await?;
    let outgoing = p.work.join("outgoing");
    let inbox = p.work.join("inbox");
    let capture_config = p.config_with("capture.toml", &outgoing, &p.key_file, "state")?;
    let apply_config = p.config_with("apply.toml", &inbox, &p.key_file, "state")?;
    // The endpoint from the configuration file (the flag is exercised below and by capture).
    let text = std::fs::read_to_string(&apply_config)?;
    std::fs::write(
        &apply_config,
        format!("{text}\n[metrics]\nlisten = \"127.0.0.1:0\"\n"),
    )?;

    let mut site = p.site.conn().await?;
    let shape = PatientShape::one_encounter(3);
    let genuine = p
        .capture_one_patient(&capture_config, "state", &outgoing, &mut site, 0, shape)
        .await?;
    let file_name = genuine.file_name().unwrap().to_string_lossy().into_owned();

    let apply = p.spawn_with("apply", &apply_config, "apply")?;
    let address = wait_metrics_address(&apply).await?;
    let at_start = scrape(address)?;
    assert_eq!(
        at_start.require(
            REJECTED,
            &[("site", "clinic-a"), ("reason", "authentication_failed")]
        )?,
        0.0,
        "a known site's series exist from the start"
    );
    assert_eq!(
        at_start.require("tributary_apply_batches_total", &[("site", "clinic-a")])?,
        0.0
    );

    // 1. The genuine batch with one ciphertext byte flipped: authentication fails.
    let mut tampered = std::fs::read(&genuine)?;
    let at = tampered.len() - 20;
    tampered[at] ^= 0x01;
    deliver(&tampered, &inbox, "clinic-a", &file_name)?;
    let metrics = wait_for_sample(
        &apply,
        address,
        REJECTED,
        &[("site", "clinic-a"), ("reason", "authentication_failed")],
        1.0,
    )
    .await?;
    assert_eq!(
        metrics.require("tributary_apply_batches_total", &[("site", "clinic-a")])?,
        0.0,
        "nothing of it was applied"
    );

    // 2. The genuine batch placed as a site HQ has no key for: misplaced, and counted under
    // the one label for unknown sites, never under the name someone chose.
    deliver(&std::fs::read(&genuine)?, &inbox, "clinic-x", &file_name)?;
    let metrics = wait_for_sample(
        &apply,
        address,
        REJECTED,
        &[("site", "(unknown)"), ("reason", "misplaced_batch")],
        1.0,
    )
    .await?;
    assert!(!metrics.text().contains("clinic-x"), "{}", metrics.text());

    // 3. The genuine batch, unaltered: applied, counted with its rows, as HQ recorded them.
    deliver(&std::fs::read(&genuine)?, &inbox, "clinic-a", &file_name)?;
    let metrics = wait_for_sample(
        &apply,
        address,
        "tributary_apply_batches_total",
        &[("site", "clinic-a")],
        1.0,
    )
    .await?;
    let rows_applied: u64 =
        p.hq.scalar("SELECT rows_applied FROM tributary_site_progress WHERE site_id = 'clinic-a'")
            .await?;
    assert!(rows_applied > 0);
    assert_eq!(
        metrics.require("tributary_apply_rows_total", &[("site", "clinic-a")])?,
        rows_applied as f64,
        "the metric agrees with HQ's rows_applied"
    );
    // When HQ last heard from the site, and how far behind its newest applied change was.
    let heard = metrics.require(
        "tributary_apply_last_batch_timestamp_seconds",
        &[("site", "clinic-a")],
    )?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    assert!(heard > 0.0 && heard <= now + 1.0, "{heard}");
    let lag = metrics.require("tributary_apply_lag_seconds", &[("site", "clinic-a")])?;
    assert!(lag >= 0.0, "{lag}");
    assert_eq!(
        metrics.require("tributary_apply_errors_total", &[("class", "fatal")])?,
        0.0
    );
    assert_eq!(
        metrics.require(
            REJECTED,
            &[("site", "clinic-a"), ("reason", "authentication_failed")]
        )?,
        1.0,
        "each rejection is counted once"
    );

    // 4. Another applier asked to serve on the same address stops at once, naming it.
    let out = p.run_with(
        &apply_config,
        &["apply", "--once", "--metrics-listen", &address.to_string()],
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot serve metrics on {address}"))
            && stderr.contains("--metrics-listen"),
        "{stderr}"
    );
    Ok(())
}

/// Scrapes until the sample `name{labels}` reads `expected`; returns that scrape.
async fn wait_for_sample(
    child: &tributary_suite::ChildGuard,
    address: std::net::SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    expected: f64,
) -> Result<Scrape> {
    let what = format!("{name}{labels:?} to read {expected}");
    wait_until(&what, Duration::from_secs(60), || async move {
        Ok(scrape(address)?.value(name, labels) == Some(expected))
    })
    .await
    .map_err(|e| e.context(child.logs()))?;
    scrape(address)
}
