//! Apply throughput: an OLTP-shaped stream (patient registrations with visits, encounters and
//! obs, then clinical edits: name corrections, amended and voided obs, voided encounters,
//! deleted identifiers) is captured at a site into sealed batches, then applied into HQ by the
//! real applier; side by side, a MariaDB replica of the site (its own replication, one SQL
//! thread, default settings) applies the same binlog in the same run.
//!
//! `cargo bench --bench apply` (release build). `TRIBUTARY_BENCH_ROWS` sets the size (default
//! 200,000 row changes). It starts its own site, HQ and replica MariaDB instances and removes
//! them at the end. It prints rows/s for both and the ratio, the CPU seconds of the applier and
//! of both servers, and HQ's floor: HQ's end state loaded by `mariadb-dump | mariadb` into a
//! fourth, empty server, the least work any SQL writer of those rows makes a server do, and
//! from it the best ratio to the replica this machine's cores allow. It asserts nothing about
//! time.
//!
//! HQ and the replica run with MariaDB's default durability (`innodb_flush_log_at_trx_commit=1`,
//! doublewrite on: every commit is on disk when it returns), the reference DESIGN.md quotes.
//! `TRIBUTARY_BENCH_DURABILITY=relaxed` runs both with the test instances' settings instead
//! (`innodb_flush_log_at_trx_commit=2`, no doublewrite: a commit reaches the OS, not the disk).

use anyhow::{Context, Result};
use mysql_async::prelude::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tributary::dataset::{self, PatientShape};
use tributary_apply::{
    Applier, ApplySettings, DEFAULT_PARKED_REPORT_AGE, DEFAULT_POLL_INTERVAL,
    DEFAULT_RESOLVER_CACHE_ENTRIES, DEFAULT_RETRY_PARKED_INTERVAL,
};
use tributary_capture::{StartPosition, StateDir};
use tributary_suite::{MariaDb, Role};

