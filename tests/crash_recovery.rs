//! Crash safety (invariants 1 and 2): capture and the applier are killed with SIGKILL while
//! the site keeps working, and restarted. Afterwards HQ holds every site row exactly once.

use anyhow::Result;
use mysql_async::prelude::*;
use tributary::dataset::{self, PatientShape};
use tributary_suite::pipeline::{Pipeline, PipelineOptions, applied_sequence, wait_for_progress};

const PHASES: u64 = 4;
const PATIENTS_PER_PHASE: u64 = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_capture_and_applier_mid_stream_loses_and_doubles_nothing() -> Result<()> {
    let p = Pipeline::start(
        "crash",
        PipelineOptions {
            max_batch_rows: 40,
            ..PipelineOptions::default()
        },
    )
    .await?;
    let (mut capture, mut apply) = p.start_streaming().await?;

    let shape = PatientShape::default();
    let mut site = p.site.conn().await?;
    for phase in 0..PHASES {
        // The site keeps registering patients while the pipeline is being killed.
        let first = phase * PATIENTS_PER_PHASE;
        let writer = p.spawn_patient_load(first, PATIENTS_PER_PHASE, shape);
        let applied_before = applied_sequence(&p.hq).await?;
        wait_for_progress(&p.hq, applied_before, &mut [&mut capture, &mut apply]).await?;
        if phase % 2 == 0 {
            capture.kill9()?;
            capture = p.spawn("capture", "capture")?;
        } else {
            apply.kill9()?;
            apply = p.spawn("apply", "apply")?;
        }
        writer.await??;
    }
    let live =
        dataset::live_changes(&mut site, "clinic-a", PHASES * PATIENTS_PER_PHASE, shape).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    p.verify()?;
    assert_eq!(p.dangling_references_at_hq().await?, 0);

    // Nothing applied twice: HQ counted exactly one application of every row change the site
    // made (a batch applied again after a crash would count its rows again).
    let rows_applied = p.rows_applied_at_hq().await?;
    let changes = PHASES * PATIENTS_PER_PHASE * shape.rows_per_patient() + live.rows;
    assert_eq!(
        rows_applied,
        Some(changes),
        "every row change applied exactly once"
    );

    // Nothing doubled: HQ holds exactly the site's rows plus its own.
    let mut hq = p.hq.conn().await?;
    for table in ["person", "encounter", "obs"] {
        let site_rows: Option<u64> = site
            .query_first(format!("SELECT COUNT(*) FROM {table}"))
            .await?;
        let hq_rows: Option<u64> = hq
            .query_first(format!("SELECT COUNT(*) FROM {table}"))
            .await?;
        // HQ's own rows: 3 patients with 2 visits x 2 encounters x 6 obs. The admin person
        // exists at both and is not counted twice.
        let hq_only = match table {
            "person" => 3,
            "encounter" => 3 * 4,
            _ => 3 * 4 * 6,
        };
        assert_eq!(
            hq_rows.unwrap_or(0),
            site_rows.unwrap_or(0) + hq_only,
            "{table}: HQ must hold each site row exactly once"
        );
    }
    Ok(())
}
