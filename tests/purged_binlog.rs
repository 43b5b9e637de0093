//! A checkpoint whose binlog the site has purged is detected when capture starts: capture
//! stops with a message naming the position and the remedy (re-seed), instead of skipping
//! the missing changes. The remedy works: `seed --restart-stream` sends everything again in a
//! new epoch, HQ takes it without duplicating a row, and streaming goes on.

use anyhow::Result;
use mysql_async::prelude::*;
use std::time::Duration;
use tributary::dataset::{self, PatientShape};
use tributary_suite::pipeline::{CLINIC, Pipeline, PipelineOptions, run_ok};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_refuses_to_resume_from_a_purged_position_and_names_the_remedy() -> Result<()> {
    let p = Pipeline::start("purged-binlog", PipelineOptions::default()).await?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    let shape = PatientShape::one_encounter(1);
    let mut site = p.site.conn().await?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 0, 1, shape).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    capture.signal("TERM")?;
    assert!(capture.wait_exit(Duration::from_secs(30)).await?.success());

    // While capture is down the site writes more and purges the binlog that held it.
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 1, 1, shape).await?;
    // MariaDB keeps a binlog until InnoDB has checkpointed past it, so rotate and purge until
    // only the newest file is left.
    p.site.purge_all_but_newest_binlog().await?;

    let mut capture = p.spawn("capture", "capture-after-purge")?;
    let status = capture.wait_exit(Duration::from_secs(60)).await?;
    assert!(
        !status.success(),
        "capture must not resume past a gap in the binlog"
    );
    let logs = capture.logs();
    assert!(logs.contains("no longer has the binlog"), "{logs}");
    assert!(
        logs.contains("tributary seed --restart-stream"),
        "the remedy is named: {logs}"
    );

    // The remedy: everything again from a new snapshot, in a new epoch.
    let out = run_ok(p.run(&["seed", "--restart-stream"])?)?;
    assert!(
        out.contains("the site's stream starts at this snapshot (epoch"),
        "{out}"
    );
    let mut capture = p.spawn("capture", "capture-after-reseed")?;
    // The site goes on working after the re-seed.
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 2, 1, shape).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    p.verify()?;
    run_ok(p.run(&["verify", "--site", "clinic-a"])?)?;
    // Rows sent twice (before the purge and by the re-seed) were matched by identity: a copy
    // would have met HQ's unique uuid and parked.
    let mut hq = p.hq.conn().await?;
    let parked: Option<u64> = hq
        .query_first("SELECT COUNT(*) FROM tributary_parked_row")
        .await?;
    assert_eq!(parked, Some(0), "{}", p.status()?);
    Ok(())
}
