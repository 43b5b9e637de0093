//! Resuming by binlog file/position (`[site] resume_by = "file_position"`, the mode of a MySQL
//! source without GTIDs), against the real MariaDB the suite starts.
//!
//! Guards invariants 1 and 2 for this mode: the checkpoint records the binlog file and the end
//! of the last whole transaction, and capture resumes exactly there after SIGKILL at any
//! point, also when the binlog rotated (`FLUSH BINARY LOGS`) while it ran or while it was
//! down, so HQ applies every row change exactly once. Then: the same checkpoint resumed by
//! GTID keeps the file/position up to date (the secondary key), and a checkpoint whose binlog
//! file was purged (`PURGE BINARY LOGS`) is refused with the file and the remedy. A new site
//! seeded from a consistent snapshot streams by file/position from exactly the snapshot.

use anyhow::{Context, Result};
use mysql_async::prelude::*;
use std::collections::BTreeSet;
use std::time::Duration;
use tributary::dataset::{self, PatientShape};
use tributary_suite::MariaDb;
use tributary_suite::pipeline::{
    CLINIC, Pipeline, PipelineOptions, applied_sequence, run_ok, wait_for_progress,
};

const PHASES: u64 = 4;
const PATIENTS_PER_PHASE: u64 = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_resumes_by_file_position_exactly_across_kills_and_rotations() -> Result<()> {
    let p = Pipeline::start(
        "filepos",
        PipelineOptions {
            max_batch_rows: 40,
            ..PipelineOptions::default()
        },
    )
    .await?;
    set_resume_by(&p, "file_position")?;
    let (mut capture, mut apply) = p.start_streaming().await?;

    // A new capture state resuming by file/position starts at the server's current position
    // (no transaction was written since; MariaDB may have added a binlog checkpoint event).
    let start = checkpoint_binlog(&p)?.context("a new state records its binlog")?;
    let (end_file, end) = master_status(&p.site)
        .await?
        .context("SHOW MASTER STATUS")?;
    assert_eq!(start.0, end_file);
    assert!(
        (last_commit_end(&p.site).await?.1..=end).contains(&start.1),
        "{start:?}"
    );

    let shape = PatientShape::default();
    let mut site = p.site.conn().await?;
    for phase in 0..PHASES {
        // The site keeps registering patients while capture is killed and restarted.
        let first = phase * PATIENTS_PER_PHASE;
        let writer = p.spawn_patient_load(first, PATIENTS_PER_PHASE, shape);
        let applied_before = applied_sequence(&p.hq).await?;
        wait_for_progress(&p.hq, applied_before, &mut [&mut capture, &mut apply]).await?;
        if phase % 2 == 1 {
            p.site.exec("FLUSH BINARY LOGS").await?; // a rotation while capture reads
        }
        capture.kill9()?;
        if phase >= 1 {
            p.site.exec("FLUSH BINARY LOGS").await?; // ... and while it is down
        }
        capture = p.spawn("capture", "capture")?;
        writer.await??;
    }
    let live =
        dataset::live_changes(&mut site, "clinic-a", PHASES * PATIENTS_PER_PHASE, shape).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    // Once more with the checkpoint in the newest file (after the rotations above), which
    // rotates away while capture is down.
    capture.kill9()?;
    p.site.exec("FLUSH BINARY LOGS").await?;
    capture = p.spawn("capture", "capture")?;
    let mut extra = PHASES * PATIENTS_PER_PHASE;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", extra, 1, shape).await?;
    extra += 1;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    p.verify()?;

    // Nothing applied twice, nothing skipped: HQ counted exactly one application of every row
    // change (a transaction read again after a resume would count its rows again).
    let changes = (PHASES * PATIENTS_PER_PHASE + 1) * shape.rows_per_patient() + live.rows;
    assert_eq!(
        rows_applied(&p.hq).await?,
        changes,
        "every row change applied exactly once"
    );

    // The checkpoint is the end of the last transaction, in the newest binlog.
    let files: Vec<(String, u64)> = site.query("SHOW BINARY LOGS").await?;
    assert!(files.len() >= 4, "the binlog rotated: {files:?}");
    assert_eq!(
        checkpoint_binlog(&p)?,
        Some(last_commit_end(&p.site).await?),
        "{}",
        capture.logs()
    );
    // Every session resumed by file/position, from more than one binlog file.
    let logs = plain(&capture.stderr());
    let resumed: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("streaming the binlog"))
        .collect();
    assert!(resumed.len() as u64 > PHASES + 1, "{logs}");
    assert!(
        resumed
            .iter()
            .all(|l| l.contains("resume_by=\"file_position\"")
                && l.contains("reason=\"configured\"")),
        "{logs}"
    );
    let resumed_in: BTreeSet<&str> = resumed
        .iter()
        .filter_map(|l| l.split("binlog=").nth(1))
        .filter_map(|b| b.split(':').next())
        .collect();
    assert!(resumed_in.len() >= 2, "resumed in {resumed_in:?}:\n{logs}");
    let status = p.status()?;
    let (file, offset) = checkpoint_binlog(&p)?.context("binlog position")?;
    assert!(
        status.contains(&format!("binlog file/position  {file}:{offset}"))
            && status.contains("resume_by = \"file_position\""),
        "{status}"
    );

    // The same checkpoint, resumed by GTID: the file/position stays the secondary key.
    capture.signal("TERM")?;
    assert!(capture.wait_exit(Duration::from_secs(30)).await?.success());
    set_resume_by(&p, "gtid")?;
    let mut capture = p.spawn("capture", "capture-gtid")?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", extra, 1, shape).await?;
    extra += 1;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    assert_eq!(
        checkpoint_binlog(&p)?,
        Some(last_commit_end(&p.site).await?)
    );
    assert!(
        plain(&capture.stderr()).contains("resume_by=\"gtid\""),
        "{}",
        capture.logs()
    );
    p.verify()?;
    capture.signal("TERM")?;
    assert!(capture.wait_exit(Duration::from_secs(30)).await?.success());

    // While capture is down the site writes more and purges the binlog file the checkpoint
    // names. MariaDB keeps a binlog until InnoDB has checkpointed past it, so rotate and
    // purge until only the newest file is left.
    set_resume_by(&p, "file_position")?;
    let (checkpoint_file, _) = checkpoint_binlog(&p)?.context("binlog position")?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", extra, 1, shape).await?;
    p.site.purge_all_but_newest_binlog().await?;
    let mut capture = p.spawn("capture", "capture-after-purge")?;
    let status = capture.wait_exit(Duration::from_secs(60)).await?;
    assert!(
        !status.success(),
        "capture must not resume past a gap in the binlog"
    );
    let logs = capture.logs();
    for part in [
        "no longer has the binlog for binlog file/position".to_owned(),
        format!("binlog file {checkpoint_file} is not among the server's binary logs"),
        "tributary seed".to_owned(),
    ] {
        assert!(logs.contains(&part), "{part}:\n{logs}");
    }
    Ok(())
}

