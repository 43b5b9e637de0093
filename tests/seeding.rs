//! Seeding a site that already holds data, while the clinic keeps working: a seed SIGKILLed
//! mid-table goes on from its last durable chunk when run again, the stream then starts at the
//! first snapshot, and HQ ends identical to the site, with nothing lost, nothing applied twice,
//! nothing parked and no conflict.

use anyhow::{Context, Result, ensure};
use mysql_async::prelude::*;
use std::time::Duration;
use tributary::dataset::{self, PatientShape};
use tributary_capture::StateDir;
use tributary_suite::pipeline::{CLINIC, Pipeline, PipelineOptions, run_ok};
use tributary_suite::wait_until;

const PATIENTS: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_seed_goes_on_from_its_last_chunk_and_misses_no_concurrent_write() -> Result<()> {
    let p = Pipeline::start(
        "seeding-resume",
        PipelineOptions {
            max_batch_rows: 300,
            ..PipelineOptions::default()
        },
    )
    .await?;
    // Small chunks: many durable steps to be killed between.
    let config = std::fs::read_to_string(&p.config)?;
    std::fs::write(
        &p.config,
        config.replacen("[site]\n", "[site]\nseed_chunk_rows = 100\n", 1),
    )?;
    let shape = PatientShape::default();
    let mut site = p.site.conn().await?;
    let loaded = dataset::load_patients(&mut site, CLINIC, "clinic-a", 0, PATIENTS, shape).await?;

    // The clinic keeps registering patients and editing records while the seed runs.
    let registrations = p.spawn_patient_load(PATIENTS, 60, shape);
    let edits = {
        let opts = p.site.opts();
        tokio::spawn(async move {
            let mut conn = mysql_async::Conn::new(opts).await?;
            anyhow::Ok(
                dataset::live_changes(&mut conn, "clinic-a", 40, shape)
                    .await?
                    .rows,
            )
        })
    };

    let mut seed = p.spawn("seed", "seed-killed")?;
    let state = p.work.join("state");
    let killed_after = loaded / 3;
    wait_until(
        "the seed to make a third of the site's rows durable",
        Duration::from_secs(120),
        || {
            let progress = StateDir::peek(&state)
                .ok()
                .flatten()
                .and_then(|c| c.seed)
                .map_or(0, |s| s.rows);
            async move { Ok(progress >= killed_after) }
        },
    )
    .await
    .map_err(|e| e.context(seed.logs()))?;
    seed.signal("KILL")?;
    seed.wait_exit(Duration::from_secs(30)).await?;
    let interrupted = StateDir::peek(&state)?.context("the checkpoint survives the kill")?;
    let progress = interrupted
        .seed
        .context("the killed seed recorded how far it got")?;
    ensure!(
        interrupted.seeding,
        "capture must not start from an unfinished first seed"
    );
    ensure!(
        progress.rows < loaded,
        "the seed was killed before it finished ({} of {loaded} rows): enlarge the data set",
        progress.rows
    );

    // Capture refuses to start on the unfinished seed and names the remedy.
    let refused = p.run(&["capture"])?;
    ensure!(!refused.status.success());
    ensure!(String::from_utf8_lossy(&refused.stderr).contains("run 'tributary seed' again"));

    let out = run_ok(p.run(&["seed"])?)?;
    ensure!(
        out.contains(&format!(
            "went on with an interrupted seed: {} rows had been sent before",
            progress.rows
        )),
        "{out}"
    );
    let sent_again: u64 = out
        .split("seeded ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("rows seeded in: {out}"))?;
    ensure!(
        sent_again < loaded,
        "the second run sends only what the first had not made durable ({sent_again} of {loaded}):\n{out}"
    );
    let state_after = StateDir::peek(&state)?.context("checkpoint")?;
    ensure!(state_after.seed.is_none() && !state_after.seeding);
    ensure!(
        state_after.gtid_position == interrupted.gtid_position,
        "the stream starts at the first snapshot, so changes made between the two are replayed"
    );

    registrations.await??;
    edits.await??;
    // Edits of seeded rows of an inherited table (whose states were recorded in bulk by their
    // key): each must find its own state at HQ, or it would be taken for a conflict.
    site.query_drop(
        "UPDATE patient SET allergy_status = 'No known allergies' ORDER BY patient_id DESC LIMIT 25",
    )
    .await?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;

    let mut hq = p.hq.conn().await?;
    let parked: Option<u64> = hq
        .query_first("SELECT COUNT(*) FROM tributary_parked_row")
        .await?;
    ensure!(parked == Some(0), "nothing parks:\n{}", p.status()?);
    let conflicts: Option<u64> = hq
        .query_first("SELECT COUNT(*) FROM tributary_conflict")
        .await?;
    ensure!(
        conflicts == Some(0),
        "replaying the changes made between the snapshots over rows that already hold them is \
         not a conflict:\n{}",
        p.status()?
    );
    p.verify()?;
    // Every synced table, by identity and row hash (exit 3 on any difference).
    run_ok(p.run(&["verify", "--site", "clinic-a"])?)?;
    Ok(())
}
