//! Exactly once under crashes of the applier (invariant 2): while the site registers patients,
//! corrects names, amends and voids obs, voids encounters and deletes identifiers, the HQ
//! applier is killed with SIGKILL at 20 random moments (mid-batch, between batches, while it
//! starts) and restarted each time. Afterwards HQ verifies equal to the site, every row change
//! was applied exactly once, and no reference dangles.
//!
//! The kill moments come from a seed printed at the start; `TRIBUTARY_KILL_SEED=<n>` replays a
//! run.

use anyhow::Result;
use mysql_async::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tributary::dataset::{self, PatientShape};
use tributary_suite::pipeline::{CLINIC, Pipeline, PipelineOptions, applied_sequence};

const KILLS: u32 = 20;
/// The site works at least this many rounds, and on until the last kill.
const MIN_ROUNDS: u64 = 4;
const PATIENTS_PER_ROUND: u64 = 4;
const ROUND_PACE: Duration = Duration::from_millis(100);

/// A small deterministic generator for the kill moments.
struct KillClock(u64);

impl KillClock {
    fn from_env_or_time() -> KillClock {
        let seed = tributary_suite::seed_from_env_or_time("TRIBUTARY_KILL_SEED");
        eprintln!("applier kill moments: TRIBUTARY_KILL_SEED={seed}");
        KillClock(seed | 1)
    }

    /// The next pause before a kill: 50 to 1,250 ms after the last restart.
    fn next_pause(&mut self) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(50 + self.0 % 1_200)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_applier_kills_during_mixed_work_apply_everything_exactly_once() -> Result<()> {
    let p = Pipeline::start(
        "applier-kills",
        PipelineOptions {
            max_batch_rows: 30,
            ..PipelineOptions::default()
        },
    )
    .await?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    let shape = PatientShape::default();

    // The site's work: each round registers patients, then edits, voids and deletes among
    // them, in their own transactions; it goes on until the killing is over.
    let killing_done = Arc::new(AtomicBool::new(false));
    let work = {
        let opts = p.site.opts();
        let killing_done = Arc::clone(&killing_done);
        tokio::spawn(async move {
            let mut conn = mysql_async::Conn::new(opts).await?;
            let mut rows = 0;
            let mut round = 0;
            while round < MIN_ROUNDS || !killing_done.load(Ordering::SeqCst) {
                let prefix = format!("kill-round-{round}");
                rows += dataset::load_patients(
                    &mut conn,
                    CLINIC,
                    &prefix,
                    0,
                    PATIENTS_PER_ROUND,
                    shape,
                )
                .await?;
                rows += dataset::live_changes(&mut conn, &prefix, PATIENTS_PER_ROUND, shape)
                    .await?
                    .rows;
                round += 1;
                // A clinic's pace, not a load test: the applier keeps up between kills.
                tokio::time::sleep(ROUND_PACE).await;
            }
            anyhow::Ok((rows, round))
        })
    };

    let mut clock = KillClock::from_env_or_time();
    // Kills that found the applier had applied something since its restart: it was at work.
    let mut while_applying = 0;
    let mut applied_at_restart = applied_sequence(&p.hq).await?;
    for _ in 0..KILLS {
        tokio::time::sleep(clock.next_pause()).await;
        apply.kill9()?;
        let applied = applied_sequence(&p.hq).await?;
        if applied > applied_at_restart {
            while_applying += 1;
        }
        applied_at_restart = applied;
        apply = p.spawn("apply", "apply")?;
    }
    killing_done.store(true, Ordering::SeqCst);
    let (rows, rounds) = work.await??;
    eprintln!(
        "{KILLS} applier kills ({while_applying} after it had applied batches since its restart) \
         during {rounds} rounds of site work ({rows} row changes)"
    );
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    p.verify()?;
    assert_eq!(p.dangling_references_at_hq().await?, 0);
    let rows_applied = p.rows_applied_at_hq().await?;
    assert_eq!(
        rows_applied,
        Some(rows),
        "every row change applied exactly once across {KILLS} kills"
    );
    // Row states commit with the rows: a kill never leaves one behind that would make the
    // site's next edit look like a conflict.
    let conflicts: Option<u64> =
        p.hq.conn()
            .await?
            .query_first("SELECT COUNT(*) FROM tributary_conflict")
            .await?;
    assert_eq!(conflicts, Some(0), "no conflict across {KILLS} kills");
    Ok(())
}
