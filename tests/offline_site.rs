//! A site whose transport is gone for a long stretch: its outbox fills up to the configured cap,
//! capture then waits (saying why, once, and raising `tributary_capture_spool_blocked{reason="cap"}`
//! on its metrics endpoint) without losing or skipping anything, and when the transport comes
//! back the backlog drains, the flag drops and HQ ends up equal to the site.

use anyhow::Result;
use std::time::Duration;
use tributary::dataset::{self, PatientShape};
use tributary_suite::pipeline::{CLINIC, Pipeline, PipelineOptions, batch_files};
use tributary_suite::{scrape, wait_metrics_address, wait_until};

const BLOCKED: &str = "tributary_capture_spool_blocked";
const OLDEST_AGE: &str = "tributary_capture_spool_oldest_age_seconds";

/// Patients registered while HQ takes nothing (about 40 rows each, 1.5 KB of sealed batches
/// per patient): well over what 1 MiB of outbox holds.
const PATIENTS: u64 = 1_200;
const LIMIT_BYTES: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_holds_capture_back_and_drains_when_the_transport_returns() -> Result<()> {
    let p = Pipeline::start(
        "offline-site",
        PipelineOptions {
            max_batch_rows: 2_000,
            transaction_part_rows: 2_000,
            ..PipelineOptions::default()
        },
    )
    .await?;
    let config = std::fs::read_to_string(&p.config)?;
    std::fs::write(
        &p.config,
        config.replacen("[site]\n", "[site]\noutbox_limit_mb = 1\n", 1),
    )?;
    let batches = p.work.join("batches");

    // The link is down: capture runs, nothing takes its batches.
    let capture = p.spawn_with_args(
        "capture",
        &p.config,
        "capture",
        &["--metrics-listen", "127.0.0.1:0"],
    )?;
    let metrics = wait_metrics_address(&capture).await?;
    p.wait_capture_started("state", &capture).await?;
    wait_until(
        "the outbox cap to show in the metrics",
        Duration::from_secs(30),
        || async move {
            let at_start = scrape(metrics)?;
            Ok(at_start.value("tributary_capture_spool_limit_bytes", &[])
                == Some(LIMIT_BYTES as f64)
                && at_start.value(BLOCKED, &[("reason", "cap")]) == Some(0.0))
        },
    )
    .await
    .map_err(|e| e.context(capture.logs()))?;
    let mut site = p.site.conn().await?;
    let rows = dataset::load_patients(
        &mut site,
        CLINIC,
        "clinic-a",
        0,
        PATIENTS,
        PatientShape::default(),
    )
    .await?;

    // Capture fills the outbox up to its cap, says why it waits, and goes no further.
    wait_until(
        "capture to wait for space in the outbox",
        Duration::from_secs(120),
        || {
            let logs = capture.logs();
            async move { Ok(logs.contains("waiting for space in the outbox")) }
        },
    )
    .await
    .map_err(|e| e.context(capture.logs()))?;
    let held: u64 = batch_files(&batches, &p.site_id)?
        .iter()
        .map(|f| f.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    assert!(
        held <= LIMIT_BYTES,
        "the outbox holds {held} bytes, over its 1 MiB cap"
    );
    assert!(
        held > LIMIT_BYTES / 4,
        "the outbox filled before capture waited ({held} bytes)"
    );
    assert_eq!(
        capture
            .logs()
            .matches("waiting for space in the outbox")
            .count(),
        1,
        "said once, not at every retry"
    );

    // ... and its metrics say so: blocked by the cap (not the disk), the outbox at the cap.
    let full = scrape(metrics)?;
    assert_eq!(
        full.require(BLOCKED, &[("reason", "cap")])?,
        1.0,
        "{}",
        full.text()
    );
    assert_eq!(full.require(BLOCKED, &[("reason", "disk")])?, 0.0);
    let spool_bytes = full.require("tributary_capture_spool_bytes", &[])?;
    assert!(
        spool_bytes > (LIMIT_BYTES / 4) as f64 && spool_bytes <= LIMIT_BYTES as f64,
        "spool bytes {spool_bytes} against the 1 MiB cap"
    );
    assert!(full.require("tributary_capture_spool_disk_free_bytes", &[])? > 0.0);
    assert!(full.require("tributary_capture_batches_total", &[])? >= 1.0);
    // How long the oldest batch has waited keeps growing while capture waits (it is read
    // again at each refused attempt, at most every 15 s).
    wait_until(
        "the outbox's oldest batch to show its age",
        Duration::from_secs(120),
        || async move {
            Ok(scrape(metrics)?
                .value(OLDEST_AGE, &[])
                .is_some_and(|age| age >= 1.0))
        },
    )
    .await
    .map_err(|e| e.context(capture.logs()))?;
    assert!(full.require("tributary_capture_rows_total", &[])? >= 1.0);

    // The link returns: the backlog drains and capture goes on to the end.
    let mut apply = p.spawn("apply", "apply")?;
    let mut capture = capture;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    wait_until(
        "the blocked flag to drop once batches are admitted again",
        Duration::from_secs(30),
        || async move { Ok(scrape(metrics)?.value(BLOCKED, &[("reason", "cap")]) == Some(0.0)) },
    )
    .await
    .map_err(|e| e.context(capture.logs()))?;
    wait_until(
        "the oldest batch's age to drop to 0 once the outbox is drained",
        Duration::from_secs(120),
        || async move { Ok(scrape(metrics)?.value(OLDEST_AGE, &[]) == Some(0.0)) },
    )
    .await
    .map_err(|e| e.context(capture.logs()))?;
    // Caught up and idle: the source's heartbeats bring the lag to 0.
    wait_until(
        "the capture lag to read 0 on the source's heartbeat",
        Duration::from_secs(30),
        || async move { Ok(scrape(metrics)?.value("tributary_capture_lag_seconds", &[]) == Some(0.0)) },
    )
    .await?;
    let drained = scrape(metrics)?;
    assert_eq!(
        drained.require("tributary_capture_errors_total", &[("class", "fatal")])?,
        0.0
    );
    assert!(
        drained.require("tributary_capture_rows_total", &[])? >= rows as f64,
        "every row was counted on its way out: {}",
        drained.text()
    );
    let report = p.verify()?;
    assert!(report.contains("obs"), "{report}");
    let applied: u64 =
        p.hq.scalar("SELECT rows_applied FROM tributary_site_progress")
            .await?;
    assert!(applied >= rows, "every row arrived ({applied} of {rows})");
    Ok(())
}
