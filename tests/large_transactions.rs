//! A source transaction larger than a batch travels in parts (bounded memory, invariant 8),
//! applied in order, each part in its own HQ transaction; capture killed in the middle of
//! such a transaction resumes inside it, dropping exactly the rows already published.

use anyhow::Result;
use std::time::Duration;
use tributary::dataset::{self, PatientShape, patient_rows};
use tributary_suite::pipeline::{CLINIC, Pipeline, PipelineOptions};
use tributary_suite::wait_until;

const ROWS: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_larger_than_a_batch_travels_in_parts_and_resumes_inside_after_a_crash()
-> Result<()> {
    let p = Pipeline::start(
        "large-transaction",
        PipelineOptions {
            max_batch_rows: 20,
            transaction_part_rows: 20,
            ..PipelineOptions::default()
        },
    )
    .await?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    let shape = PatientShape::one_encounter(0);
    let mut site = p.site.conn().await?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 0, 1, shape).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let before: u64 =
        p.hq.scalar("SELECT rows_applied FROM tributary_site_progress")
            .await?;

    // One transaction: a form with thousands of observations (a bulk import, a migration).
    let encounter = patient_rows("clinic-a", 0, shape).encounters[0].clone();
    dataset::load_bulk_obs(&mut site, &encounter, ROWS).await?;

    // Kill capture while it is inside that transaction (parts published, not all of them).
    let state = p.work.join("state").join("capture-state.json");
    wait_until(
        "capture to be inside the large transaction",
        Duration::from_secs(60),
        || {
            let state = state.clone();
            async move {
                let text = std::fs::read_to_string(&state).unwrap_or_default();
                let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                Ok(v["partial"]["rows"]
                    .as_u64()
                    .is_some_and(|rows| rows >= 200))
            }
        },
    )
    .await
    .map_err(|e| e.context(capture.logs()))?;
    capture.kill9()?;
    let mut capture = p.spawn("capture", "capture-restarted")?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;

    assert!(
        capture
            .logs()
            .contains("resuming inside a transaction published in parts"),
        "the crash landed inside the transaction:\n{}",
        capture.logs()
    );
    let at_hq: u64 =
        p.hq.scalar("SELECT COUNT(*) FROM obs WHERE uuid LIKE 'b0000000-%'")
            .await?;
    assert_eq!(at_hq, ROWS);
    let rows_applied: u64 =
        p.hq.scalar("SELECT rows_applied FROM tributary_site_progress")
            .await?;
    assert_eq!(
        rows_applied - before,
        ROWS,
        "every row of the transaction applied exactly once"
    );
    let batches: u64 =
        p.hq.scalar("SELECT last_sequence FROM tributary_site_progress")
            .await?;
    // Parts are cut at rows-event boundaries once 20 rows are reached; one rows event holds up
    // to binlog_row_event_max_size (8 KiB here, about 90 of these obs).
    assert!(
        batches >= ROWS / 100,
        "the transaction travelled in parts ({batches} batches)"
    );
    let state = std::fs::read_to_string(p.work.join("state").join("capture-state.json"))?;
    assert!(
        state.contains("\"partial\": null"),
        "the transaction is complete: {state}"
    );
    p.verify()?;
    Ok(())
}
