//! The fleet: how HQ's applier copes with the number of sites (issue 9). The same clinical work
//! (patients with visits, encounters and obs, loaded at a real site database and captured once)
//! is sent as 1, 10 and 50 site streams, each with its own id and key, interleaved in HQ's
//! inbox (directory transport), and applied into a fresh HQ each time by the real applier.
//! Prints, per number of sites: rows/s, HQ statements per row and the process's peak memory.
//!
//! `cargo bench --bench fleet` (release build). `TRIBUTARY_BENCH_ROWS` (default 40,000 row
//! changes) and `TRIBUTARY_BENCH_SITE_COUNTS` (default `1,10,50`). Asserts nothing.

use anyhow::{Context, Result, ensure};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tributary::dataset::{self, PatientShape};
use tributary_apply::{
    Applier, ApplySettings, DEFAULT_PARKED_REPORT_AGE, DEFAULT_POLL_INTERVAL,
    DEFAULT_RESOLVER_CACHE_ENTRIES, DEFAULT_RETRY_PARKED_INTERVAL,
};
use tributary_batch::{BatchHeader, Keyring, SiteKey};
use tributary_capture::{StartPosition, StateDir};
use tributary_model::{BatchPayload, SourceTransaction};
use tributary_suite::{MariaDb, Role};
use tributary_transport::DirectoryOutbox;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLINIC: &str = "Fleet Clinic";
const PREFIX: &str = "fleet-bench";
const EPOCH: u64 = 1_000;
/// Source transactions per batch (one patient each): batches of about 300 rows.
const TRANSACTIONS_PER_BATCH: usize = 9;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    tributary::allocator::configure();
    let shape = PatientShape::default();
    let patients = tributary_suite::bench_rows(40_000).div_ceil(shape.rows_per_patient());
    let counts: Vec<usize> = std::env::var("TRIBUTARY_BENCH_SITE_COUNTS")
        .unwrap_or_else(|_| "1,10,50".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .filter(|&n| n > 0)
        .collect();

    let site = start(Role::Site, "bench-fleet-site").await?;
    let mut conn = site.conn().await?;
    dataset::load_metadata(&mut conn, CLINIC).await?;
    let from: String = site.scalar("SELECT @@gtid_binlog_pos").await?;
    eprintln!("loading {patients} patients at the site...");
    dataset::load_patients(&mut conn, CLINIC, PREFIX, 0, patients, shape).await?;
    let to: String = site.scalar("SELECT @@gtid_binlog_pos").await?;
    let work = site.dir().join("bench-fleet");
    std::fs::create_dir_all(&work)?;
    eprintln!("capturing them once...");
    let transactions = capture(&site, &work, &from, &to).await?;
    let rows: u64 = transactions.iter().map(|t| t.rows.len() as u64).sum();
    let mut owner: HashMap<String, u64> = HashMap::new();
    for n in 0..patients {
        owner.insert(dataset::patient_rows(PREFIX, n, shape).person, n);
    }

    println!("fleet benchmark: {rows} row changes ({patients} patients) sent as N site streams");
    println!(
        "  sites  batches    seconds     rows/s  HQ statements/row  peak RSS (process, so far)"
    );
    for count in counts {
        let hq = start(Role::Hq, "bench-fleet-hq").await?;
        dataset::load_metadata(&mut hq.conn().await?, CLINIC).await?;
        let inbox = work.join(format!("inbox-{count}"));
        let keyring = write_streams(&inbox, &transactions, &owner, count)?;
        let batches = count_batches(&inbox)?;
        let mut applier = Applier::connect(settings(&hq, &inbox, keyring)).await?;
        let statements_before = hq.statements_run().await?;
        let started = Instant::now();
        let mut applied = 0;
        loop {
            let pass = applier.apply_available().await?;
            ensure!(pass.rejected == 0, "{} batches rejected", pass.rejected);
            if pass.batches_applied == 0 {
                break;
            }
            applied += pass.rows.applied;
        }
        let seconds = started.elapsed().as_secs_f64();
        let statements = hq.statements_run().await?.saturating_sub(statements_before);
        ensure!(
            applied == rows,
            "{applied} of {rows} rows applied with {count} sites"
        );
        println!(
            "  {count:>5}  {batches:>7}  {seconds:>9.2}  {:>9.0}  {:>17.2}  {} MiB",
            rows as f64 / seconds,
            statements as f64 / rows as f64,
            tributary_suite::peak_rss_kib(None).unwrap_or(0) / 1024
        );
        drop(applier);
        drop(hq);
    }
    Ok(())
}