/// A new site seeded from a consistent snapshot: the checkpoint records the snapshot's binlog
/// file/position with its GTID position, and capture resuming by file/position streams from
/// exactly there: what the site wrote after the snapshot (across a rotation) reaches HQ once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_site_streams_by_file_position_from_the_snapshot() -> Result<()> {
    let p = Pipeline::start("filepos-seed", PipelineOptions::default()).await?;
    set_resume_by(&p, "file_position")?;
    let shape = PatientShape::default();
    let mut site = p.site.conn().await?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 0, 10, shape).await?;
    run_ok(p.run(&["seed"])?)?;
    let seeded = checkpoint_binlog(&p)?.context("the seed records the snapshot's binlog")?;
    let (file, end) = master_status(&p.site)
        .await?
        .context("SHOW MASTER STATUS")?;
    assert_eq!(seeded.0, file);
    assert!(
        (last_commit_end(&p.site).await?.1..=end).contains(&seeded.1),
        "{seeded:?}"
    );
    let mut apply = p.spawn("apply", "apply")?;
    p.wait_caught_up(&mut [&mut apply]).await?;
    let seeded_rows = rows_applied(&p.hq).await?;

    // Written after the snapshot and before capture first runs, across a rotation.
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 10, 5, shape).await?;
    p.site.exec("FLUSH BINARY LOGS").await?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 15, 5, shape).await?;
    let mut capture = p.spawn("capture", "capture")?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    p.verify()?;
    assert_eq!(
        rows_applied(&p.hq).await?,
        seeded_rows + 10 * shape.rows_per_patient(),
        "the rows written after the snapshot, each once"
    );
    let logs = plain(&capture.stderr());
    assert!(
        logs.contains(&format!("binlog={}:{}", seeded.0, seeded.1))
            && logs.contains("resume_by=\"file_position\""),
        "{logs}"
    );
    Ok(())
}

async fn rows_applied(hq: &MariaDb) -> Result<u64> {
    let rows: Option<u64> = hq
        .conn()
        .await?
        .query_first("SELECT rows_applied FROM tributary_site_progress")
        .await?;
    Ok(rows.unwrap_or(0))
}

/// Log text without its terminal colour sequences (`ESC [ ... m`), so fields read `name=value`.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// Sets `[site] resume_by` in the pipeline's configuration.
fn set_resume_by(p: &Pipeline, mode: &str) -> Result<()> {
    let text = std::fs::read_to_string(&p.config)?;
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("resume_by = "))
        .collect();
    let text =
        kept.join("\n")
            .replacen("[site]\n", &format!("[site]\nresume_by = \"{mode}\"\n"), 1);
    std::fs::write(&p.config, text + "\n")?;
    Ok(())
}

/// The checkpoint's binlog file/position, as capture wrote it.
fn checkpoint_binlog(p: &Pipeline) -> Result<Option<(String, u64)>> {
    let path = p.work.join("state").join("capture-state.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let binlog = &v["binlog_position"];
    Ok(binlog["file"]
        .as_str()
        .zip(binlog["offset"].as_u64())
        .map(|(f, o)| (f.to_owned(), o)))
}

/// The end of the last transaction in the site's newest binlog (its XID event's end; MariaDB
/// may write a binlog checkpoint event after it).
async fn last_commit_end(db: &MariaDb) -> Result<(String, u64)> {
    let (file, _) = master_status(db).await?.context("SHOW MASTER STATUS")?;
    let events: Vec<mysql_async::Row> = db
        .conn()
        .await?
        .query(format!("SHOW BINLOG EVENTS IN '{file}'"))
        .await?;
    let end = events
        .iter()
        .filter(|e| e.get::<String, _>(2).as_deref() == Some("Xid"))
        .filter_map(|e| e.get::<u64, _>(4))
        .next_back()
        .with_context(|| format!("no transaction in {file}"))?;
    Ok((file, end))
}

/// The site's current binlog file and position.
async fn master_status(db: &MariaDb) -> Result<Option<(String, u64)>> {
    let row: Option<mysql_async::Row> = db.conn().await?.query_first("SHOW MASTER STATUS").await?;
    Ok(row.and_then(|r| r.get::<String, _>(0).zip(r.get::<u64, _>(1))))
}
