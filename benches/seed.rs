//! Seeding throughput: a large OpenMRS-shaped site database (obs-heavy, the ratios of
//! FACTS.md section 8, see `bulk_dataset`) moved into HQ by `tributary seed` at the site and
//! the applier at HQ, running as two processes at once over the directory transport, every
//! reference translated to HQ's ids; side by side, `mariadb-dump | mariadb` moves the same
//! database into an empty server in the same run.
//!
//! `cargo bench --bench seed` (release build). `TRIBUTARY_BENCH_ROWS` sets the size (default
//! 2,000,000 rows); `TRIBUTARY_BENCH_SEED_CHUNK` the seed's chunk (default: the config's
//! default); `TRIBUTARY_BENCH_HQ_LOG=/path` turns on HQ's general query log there (to count
//! statements by kind). It starts its own site, HQ and reference MariaDB instances and removes them at the
//! end; it prints rows/s, peak RSS and CPU seconds of every process and the ratio, the best
//! ratio the dump target's own CPU time allows (the floor under any SQL writer of the rows),
//! and asserts nothing about time.
//!
//! The seed and the applier run as children of this bench (the same binary, started again with
//! `TRIBUTARY_BENCH_CHILD`), each reading the configuration file an operator would write.

use anyhow::{Context, Result, bail, ensure};
use mysql_async::prelude::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tributary::bulk_dataset::{self, ROWS_PER_PATIENT};
use tributary::config::Config;
use tributary::dataset;
use tributary_suite::pipeline::{PipelineOptions, write_config};
use tributary_suite::{MariaDb, Role};

/// The same allocator as the `tributary` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLINIC: &str = "Bench Clinic";
const SITE_ID: &str = "bench-seed";
const CHILD: &str = "TRIBUTARY_BENCH_CHILD";
const CONFIG: &str = "TRIBUTARY_BENCH_CONFIG";
/// Written by the seed child once every batch is durable.
const SEED_DONE: &str = "seed-done";

fn main() -> Result<()> {
    tributary::allocator::configure();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match std::env::var(CHILD).ok().as_deref() {
        Some("seed") => runtime.block_on(seed_child()),
        Some("apply") => runtime.block_on(apply_child()),
        _ => runtime.block_on(bench()),
    }
}