async fn start(role: Role, name: &'static str) -> Result<MariaDb> {
    tokio::task::spawn_blocking(move || MariaDb::start(role, name)).await?
}

fn settings(hq: &MariaDb, inbox: &Path, keyring: Keyring) -> ApplySettings {
    ApplySettings {
        hq: hq.opts(),
        database: hq.database().to_owned(),
        inbox_dir: inbox.to_owned(),
        keyring,
        policy: tributary_schema::Policy::openmrs_core(),
        poll_interval: DEFAULT_POLL_INTERVAL,
        resolver_cache_entries: DEFAULT_RESOLVER_CACHE_ENTRIES,
        retry_parked_interval: DEFAULT_RETRY_PARKED_INTERVAL,
        parked_report_age: DEFAULT_PARKED_REPORT_AGE,
        conflicts: tributary_apply::ConflictPolicies::default(),
        refresh: None,
        record_applied: false,
    }
}

/// Captures the site's binlog from `from` to `to` and returns its source transactions.
async fn capture(
    site: &MariaDb,
    work: &Path,
    from: &str,
    to: &str,
) -> Result<Vec<SourceTransaction>> {
    let key = SiteKey::generate("bench-capture")?;
    let key_file = work.join(key.file_name());
    key.write_new(&key_file)?;
    let state_dir = work.join("state");
    // The checkpoint starts where the patients' load began.
    StateDir::open(&state_dir)?.save(&tributary_capture::Checkpoint::new(
        "bench-capture",
        from.to_owned(),
    ))?;
    let settings = site.capture_settings(
        "bench-capture",
        0x5452_fffd,
        state_dir.clone(),
        work.join("captured"),
        key_file,
        StartPosition::Current,
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(tributary_capture::run_capture(settings, shutdown.clone()));
    loop {
        if task.is_finished() {
            task.await??;
            anyhow::bail!("capture stopped before reaching the end of the load");
        }
        if StateDir::peek(&state_dir)?.is_some_and(|c| c.gtid_position == to) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    task.await??;
    let mut keyring = Keyring::new();
    keyring.insert(SiteKey::load(&work.join(key.file_name()))?)?;
    let dir = work.join("captured").join("bench-capture");
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "batch"));
    files.sort();
    let mut transactions = Vec::new();
    for file in files {
        let (_, json) = tributary_batch::open(&std::fs::read(&file)?, &keyring)?;
        let payload: BatchPayload = serde_json::from_slice(&json)?;
        transactions.extend(
            payload
                .transactions
                .into_iter()
                .filter(|t| !t.rows.is_empty()),
        );
    }
    Ok(transactions)
}

/// Writes the transactions as `count` site streams (patient n to site n % count) into
/// `inbox`, sealed with one key per site; returns HQ's keyring for them.
fn write_streams(
    inbox: &Path,
    transactions: &[SourceTransaction],
    owner: &HashMap<String, u64>,
    count: usize,
) -> Result<Keyring> {
    let mut streams: Vec<Vec<SourceTransaction>> = vec![Vec::new(); count];
    for transaction in transactions {
        let patient = transaction
            .rows
            .iter()
            .find(|r| r.table == "person")
            .and_then(|r| owner.get(r.identity.as_str()))
            .context("a patient's transaction")?;
        streams[(*patient % count as u64) as usize].push(transaction.clone());
    }
    let mut keyring = Keyring::new();
    for (index, stream) in streams.into_iter().enumerate() {
        let site = format!("fleet-{index:02}");
        let key = SiteKey::generate(&site)?;
        let outbox = DirectoryOutbox::open(inbox, &site)?;
        for (sequence, chunk) in stream.chunks(TRANSACTIONS_PER_BATCH).enumerate() {
            let payload = BatchPayload {
                transactions: chunk.to_vec(),
                ..BatchPayload::default()
            };
            let header = BatchHeader::new(
                &site,
                key.key_id(),
                EPOCH,
                sequence as u64 + 1,
                u32::try_from(payload.row_count())?,
            );
            let sealed = tributary_batch::seal(&header, &serde_json::to_vec(&payload)?, &key)?;
            let staged = outbox.stage(EPOCH, sequence as u64 + 1, &sealed)?;
            outbox.commit(&staged)?;
        }
        keyring.insert(key)?;
    }
    Ok(keyring)
}

fn count_batches(inbox: &Path) -> Result<usize> {
    let mut batches = 0;
    for site in std::fs::read_dir(inbox)? {
        batches += std::fs::read_dir(site?.path())?.count();
    }
    Ok(batches)
}