/// The same allocator as the `tributary` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLINIC: &str = "Bench Clinic";
const SITE_ID: &str = "bench-site";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    tributary::allocator::configure();
    let target_rows = tributary_suite::bench_rows(200_000);
    let shape = PatientShape {
        visits: 2,
        encounters_per_visit: 2,
        obs_per_encounter: 6,
    };
    let patients = target_rows.div_ceil(shape.rows_per_patient()).max(4);
    let durability = Durability::from_env()?;
    let (site, hq, replica, floor) = tokio::try_join!(
        start(Role::Site, "bench-apply-site", Durability::Relaxed),
        start(Role::Hq, "bench-apply-hq", durability),
        // The same fixtures as the site, so the replica starts where the site's binlog does.
        start(Role::Site, "bench-apply-replica", durability),
        start(Role::Hq, "bench-apply-floor", durability),
    )?;

    eprintln!("loading about {target_rows} row changes at the site...");
    let mut conn = site.conn().await?;
    dataset::load_metadata(&mut conn, CLINIC).await?;
    let mut loaded = 0;
    // Registrations in chunks, each followed by clinical edits of the chunk's patients.
    const CHUNK: u64 = 50;
    let mut first = 0;
    while first < patients {
        let count = CHUNK.min(patients - first);
        let prefix = format!("bench-{first}");
        loaded += dataset::load_patients(&mut conn, CLINIC, &prefix, 0, count, shape).await?;
        loaded += dataset::live_changes(&mut conn, &prefix, count, shape)
            .await?
            .rows;
        first += count;
    }
    let position: String = site.scalar("SELECT @@gtid_binlog_pos").await?;
    eprintln!("loaded {loaded} row changes; capturing them into batches...");

    let work = site.dir().join("bench");
    std::fs::create_dir_all(&work)?;
    let key = tributary_batch::SiteKey::generate(SITE_ID)?;
    let key_file = work.join(key.file_name());
    key.write_new(&key_file)?;
    capture(&site, &work, &key_file, &position).await?;

    // Our applier: every batch into HQ.
    let mut keyring = tributary_batch::Keyring::new();
    keyring.insert(key)?;
    let settings = ApplySettings {
        hq: hq.opts(),
        database: hq.database().to_owned(),
        inbox_dir: work.join("batches"),
        keyring,
        policy: tributary_schema::Policy::openmrs_core(),
        poll_interval: DEFAULT_POLL_INTERVAL,
        resolver_cache_entries: DEFAULT_RESOLVER_CACHE_ENTRIES,
        retry_parked_interval: DEFAULT_RETRY_PARKED_INTERVAL,
        parked_report_age: DEFAULT_PARKED_REPORT_AGE,
        conflicts: tributary_apply::ConflictPolicies::default(),
        refresh: None,
        record_applied: false,
    };
    let mut applier = Applier::connect(settings).await?;
    let statements_before = hq.statements_run().await?;
    eprintln!("applying the batches into HQ...");
    let hq_cpu_before = tributary_suite::cpu_seconds(hq.pid());
    let applier_cpu_before = tributary_suite::cpu_seconds(std::process::id());
    let started = Instant::now();
    let (mut batches, mut rows, mut parked) = (0, 0, 0);
    loop {
        let pass = applier.apply_available().await?;
        if pass.batches_applied == 0 {
            anyhow::ensure!(pass.rejected == 0, "{} batches rejected", pass.rejected);
            break;
        }
        batches += pass.batches_applied;
        rows += pass.rows.applied;
        parked += pass.rows.parked;
    }
    let apply_secs = started.elapsed().as_secs_f64();
    let hq_cpu = tributary_suite::cpu_seconds(hq.pid()) - hq_cpu_before;
    let applier_cpu = tributary_suite::cpu_seconds(std::process::id()) - applier_cpu_before;
    let statements = hq.statements_run().await?.saturating_sub(statements_before);
    let conflicts: u64 = hq.scalar("SELECT COUNT(*) FROM tributary_conflict").await?;

    // MariaDB's own replica: the same binlog, from its start.
    eprintln!("applied in {apply_secs:.2} s; replicating the same binlog...");
    let replica_cpu_before = tributary_suite::cpu_seconds(replica.pid());
    let started = Instant::now();
    replicate(&site, &replica, &position).await?;
    let replica_secs = started.elapsed().as_secs_f64();
    let replica_cpu = tributary_suite::cpu_seconds(replica.pid()) - replica_cpu_before;

    // The floor: HQ's end state written the cheapest way SQL offers, into an empty server.
    eprintln!(
        "replicated in {replica_secs:.2} s; loading HQ's end state into an empty server with mariadb-dump | mariadb..."
    );
    let floor_cpu_before = tributary_suite::cpu_seconds(floor.pid());
    let started = Instant::now();
    load_end_state(&hq, &floor).await?;
    let floor_secs = started.elapsed().as_secs_f64();
    let floor_cpu = tributary_suite::cpu_seconds(floor.pid()) - floor_cpu_before;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    println!(
        "apply benchmark: {loaded} row changes at the site ({patients} patients); HQ and replica: {}",
        durability.describe()
    );
    println!(
        "  tributary apply         {apply_secs:>7.2} s  {:>8.0} rows/s  ({batches} batches, {rows} rows applied, {parked} parked, {conflicts} conflicts)",
        rows as f64 / apply_secs
    );
    println!(
        "  HQ statements            {statements} ({:.2} per row change)",
        statements as f64 / rows.max(1) as f64
    );
    println!(
        "  mariadb replica         {replica_secs:>7.2} s  {:>8.0} rows/s  (one SQL thread, a commit per source transaction, same binlog)",
        loaded as f64 / replica_secs
    );
    println!(
        "  CPU s: applier {applier_cpu:.1}, HQ's mariadbd {hq_cpu:.1}; replica's mariadbd {replica_cpu:.1}"
    );
    println!(
        "  ratio (tributary / replica): {:.2}x",
        (rows as f64 / apply_secs) / (loaded as f64 / replica_secs)
    );
    println!(
        "  HQ's floor              {floor_secs:>7.2} s  (HQ's end state loaded by mariadb-dump | mariadb into an empty server: {floor_cpu:.1} CPU s of its mariadbd)"
    );
    // A batch is one HQ transaction on one connection, so one server thread does its inserts.
    let floor_one_thread = floor_cpu.max(f64::EPSILON);
    let floor_all_cores = (floor_cpu / cores as f64).max(f64::EPSILON);
    println!(
        "  best possible ratio with nothing but those inserts to do: {:.2}x on one server thread (one transaction per batch), {:.2}x spread over all {cores} cores",
        replica_secs / floor_one_thread,
        replica_secs / floor_all_cores
    );
    Ok(())
}

/// How HQ and the replica make commits durable; both always run the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// MariaDB's defaults: a commit is on disk when it returns.
    ServerDefault,
    /// The test instances' settings: a commit reaches the OS, flushed about once a second.
    Relaxed,
}