async fn bench() -> Result<()> {
    let target_rows = tributary_suite::bench_rows(2_000_000);
    let patients = target_rows.div_ceil(ROWS_PER_PATIENT).max(1);
    let (site, hq, reference) = tokio::try_join!(
        start(Role::Site, "bench-seed-site"),
        start(Role::Hq, "bench-seed-hq"),
        start(Role::Hq, "bench-seed-dump-target"),
    )?;

    eprintln!("loading {patients} patients (about {target_rows} rows) at the site...");
    let mut conn = site.conn().await?;
    dataset::load_metadata(&mut conn, CLINIC).await?;
    // HQ already holds the shared dictionary (same uuids): the seed matches it.
    dataset::load_metadata(&mut hq.conn().await?, CLINIC).await?;
    let started = Instant::now();
    let mut shown = Instant::now();
    bulk_dataset::load_bulk_clinic(&mut conn, CLINIC, patients, |rows| {
        if shown.elapsed() > Duration::from_secs(10) {
            shown = Instant::now();
            eprintln!("  {rows} rows loaded");
        }
    })
    .await?;
    let site_rows = rows_in(&site).await?;
    eprintln!(
        "loaded in {:.0} s: {site_rows} rows in the site database",
        started.elapsed().as_secs_f64()
    );

    // Tributary: seed at the site and the applier at HQ, at once.
    let work = site.dir().join("bench");
    std::fs::create_dir_all(work.join("keys"))?;
    let key = tributary_batch::SiteKey::generate(SITE_ID)?;
    let key_file = work.join("keys").join(key.file_name());
    key.write_new(&key_file)?;
    let config = work.join("tributary.toml");
    write_config(
        &config,
        SITE_ID,
        &site,
        &hq,
        &key_file,
        &work.join("batches"),
        &PipelineOptions::default(),
    )?;
    if let Ok(chunk) = std::env::var("TRIBUTARY_BENCH_SEED_CHUNK") {
        let text = std::fs::read_to_string(&config)?;
        std::fs::write(
            &config,
            text.replacen(
                "[site]\n",
                &format!("[site]\nseed_chunk_rows = {chunk}\n"),
                1,
            ),
        )?;
    }
    let servers = [&site, &hq, &reference];
    let cpu_before: Vec<f64> = servers
        .iter()
        .map(|s| tributary_suite::cpu_seconds(s.pid()))
        .collect();
    let statements_before = hq.statements_run().await?;
    if let Ok(log) = std::env::var("TRIBUTARY_BENCH_HQ_LOG") {
        let mut c = hq.conn().await?;
        c.query_drop(format!("SET GLOBAL general_log_file = '{log}'"))
            .await?;
        c.query_drop("SET GLOBAL general_log = 1").await?;
    }
    eprintln!("seeding into HQ...");
    let started = Instant::now();
    let seed = Watched::spawn("tributary seed", child(&config, "seed")?)?;
    let apply = Watched::spawn("tributary apply", child(&config, "apply")?)?;
    let [seed, apply] = watch_all([seed, apply]).await?;
    let seed_secs = seed.exited_after.as_secs_f64();
    let total_secs = started.elapsed().as_secs_f64();
    let cpu_ours: Vec<f64> = servers
        .iter()
        .zip(&cpu_before)
        .map(|(s, before)| tributary_suite::cpu_seconds(s.pid()) - before)
        .collect();
    let statements = hq.statements_run().await?.saturating_sub(statements_before);
    let seeded: u64 = field(&seed.stdout, "rows")?;
    let applied: u64 = field(&apply.stdout, "rows")?;
    let parked: u64 = field(&apply.stdout, "parked")?;
    ensure!(parked == 0, "{parked} rows parked during the seed");

    // The reference: mariadb-dump | mariadb into an empty server.
    eprintln!(
        "seeded in {total_secs:.1} s; moving the same database with mariadb-dump | mariadb..."
    );
    let cpu_before: Vec<f64> = servers
        .iter()
        .map(|s| tributary_suite::cpu_seconds(s.pid()))
        .collect();
    let started = Instant::now();
    let (dump, load) = dump_and_load(&site, &reference)?;
    let [dump, load] = watch_all([dump, load]).await?;
    let dump_secs = started.elapsed().as_secs_f64();
    let cpu_dump: Vec<f64> = servers
        .iter()
        .zip(&cpu_before)
        .map(|(s, before)| tributary_suite::cpu_seconds(s.pid()) - before)
        .collect();
    let moved = rows_in(&reference).await?;
    ensure!(
        moved == site_rows,
        "the dump moved {moved} rows of {site_rows}"
    );

    let ours = applied as f64 / total_secs;
    let theirs = site_rows as f64 / dump_secs;
    println!("seed benchmark: {site_rows} rows in the site database ({patients} patients)");
    println!(
        "  tributary seed + apply  {total_secs:>7.2} s  {ours:>8.0} rows/s  ({seeded} rows sealed in {seed_secs:.2} s, {applied} applied, {parked} parked; {:.2} HQ statements per row)",
        statements as f64 / applied.max(1) as f64
    );
    println!(
        "  mariadb-dump | mariadb  {dump_secs:>7.2} s  {theirs:>8.0} rows/s  (single transaction, extended inserts, into an empty server)"
    );
    println!("  ratio (tributary / dump and load): {:.2}x", ours / theirs);
    println!("  process                   peak RSS     CPU s");
    for w in [&seed, &apply, &dump, &load] {
        println!(
            "  {:<24} {:>6} MiB  {:>7.2}",
            w.name,
            w.peak_rss_kib / 1024,
            w.cpu_seconds
        );
    }
    println!(
        "  mariadbd CPU s (site / HQ / dump target): tributary {:.1} / {:.1} / {:.1}; dump and load {:.1} / {:.1} / {:.1}",
        cpu_ours[0], cpu_ours[1], cpu_ours[2], cpu_dump[0], cpu_dump[1], cpu_dump[2]
    );
    // The dump target's work is the least any SQL writer of these rows makes a server do; a
    // seed batch is one HQ transaction, and so one server thread.
    let floor = cpu_dump[2].max(f64::EPSILON);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "  best possible ratio with nothing but the dump target's inserts to do: {:.2}x on one server thread (one transaction per batch), {:.2}x spread over all {cores} cores",
        dump_secs / floor,
        dump_secs / (floor / cores as f64)
    );
    Ok(())
}

async fn start(role: Role, name: &'static str) -> Result<MariaDb> {
    tokio::task::spawn_blocking(move || MariaDb::start(role, name)).await?
}

/// This bench's binary started again as the seed or the applier.
fn child(config: &Path, role: &str) -> Result<Command> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .env(CHILD, role)
        .env(CONFIG, config)
        .stdout(Stdio::piped());
    Ok(command)
}

