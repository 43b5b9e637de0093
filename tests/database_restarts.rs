//! The links to the databases drop (the site's and HQ's servers crash and come back) while the
//! pipeline runs: capture and the applier reconnect with backoff and go on from their
//! checkpoints; nothing is lost or applied twice, and neither process needs a restart. A site
//! server that stops answering without closing the link is noticed by the missing heartbeats.

use anyhow::Result;
use std::time::Duration;
use tributary::dataset::{self, PatientShape};
use tributary_suite::pipeline::{CLINIC, Pipeline, PipelineOptions};
use tributary_suite::{ChildGuard, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_and_apply_survive_crashes_of_the_site_and_hq_servers() -> Result<()> {
    let mut p = Pipeline::start(
        "db-restarts",
        PipelineOptions {
            max_batch_rows: 50,
            ..PipelineOptions::default()
        },
    )
    .await?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    let shape = PatientShape::default();

    load(&p, 0, 10).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    p.site.kill9_server()?;
    p.site.start_server()?;
    load(&p, 10, 10).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;

    p.hq.kill9_server()?;
    load(&p, 20, 10).await?;
    p.hq.start_server()?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;

    assert!(
        apply.is_running(),
        "the applier reconnects by itself:\n{}",
        apply.logs()
    );
    everything_arrived_once(&p, &mut capture, 30 * shape.rows_per_patient()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_notices_a_site_server_that_stops_answering_and_resumes() -> Result<()> {
    let p = Pipeline::start("db-frozen", PipelineOptions::default()).await?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    let shape = PatientShape::default();
    load(&p, 0, 5).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;

    // The link stays open and silent: no event, not even a heartbeat.
    p.site.freeze_server()?;
    let noticed = {
        let capture = &capture;
        wait_until(
            "capture to take the silent stream for dead",
            Duration::from_secs(90),
            move || async move { Ok(capture.logs().contains("no binlog event for")) },
        )
        .await
    };
    p.site.thaw_server()?;
    noticed?;

    load(&p, 5, 5).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    everything_arrived_once(&p, &mut capture, 10 * shape.rows_per_patient()).await
}

/// Registers `count` patients (with visits, encounters and obs) at the site, from number `first`.
async fn load(p: &Pipeline, first: u64, count: u64) -> Result<()> {
    let mut conn = mysql_async::Conn::new(p.site.opts()).await?;
    dataset::load_patients(
        &mut conn,
        CLINIC,
        "clinic-a",
        first,
        count,
        PatientShape::default(),
    )
    .await?;
    Ok(())
}

/// After the outages: capture runs still (it reconnected by itself), HQ verifies identical to
/// the site, and HQ counted each of the site's `changes` row changes exactly once.
async fn everything_arrived_once(
    p: &Pipeline,
    capture: &mut ChildGuard,
    changes: u64,
) -> Result<()> {
    assert!(
        capture.is_running(),
        "capture reconnects by itself:\n{}",
        capture.logs()
    );
    p.verify()?;
    assert_eq!(
        p.rows_applied_at_hq().await?,
        Some(changes),
        "each row change applied once"
    );
    Ok(())
}
