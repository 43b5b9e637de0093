//! Sequence order (invariant 2): batches of one site placed into the inbox out of order are
//! applied in sequence order. A later batch waits while an earlier one is missing, the gap is
//! reported, duplicates are skipped, and no row is overwritten by an older change.

use anyhow::Result;
use mysql_async::prelude::*;
use std::time::Duration;
use tributary::dataset::{self, PatientShape, patient_rows};
use tributary_suite::pipeline::{CLINIC, Pipeline, PipelineOptions, batch_files, deliver, run_ok};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_batches_wait_for_the_gap_and_apply_in_sequence() -> Result<()> {
    let p = Pipeline::start("sequencing", PipelineOptions::default()).await?;
    let outgoing = p.work.join("outgoing");
    let inbox = p.work.join("inbox");
    // Capture publishes every transaction as its own batch into `outgoing`; the applier reads
    // `inbox`, where the test places batches by hand.
    let capture_config = p.config_with("capture.toml", &outgoing, &p.key_file, "state")?;
    let apply_config = p.config_with("apply.toml", &inbox, &p.key_file, "state")?;
    let mut capture = p.spawn_with("capture", &capture_config, "capture")?;
    p.wait_capture_started("state", &capture).await?;

    let shape = PatientShape::one_encounter(2);
    let mut site = p.site.conn().await?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 0, 1, shape).await?;
    let name = patient_rows("clinic-a", 0, shape).name;
    for version in 1..=6 {
        site.exec_drop(
            "UPDATE person_name SET given_name = ? WHERE uuid = ?",
            (format!("v{version}"), &name),
        )
        .await?;
    }
    p.wait_capture_published("state", &capture).await?;
    capture.signal("TERM")?;
    capture.wait_exit(Duration::from_secs(30)).await?;

    let batches = batch_files(&outgoing, "clinic-a")?;
    assert_eq!(
        batches.len(),
        7,
        "one batch for the patient, one per update: {batches:?}"
    );
    let name_of = |i: usize| {
        batches[i]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    // Everything but the first batch arrives, newest first.
    for i in (1..batches.len()).rev() {
        deliver(
            &std::fs::read(&batches[i])?,
            &inbox,
            "clinic-a",
            &name_of(i),
        )?;
    }
    let out = run_ok(p.run_with(&apply_config, &["apply", "--once"])?)?;
    assert!(out.contains("applied 0 batches"), "{out}");
    assert!(
        out.contains("waiting for batch 1"),
        "the gap is reported: {out}"
    );
    let status = run_ok(p.run_with(&apply_config, &["status"])?)?;
    assert!(status.contains("held: waiting for batch 1"), "{status}");
    let mut hq = p.hq.conn().await?;
    let present: Option<u64> = hq
        .exec_first("SELECT COUNT(*) FROM person_name WHERE uuid = ?", (&name,))
        .await?;
    assert_eq!(present, Some(0), "nothing may be applied past a gap");

    // The missing batch arrives, together with a duplicate of a later one.
    deliver(
        &std::fs::read(&batches[0])?,
        &inbox,
        "clinic-a",
        &name_of(0),
    )?;
    let out = run_ok(p.run_with(&apply_config, &["apply", "--once"])?)?;
    assert!(out.contains("applied 7 batches"), "{out}");
    deliver(
        &std::fs::read(&batches[3])?,
        &inbox,
        "clinic-a",
        &name_of(3),
    )?;
    let out = run_ok(p.run_with(&apply_config, &["apply", "--once"])?)?;
    assert!(
        out.contains("applied 0 batches") && out.contains("1 duplicates skipped"),
        "{out}"
    );

    let given: Option<String> = hq
        .exec_first(
            "SELECT given_name FROM person_name WHERE uuid = ?",
            (&name,),
        )
        .await?;
    assert_eq!(
        given.as_deref(),
        Some("v6"),
        "the newest change wins: batches applied in sequence order"
    );
    let status = run_ok(p.run_with(&apply_config, &["status"])?)?;
    assert!(
        status.contains("streaming") && !status.contains("held"),
        "{status}"
    );
    run_ok(p.run_with(&apply_config, &["verify"])?)?;
    Ok(())
}