/// `mariadb-dump | mariadb`: the site's database into the reference server's (replacing its
/// tables), both clients started with the password in their environment.
fn dump_and_load(site: &MariaDb, reference: &MariaDb) -> Result<(Watched, Watched)> {
    let mut dump = site.client_command("mariadb-dump");
    dump.args(["--single-transaction", "--quick", site.database()])
        .stdout(Stdio::piped());
    let mut dump = dump.spawn().context("starting mariadb-dump")?;
    let pipe = dump.stdout.take().context("mariadb-dump's output")?;
    let mut load = reference.client_command("mariadb");
    load.arg(reference.database())
        .stdin(pipe)
        .stdout(Stdio::piped());
    let load = load.spawn().context("starting mariadb")?;
    Ok((
        Watched::new("mariadb-dump", dump),
        Watched::new("mariadb (load)", load),
    ))
}

/// A child process whose peak resident memory and CPU time are read from /proc while it runs.
struct Watched {
    name: &'static str,
    child: Child,
    started: Instant,
    peak_rss_kib: u64,
    cpu_seconds: f64,
    exited_after: Duration,
    stdout: String,
}

impl Watched {
    fn new(name: &'static str, child: Child) -> Watched {
        Watched {
            name,
            child,
            started: Instant::now(),
            peak_rss_kib: 0,
            cpu_seconds: 0.0,
            exited_after: Duration::ZERO,
            stdout: String::new(),
        }
    }

    fn spawn(name: &'static str, mut command: Command) -> Result<Watched> {
        Ok(Watched::new(name, command.spawn()?))
    }

    /// Samples the child; true once it has exited (successfully: a failure is an error).
    fn poll(&mut self) -> Result<bool> {
        let pid = self.child.id();
        if let Some(kib) = tributary_suite::peak_rss_kib(Some(pid)) {
            self.peak_rss_kib = self.peak_rss_kib.max(kib);
            let cpu = tributary_suite::cpu_seconds(pid);
            if cpu > 0.0 {
                self.cpu_seconds = cpu;
            }
        }
        match self.child.try_wait()? {
            None => Ok(false),
            Some(status) => {
                self.exited_after = self.started.elapsed();
                if let Some(mut out) = self.child.stdout.take() {
                    std::io::Read::read_to_string(&mut out, &mut self.stdout)?;
                }
                if !status.success() {
                    bail!("{} failed ({status}): {}", self.name, self.stdout);
                }
                Ok(true)
            }
        }
    }
}

/// Samples every child every 20 ms until all have exited.
async fn watch_all<const N: usize>(mut children: [Watched; N]) -> Result<[Watched; N]> {
    let mut done = [false; N];
    while !done.iter().all(|d| *d) {
        for (child, done) in children.iter_mut().zip(done.iter_mut()) {
            if !*done {
                *done = child.poll()?;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(children)
}

/// Rows in every base table of the instance's database (exact counts).
async fn rows_in(db: &MariaDb) -> Result<u64> {
    let mut conn = db.conn().await?;
    let tables: Vec<String> = conn
        .exec(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' AND TABLE_NAME NOT LIKE 'tributary\\_%'",
            (db.database(),),
        )
        .await?;
    let mut total = 0;
    for table in tables {
        let n: Option<u64> = conn
            .query_first(format!("SELECT COUNT(*) FROM `{table}`"))
            .await?;
        total += n.unwrap_or(0);
    }
    Ok(total)
}

/// `name=value` from a child's report line.
fn field(report: &str, name: &str) -> Result<u64> {
    report
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        .with_context(|| format!("no {name}= in the child's report: {report}"))
}

fn child_config() -> Result<Config> {
    let path = PathBuf::from(std::env::var_os(CONFIG).context(CONFIG)?);
    Config::load(&path)
}

fn done_marker(config: &Config) -> Result<PathBuf> {
    Ok(config.capture_settings()?.state_dir.join(SEED_DONE))
}

/// The seed child: `tributary seed` with every table.
async fn seed_child() -> Result<()> {
    let config = child_config()?;
    let settings = config.capture_settings()?;
    let report = tributary_capture::run_seed(
        &settings,
        &tributary_capture::SeedOptions::default(),
        |_| {},
    )
    .await?;
    std::fs::write(done_marker(&config)?, b"")?;
    println!("rows={} tables={}", report.rows, report.tables);
    Ok(())
}

/// The applier child: applies batches as they arrive until the seed is done and none is left.
async fn apply_child() -> Result<()> {
    let config = child_config()?;
    let marker = done_marker(&config)?;
    let mut applier = tributary_apply::Applier::connect(config.apply_settings()?).await?;
    let (mut rows, mut parked, mut batches) = (0, 0, 0);
    loop {
        let seed_done = marker.exists();
        let pass = applier.apply_available().await?;
        ensure!(pass.rejected == 0, "{} batches rejected", pass.rejected);
        rows += pass.rows.applied;
        parked += pass.rows.parked;
        batches += pass.batches_applied;
        if pass.batches_applied == 0 {
            if seed_done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    println!("rows={rows} parked={parked} batches={batches}");
    Ok(())
}
