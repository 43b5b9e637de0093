//! The links to the databases drop (the site's and HQ's servers crash and come back) while the
//! pipeline runs: capture and the applier reconnect with backoff and go on from their
//! checkpoints; nothing is lost or applied twice, and neither process needs a restart. A site
//! server that stops answering without closing the link is noticed by the missing heartbeats.

use anyhow::Result;
use std::time::Duration;
use tributary::dataset::{self, PatientShape};
use tributary_suite::pipeline::{CLINIC, Pipeline, PipelineOptions};
use tributary_suite::wait_until;

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
    let load = |first: u64, opts: mysql_async::Opts| async move {
        let mut conn = mysql_async::Conn::new(opts).await?;
        dataset::load_patients(&mut conn, CLINIC, "clinic-a", first, 10, shape).await?;
        anyhow::Ok(())
    };

    load(0, p.site.opts()).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    p.site.kill9_server()?;
    p.site.start_server()?;
    load(10, p.site.opts()).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;

    p.hq.kill9_server()?;
    load(20, p.site.opts()).await?;
    p.hq.start_server()?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;

    assert!(
        capture.is_running(),
        "capture reconnects by itself:\n{}",
        capture.logs()
    );
    assert!(
        apply.is_running(),
        "the applier reconnects by itself:\n{}",
        apply.logs()
    );
    p.verify()?;
    let rows_applied = p.rows_applied_at_hq().await?;
    assert_eq!(
        rows_applied,
        Some(30 * shape.rows_per_patient()),
        "each row change applied once"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_notices_a_site_server_that_stops_answering_and_resumes() -> Result<()> {
    let p = Pipeline::start("db-frozen", PipelineOptions::default()).await?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    let shape = PatientShape::default();
    let load = |first: u64, opts: mysql_async::Opts| async move {
        let mut conn = mysql_async::Conn::new(opts).await?;
        dataset::load_patients(&mut conn, CLINIC, "clinic-a", first, 5, shape).await?;
        anyhow::Ok(())
    };
    load(0, p.site.opts()).await?;
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

    load(5, p.site.opts()).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    assert!(
        capture.is_running(),
        "capture reconnects by itself:\n{}",
        capture.logs()
    );
    p.verify()?;
    let rows_applied = p.rows_applied_at_hq().await?;
    assert_eq!(
        rows_applied,
        Some(10 * shape.rows_per_patient()),
        "each row change applied once"
    );
    Ok(())
}
