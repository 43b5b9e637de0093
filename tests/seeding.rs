//! Seeding a site that already holds data, while the clinic keeps working: a seed SIGKILLed
//! mid-table goes on from its last durable chunk when run again, the stream then starts at the
//! first snapshot, and HQ ends identical to the site, with nothing lost, nothing applied twice,
//! nothing parked and no conflict. A second site seeds into an HQ that already holds the
//! first one's data, and a site whose batches were lost is seeded again without duplicates.

use anyhow::{Context, Result, ensure};
use mysql_async::prelude::*;
use std::time::Duration;
use tributary::dataset::{self, PatientShape};
use tributary_capture::StateDir;
use tributary_suite::pipeline::{
    CLINIC, Pipeline, PipelineOptions, batch_files, run_ok, wait_site_applied,
};
use tributary_suite::{MariaDb, Role, scrape, wait_metrics_address, wait_until};

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

    let mut seed = p.spawn_with_args(
        "seed",
        &p.config,
        "seed-killed",
        &["--metrics-listen", "127.0.0.1:0"],
    )?;
    let metrics = wait_metrics_address(&seed).await?;
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
    // Its progress is on its metrics endpoint too: at least what is durable, of all planned.
    let progress = scrape(metrics)?;
    ensure!(
        progress.require("tributary_seed_rows", &[])? >= killed_after as f64,
        "{}",
        progress.text()
    );
    ensure!(
        progress.require("tributary_seed_rows_estimated", &[])?
            >= progress.require("tributary_seed_rows", &[])?
    );
    let planned = progress.require("tributary_seed_tables", &[("state", "planned")])?;
    let done = progress.require("tributary_seed_tables", &[("state", "done")])?;
    ensure!(planned > 10.0 && done < planned, "{done} of {planned}");
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

    let (parked, conflicts) = p.parked_and_conflicts().await?;
    ensure!(
        (parked, conflicts) == (0, 0),
        "nothing parks, and replaying the changes made between the snapshots over rows that \
         already hold them is not a conflict:\n{}",
        p.status()?
    );
    p.verify()?;
    // Every synced table, by identity and row hash (exit 3 on any difference).
    run_ok(p.run(&["verify", "--site", "clinic-a"])?)?;
    Ok(())
}

/// A second site joins an HQ that already holds the first site's data: the shared metadata
/// (same uuids) and a patient seen at both clinics are matched, not duplicated, and neither
/// site's data is disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_site_seeds_into_an_hq_holding_the_first_sites_data() -> Result<()> {
    let p = Pipeline::start("seeding-second-site", PipelineOptions::default()).await?;
    let shape = PatientShape::default();
    let mut site_a = p.site.conn().await?;
    dataset::load_patients(&mut site_a, CLINIC, "clinic-a", 0, 40, shape).await?;
    run_ok(p.run(&["seed"])?)?;
    let mut apply = p.spawn("apply", "apply")?;
    wait_site_applied(&p.site, &p.hq, &p.site_id, &p.work.join("state"))
        .await
        .map_err(|e| e.context(apply.logs()))?;

    // Site B: the same dictionary, its own patients, and patient 3 of site A, who transferred
    // (the same rows, same uuids).
    let site_b =
        tokio::task::spawn_blocking(|| MariaDb::start(Role::Site, "seeding-site-b")).await??;
    let mut conn_b = site_b.conn().await?;
    dataset::load_metadata(&mut conn_b, CLINIC).await?;
    dataset::load_patients(&mut conn_b, CLINIC, "clinic-b", 0, 30, shape).await?;
    dataset::load_patients(&mut conn_b, CLINIC, "clinic-a", 3, 1, shape).await?;
    let (config_b, state_b) = p.add_site("clinic-b", &site_b)?;
    // The applier learns a new site's key at start.
    apply.signal("TERM")?;
    apply.wait_exit(Duration::from_secs(30)).await?;
    let apply = p.spawn("apply", "apply-two-sites")?;
    run_ok(p.run_with(&config_b, &["seed"])?)?;
    wait_site_applied(&site_b, &p.hq, "clinic-b", &p.work.join(state_b))
        .await
        .map_err(|e| e.context(apply.logs()))?;

    let (parked, conflicts) = p.parked_and_conflicts().await?;
    ensure!(
        (parked, conflicts) == (0, 0),
        "nothing parks, and the same rows from two sites agree:\n{}",
        p.status()?
    );
    let mut hq = p.hq.conn().await?;
    let transferred = dataset::patient_rows("clinic-a", 3, shape).person;
    let copies: Option<u64> = hq
        .exec_first(
            "SELECT COUNT(*) FROM person WHERE uuid = ?",
            (&transferred,),
        )
        .await?;
    ensure!(
        copies == Some(1),
        "the transferred patient is one person at HQ"
    );
    run_ok(p.run(&["verify", "--site", "clinic-a"])?)?;
    run_ok(p.run_with(&config_b, &["verify", "--site", "clinic-b"])?)?;
    Ok(())
}