impl Durability {
    fn from_env() -> Result<Durability> {
        match std::env::var("TRIBUTARY_BENCH_DURABILITY").as_deref() {
            Err(_) | Ok("" | "default") => Ok(Durability::ServerDefault),
            Ok("relaxed") => Ok(Durability::Relaxed),
            Ok(other) => anyhow::bail!(
                "TRIBUTARY_BENCH_DURABILITY={other}: use `default` (MariaDB's durable commits) or `relaxed`"
            ),
        }
    }

    /// The mariadbd options over the test instances' own.
    fn server_args(self) -> &'static [&'static str] {
        match self {
            Durability::ServerDefault => &[
                "--innodb-flush-log-at-trx-commit=1",
                "--innodb-doublewrite=1",
            ],
            Durability::Relaxed => &[],
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Durability::ServerDefault => {
                "MariaDB's default durability (innodb_flush_log_at_trx_commit=1, doublewrite)"
            }
            Durability::Relaxed => "relaxed durability (innodb_flush_log_at_trx_commit=2)",
        }
    }
}

async fn start(role: Role, name: &'static str, durability: Durability) -> Result<MariaDb> {
    tokio::task::spawn_blocking(move || {
        MariaDb::start_with_args(role, name, durability.server_args())
    })
    .await?
}

/// Loads HQ's synced tables (everything but the applier's own `tributary_*` tables) into
/// `floor`'s database with `mariadb-dump | mariadb`, replacing its tables.
async fn load_end_state(hq: &MariaDb, floor: &MariaDb) -> Result<()> {
    let mut conn = hq.conn().await?;
    let tables: Vec<String> = conn
        .query(
            "SELECT table_name FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name NOT LIKE 'tributary\\_%'",
        )
        .await?;
    let mut dump = hq.client_command("mariadb-dump");
    dump.args(["--single-transaction", "--quick", hq.database()])
        .args(&tables)
        .stdout(std::process::Stdio::piped());
    let mut load = floor.client_command("mariadb");
    load.arg(floor.database());
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut dump = dump.spawn().context("starting mariadb-dump")?;
        let pipe = dump.stdout.take().context("mariadb-dump's output")?;
        let loaded = load
            .stdin(pipe)
            .status()
            .context("running mariadb (load)")?;
        let dumped = dump.wait()?;
        anyhow::ensure!(
            dumped.success() && loaded.success(),
            "mariadb-dump | mariadb of HQ's end state failed ({dumped}, {loaded})"
        );
        Ok(())
    })
    .await?
}

/// Captures the site's binlog up to `position` into sealed batch files under `work`.
async fn capture(
    site: &MariaDb,
    work: &std::path::Path,
    key_file: &std::path::Path,
    position: &str,
) -> Result<()> {
    let settings = site.capture_settings(
        SITE_ID,
        0x5452_fffe,
        work.join("state"),
        work.join("batches"),
        PathBuf::from(key_file),
        StartPosition::Oldest,
    );
    let state_dir = settings.state_dir.clone();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(tributary_capture::run_capture(settings, shutdown.clone()));
    loop {
        if task.is_finished() {
            task.await??;
            anyhow::bail!("capture stopped before reaching the end of the binlog");
        }
        if StateDir::peek(&state_dir)?.is_some_and(|c| c.gtid_position == position) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    task.await??;
    Ok(())
}

/// Makes `replica` a replica of `site` from the start of its binlog and waits until it has
/// applied everything up to `position`.
async fn replicate(site: &MariaDb, replica: &MariaDb, position: &str) -> Result<()> {
    let mut conn = replica.conn().await?;
    conn.query_drop("SET GLOBAL gtid_slave_pos = ''").await?;
    // CHANGE MASTER takes no placeholders: literals, quoted.
    let literal = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"));
    conn.query_drop(format!(
        "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, MASTER_USER = {}, \
         MASTER_PASSWORD = {}, MASTER_USE_GTID = slave_pos",
        site.port(),
        literal(site.user()),
        literal(site.password())
    ))
    .await
    .context("CHANGE MASTER TO on the replica")?;
    conn.query_drop("START SLAVE").await?;
    loop {
        let applied: String = replica.scalar("SELECT @@gtid_slave_pos").await?;
        if applied == position {
            break;
        }
        let status: Vec<mysql_async::Row> = conn.query("SHOW SLAVE STATUS").await?;
        if let Some(row) = status.first() {
            let error: Option<String> = row.get("Last_SQL_Error");
            if let Some(error) = error.filter(|e| !e.is_empty()) {
                anyhow::bail!("the replica stopped: {error}");
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    conn.query_drop("STOP SLAVE").await?;
    Ok(())
}