/// A site whose batches were lost before HQ had them (a spool disk that died, a carried file
/// never delivered): HQ holds the site at the gap and says so; `seed --restart-stream` sends
/// everything again in a new epoch, and HQ ends identical to the site with nothing duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_whose_batches_were_lost_is_seeded_again_without_duplicates() -> Result<()> {
    let p = Pipeline::start("seeding-lost-spool", PipelineOptions::default()).await?;
    let shape = PatientShape::default();
    let mut site = p.site.conn().await?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 0, 3, shape).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    drop(apply);

    // Batches published while HQ was away are lost; later ones arrive after the gap.
    let transport = p.work.join("batches");
    let before_loss = batch_files(&transport, &p.site_id)?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 3, 2, shape).await?;
    p.wait_capture_published("state", &capture).await?;
    let lost: Vec<_> = batch_files(&transport, &p.site_id)?
        .into_iter()
        .filter(|f| !before_loss.contains(f))
        .collect();
    ensure!(!lost.is_empty(), "the new patients were published");
    for file in &lost {
        std::fs::remove_file(file)?;
    }
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 5, 1, shape).await?;
    p.wait_capture_published("state", &capture).await?;
    let mut apply = p.spawn("apply", "apply-at-the-gap")?;
    wait_until("HQ to report the gap", Duration::from_secs(60), || async {
        Ok(p.status()?.contains("held: waiting for batch"))
    })
    .await?;

    // The remedy: the whole site again from a new snapshot, in a new epoch.
    capture.signal("TERM")?;
    ensure!(capture.wait_exit(Duration::from_secs(30)).await?.success());
    let out = run_ok(p.run(&["seed", "--restart-stream"])?)?;
    assert!(
        out.contains("the site's stream starts at this snapshot"),
        "{out}"
    );
    let mut capture = p.spawn("capture", "capture-after-reseed")?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 6, 1, shape).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;

    run_ok(p.run(&["verify", "--site", "clinic-a"])?)?;
    // Rows HQ had before the loss were matched by identity: a copy would have met HQ's unique
    // uuid and parked.
    let (parked, conflicts) = p.parked_and_conflicts().await?;
    assert_eq!((parked, conflicts), (0, 0), "{}", p.status()?);
    // What was left of the old epoch is kept aside as stale, visibly, not applied.
    let stale_sql = "SELECT reason FROM tributary_rejected_batch WHERE reason_code = 'stale_epoch'";
    wait_until(
        "the superseded batch to be recorded",
        Duration::from_secs(30),
        || async {
            let stale: Vec<String> = p.hq.conn().await?.query(stale_sql).await?;
            Ok(!stale.is_empty())
        },
    )
    .await?;
    let stale: Vec<String> = p.hq.conn().await?.query(stale_sql).await?;
    assert!(
        stale[0].contains("re-seeded into a later epoch"),
        "{stale:?}"
    );
    Ok(())
}

/// A capture whose state directory was lost starts a new epoch from the site's current
/// position, without a seed: HQ applies it (the clinic's later work must not wait), but says
/// in `status`, until the site is seeded again, that what changed at the site in between may
/// be missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_capture_state_is_flagged_at_hq_until_the_site_is_seeded_again() -> Result<()> {
    let p = Pipeline::start("seeding-lost-state", PipelineOptions::default()).await?;
    let shape = PatientShape::default();
    let mut site = p.site.conn().await?;
    let (mut capture, mut apply) = p.start_streaming().await?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 0, 2, shape).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let flag = "began without a seed";
    assert!(!p.status()?.contains(flag));

    // The state directory is lost while the clinic keeps working.
    capture.signal("TERM")?;
    ensure!(capture.wait_exit(Duration::from_secs(30)).await?.success());
    std::fs::remove_dir_all(p.work.join("state"))?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 2, 1, shape).await?;
    // A new epoch is the Unix second a state is created: a later one than HQ's.
    let epoch: Option<u64> =
        p.hq.conn()
            .await?
            .query_first("SELECT epoch FROM tributary_site_progress")
            .await?;
    wait_until(
        "the clock to pass HQ's epoch",
        Duration::from_secs(5),
        || async {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
            Ok(Some(now.as_secs()) > epoch)
        },
    )
    .await?;
    let mut capture = p.spawn("capture", "capture-without-state")?;
    p.wait_capture_started("state", &capture).await?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 3, 1, shape).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let status = p.status()?;
    assert!(status.contains(flag), "{status}");
    assert!(
        status.contains("tributary seed --restart-stream"),
        "{status}"
    );
    // The same for scripts: one JSON object with both parts of the configuration.
    let json: serde_json::Value =
        serde_json::from_str(&run_ok(p.run(&["status", "--json"])?)?).context("status --json")?;
    let at_hq = &json["hq"]["sites"][0];
    assert_eq!(at_hq["site_id"], "clinic-a", "{json}");
    assert_eq!(
        at_hq["unseeded_after_epoch"],
        serde_json::json!(epoch),
        "{json}"
    );
    assert_eq!(
        at_hq["epoch"], json["site"]["checkpoint"]["epoch"],
        "{json}"
    );
    assert!(json["site"]["checkpoint"].get("seed").is_none(), "{json}");

    // The remedy clears it, and HQ holds everything again.
    capture.signal("TERM")?;
    ensure!(capture.wait_exit(Duration::from_secs(30)).await?.success());
    run_ok(p.run(&["seed", "--restart-stream"])?)?;
    let mut capture = p.spawn("capture", "capture-after-reseed")?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let status = p.status()?;
    assert!(!status.contains(flag), "{status}");
    run_ok(p.run(&["verify", "--site", "clinic-a"])?)?;
    Ok(())
}
