//! End-to-end latency through a real Kafka-protocol broker at a steady load: a site writes
//! small OpenMRS-shaped transactions at a fixed rate while `tributary capture`, `tributary
//! ship` and `tributary apply` (the release binary, three processes, the Kafka transport
//! through tansu) carry them to HQ; the bench measures, for every transaction, the time from
//! its commit at the site to the moment it is visible at HQ.
//!
//! `cargo bench --bench latency` (release build; the bench runs `cargo build --release -p
//! tributary` first, so the binary it measures is the current code, unless `TRIBUTARY_BIN`
//! points at one). `TRIBUTARY_BENCH_SECONDS` (default 30) is how long the load runs,
//! `TRIBUTARY_BENCH_RATE` (default 500) how many source transactions a second it writes.
//! It starts its own site and HQ MariaDB (`deploy/mariadb.sh`, through the suite's
//! [`Pipeline`]: the shared metadata at both, HQ with rows of its own so ids differ) and its
//! own tansu (`deploy/tansu.sh`, memory storage; the topic created by `tributary kafka init`),
//! and stops every process at the end, on error too (guards).
//!
//! How it measures:
//! - **Load.** Transactions alternate between a registration (person, name, patient,
//!   identifier: 4 rows) and an encounter of that patient with 3 obs (4 rows), each one source
//!   transaction as OpenMRS writes it. Transaction `i` is due at `start + i / rate` (a fixed
//!   schedule: a late transaction does not push the later ones back); [`CONNECTIONS`] site
//!   connections take the next pair of due transactions in turn, so one slow commit does not
//!   stall the schedule. The commit instant is taken when the site acknowledged `COMMIT`.
//! - **Arrival.** One HQ connection polls every [`POLL_INTERVAL`] for `person` and
//!   `encounter` rows above the highest id it has seen (the applier inserts them with HQ's own
//!   auto-increment ids, one transaction at a time, so ids grow in commit order) and notes the
//!   instant each poll returned. Latencies are therefore high by at most one poll spacing;
//!   the measured spacing is printed as the resolution.
//! - **Falling behind.** Latency per 5-second window and its linear trend over the run: a
//!   pipeline that keeps up has a flat trend; one that does not shows latency growing with the
//!   backlog, and the bench says so.
//! - **Resources.** Peak RSS (`VmHWM`) of capture, ship, apply, tansu and both `mariadbd`,
//!   and each one's CPU seconds (utime + stime) during the measured part (load and drain).
//!
//! Capture runs with the suite's settings (`flush_interval_ms = 50`; the default is 200),
//! the applier's consumer ticks every 50 ms, the shipper lists an empty spool every 200 ms.
//! Asserts nothing about time; fails only when transactions never arrive.

use anyhow::{Context, Result, bail};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, TxOpts};
use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tributary::dataset::{ADMIN_USER, demo_uuid};
use tributary_suite::pipeline::{CLINIC, Pipeline, PipelineOptions, run_ok};
use tributary_suite::{ChildGuard, MariaDb, Tansu, peak_rss_kib, target_dir, tributary_bin};

/// The same allocator as the `tributary` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TOPIC: &str = "tributary.batches";
/// Site connections writing the load (each takes the next due pair of transactions).
const CONNECTIONS: usize = 4;
/// How often HQ is asked for new rows.
const POLL_INTERVAL: Duration = Duration::from_millis(2);
/// Latency is summarised per window of this many seconds of the schedule.
const WINDOW_SECONDS: f64 = 5.0;
/// How long transactions may take to arrive after the load stopped before the bench gives up.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);
/// The OpenMRS ID identifier type (a standard OpenMRS uuid, in every schema fixture).
const OPENMRS_ID_TYPE: &str = "8d793bee-c2cc-11de-8d13-0010c6dffd0f";
/// Pairs numbered from here are the warm-up's, never the load's.
const WARM_UP_PAIR: u64 = 1 << 40;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<()> {
    tributary::allocator::configure();
    let seconds = env_or("TRIBUTARY_BENCH_SECONDS", 30).max(1);
    let rate = env_or("TRIBUTARY_BENCH_RATE", 500).max(2);
    let binary = release_binary()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(bench(binary, seconds, rate))
}

/// Builds the release binary (a no-op when it is current) unless `TRIBUTARY_BIN` names one,
/// and checks it is the one the suite's harness will start.
fn release_binary() -> Result<std::path::PathBuf> {
    if std::env::var_os("TRIBUTARY_BIN").is_none_or(|p| p.is_empty()) {
        eprintln!("building the release tributary binary...");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        // Without the variables `cargo bench` sets for this package: build scripts that
        // watch them (ring's watches CARGO_PKG_NAME) would otherwise rebuild every time.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_MANIFEST_")
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "OUT_DIR",
                ]
                .contains(&name.as_ref())
            {
                build.env_remove(name.as_ref());
            }
        }
        let status = build
            .args([
                "build",
                "--release",
                "-p",
                "tributary",
                "--bin",
                "tributary",
            ])
            .current_dir(tributary_suite::repo_root())
            .status()
            .context("running cargo build --release -p tributary")?;
        anyhow::ensure!(status.success(), "cargo build --release failed: {status}");
        let built = target_dir().join("release").join("tributary");
        let used = tributary_bin();
        anyhow::ensure!(
            used.canonicalize()? == built.canonicalize()?,
            "the harness would start {} rather than the release build {}: set TRIBUTARY_BIN",
            used.display(),
            built.display()
        );
    }
    Ok(tributary_bin())
}

async fn bench(binary: std::path::PathBuf, seconds: u64, rate: u64) -> Result<()> {
    eprintln!("starting the site and HQ MariaDB and tansu...");
    let p = Pipeline::start("bench-latency", PipelineOptions::default()).await?;
    let tansu = Tansu::start("bench-latency", None)?;
    p.use_kafka(&format!("127.0.0.1:{}", tansu.port()), TOPIC, 4)?;
    run_ok(p.run(&["kafka", "init"])?).context(tansu.log_tail())?;

    // Declared after the servers, so they are dropped (killed) before them on any error.
    let mut capture = p.spawn("capture", "capture")?;
    let mut ship = p.spawn("ship", "ship")?;
    let mut apply = p.spawn("apply", "apply")?;
    let logs = |children: &[&ChildGuard]| -> String {
        let mut all: Vec<String> = children.iter().map(|c| c.logs()).collect();
        all.push(tansu.log_tail());
        all.join("\n")
    };
    p.wait_capture_started("state", &capture).await?;
    let ids = Arc::new(SiteIds::load(&mut p.site.conn().await?).await?);

    // Warm-up: one pair through the whole path (the consumer's first group join is slow).
    let mut watch = HqWatch::open(&p.hq).await?;
    let warm_up = Instant::now();
    let mut conn = p.site.conn().await?;
    write_pair(&mut conn, &ids, WARM_UP_PAIR, None).await?;
    let mut seen = 0;
    while seen < 2 {
        if warm_up.elapsed() > DRAIN_LIMIT {
            bail!(
                "the warm-up transactions did not reach HQ in {DRAIN_LIMIT:?}\n{}",
                logs(&[&capture, &ship, &apply])
            );
        }
        seen += watch.poll().await?.len();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(conn);
    eprintln!(
        "pipeline flowing (warm-up pair at HQ after {:.2} s); writing {rate} transactions/s for {seconds} s...",
        warm_up.elapsed().as_secs_f64()
    );

    let processes = [
        Process::new("tributary capture", capture.id()),
        Process::new("tributary ship", ship.id()),
        Process::new("tributary apply", apply.id()),
        Process::new("tansu", tansu_pid(&tansu)?),
        Process::new("mariadbd (site)", p.site.pid()),
        Process::new("mariadbd (HQ)", p.hq.pid()),
        Process::new("this bench", std::process::id()),
    ];
    let cpu_before: Vec<f64> = processes
        .iter()
        .map(|w| tributary_suite::cpu_seconds(w.pid))
        .collect();
    let progress_before = hq_progress(&p.hq).await?;

    // The load and the watcher run at once.
    let total = rate * seconds;
    let period = 1.0 / rate as f64;
    let start = Instant::now() + Duration::from_millis(50);
    let next_pair = Arc::new(AtomicU64::new(0));
    let arrived = Arc::new(AtomicU64::new(0));
    let stop_watching = CancellationToken::new();
    let watcher = tokio::spawn({
        let (arrived, stop) = (arrived.clone(), stop_watching.clone());
        async move { watch.run(arrived, stop).await }
    });
    let writers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (opts, ids, next_pair) = (p.site.opts(), ids.clone(), next_pair.clone());
            tokio::spawn(async move {
                write_load(opts, &ids, &next_pair, total.div_ceil(2), start, period).await
            })
        })
        .collect();
    let mut sent = Vec::with_capacity(total as usize + 1);
    for writer in writers {
        sent.extend(writer.await??);
    }
    let load_done = Instant::now();
    let backlog_at_stop = (sent.len() as u64).saturating_sub(arrived.load(Ordering::Relaxed));
    // The drain: until everything written is visible at HQ (or the limit).
    while arrived.load(Ordering::Relaxed) < sent.len() as u64
        && load_done.elapsed() < DRAIN_LIMIT
        && !watcher.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drained_in = load_done.elapsed();
    stop_watching.cancel();
    let watched = watcher.await?.map_err(|e| e.context(logs(&[&apply])))?;
    let measured_s = start.elapsed().as_secs_f64();
    let cpu: Vec<f64> = processes
        .iter()
        .zip(&cpu_before)
        .map(|(w, before)| tributary_suite::cpu_seconds(w.pid) - before)
        .collect();
    let peaks: Vec<Option<u64>> = processes
        .iter()
        .map(|w| peak_rss_kib(Some(w.pid)))
        .collect();
    let progress_after = hq_progress(&p.hq).await?;
    let parked: Option<u64> =
        p.hq.conn()
            .await?
            .query_first("SELECT COUNT(*) FROM tributary_parked_row")
            .await?;

    let report = Report::new(&sent, &watched, start);
    println!(
        "latency benchmark: site commit -> visible at HQ, through tansu ({})",
        binary.display()
    );
    report.print_load(rate, seconds);
    println!(
        "  HQ applied {} batches with {} row changes during the run ({:.1} transactions per batch)",
        progress_after.0 - progress_before.0,
        progress_after.1 - progress_before.1,
        sent.len() as f64 / (progress_after.0 - progress_before.0).max(1) as f64
    );
    println!(
        "  when the load stopped {backlog_at_stop} transactions were not yet at HQ; the rest took {:.2} s to arrive; parked rows at HQ: {}",
        drained_in.as_secs_f64(),
        parked.unwrap_or(0)
    );
    watched.print_resolution();
    report.print_latency();
    report.print_trend(seconds as f64);
    println!(
        "  process              pid   peak RSS   CPU s during the run ({measured_s:.1} s: load and drain)"
    );
    for ((w, cpu), peak) in processes.iter().zip(&cpu).zip(&peaks) {
        let peak = peak.map_or("gone".to_owned(), |kib| format!("{} MiB", kib / 1024));
        println!(
            "  {:<18} {:>6}  {peak:>9}  {cpu:>6.2} ({:.0}% of a core)",
            w.name,
            w.pid,
            100.0 * cpu / measured_s
        );
    }

    // Stop gracefully, the way an operator would; the guards kill whatever does not.
    for child in [&mut capture, &mut ship, &mut apply] {
        child.signal("TERM")?;
        let status = child.wait_exit(Duration::from_secs(30)).await?;
        if !status.success() {
            eprintln!("{} exited with {status}\n{}", child.name(), child.logs());
        }
    }
    if report.missing > 0 {
        bail!(
            "{} of {} transactions did not reach HQ within {DRAIN_LIMIT:?} of the load's end",
            report.missing,
            sent.len()
        );
    }
    Ok(())
}

/// The site's ids of the metadata every transaction refers to.
struct SiteIds {
    admin: i64,
    location: i64,
    id_type: i64,
    encounter_type: i64,
    weight: i64,
    temperature: i64,
    diagnosis: i64,
    malaria: i64,
}

impl SiteIds {
    async fn load(conn: &mut Conn) -> Result<SiteIds> {
        async fn one(conn: &mut Conn, sql: &str, key: &str) -> Result<i64> {
            let id: Option<i64> = conn.exec_first(sql, (key,)).await?;
            id.with_context(|| format!("no row for {key} ({sql}): is the metadata loaded?"))
        }
        let concept = "SELECT concept_id FROM concept WHERE uuid = ?";
        Ok(SiteIds {
            admin: one(conn, "SELECT user_id FROM users WHERE uuid = ?", ADMIN_USER).await?,
            location: one(
                conn,
                "SELECT location_id FROM location WHERE name = ?",
                CLINIC,
            )
            .await?,
            id_type: one(
                conn,
                "SELECT patient_identifier_type_id FROM patient_identifier_type WHERE uuid = ?",
                OPENMRS_ID_TYPE,
            )
            .await?,
            encounter_type: one(
                conn,
                "SELECT encounter_type_id FROM encounter_type WHERE uuid = ?",
                &demo_uuid("encounter_type", 0),
            )
            .await?,
            // The demo dictionary's order (tributary::dataset): weight, height, temperature,
            // diagnosis, notes, malaria, ...
            weight: one(conn, concept, &demo_uuid("concept", 0)).await?,
            temperature: one(conn, concept, &demo_uuid("concept", 2)).await?,
            diagnosis: one(conn, concept, &demo_uuid("concept", 3)).await?,
            malaria: one(conn, concept, &demo_uuid("concept", 5)).await?,
        })
    }
}

/// One source transaction of the load.
struct Sent {
    /// The uuid of its `person` (a registration) or `encounter` row.
    uuid: String,
    due: Instant,
    began: Instant,
    committed: Instant,
}

/// Takes the next due pair of transactions until `pairs` have been taken; writes each at its
/// due instant (at once when late).
async fn write_load(
    opts: Opts,
    ids: &SiteIds,
    next_pair: &AtomicU64,
    pairs: u64,
    start: Instant,
    period: f64,
) -> Result<Vec<Sent>> {
    let mut conn = Conn::new(opts).await?;
    let mut sent = Vec::new();
    loop {
        let pair = next_pair.fetch_add(1, Ordering::Relaxed);
        if pair >= pairs {
            return Ok(sent);
        }
        let due = |i: u64| start + Duration::from_secs_f64(period * i as f64);
        write_pair(
            &mut conn,
            ids,
            pair,
            Some((due(2 * pair), due(2 * pair + 1), &mut sent)),
        )
        .await?;
    }
}

/// A registration then an encounter of that patient with three obs, two transactions on one
/// connection; with `schedule`, each waits for its due instant and is recorded.
async fn write_pair(
    conn: &mut Conn,
    ids: &SiteIds,
    n: u64,
    mut schedule: Option<(Instant, Instant, &mut Vec<Sent>)>,
) -> Result<()> {
    let uuid = |kind: &str, k: u64| demo_uuid(&format!("bench-latency/{kind}"), k);
    if let Some((due, _, _)) = &schedule {
        tokio::time::sleep_until(*due).await;
    }
    let began = Instant::now();
    let person_uuid = uuid("person", n);
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    tx.exec_drop(
        "INSERT INTO person (gender, birthdate, birthdate_estimated, dead, creator, date_created, voided, uuid, deathdate_estimated)
         VALUES (?, '1990-05-17', 0, 0, ?, NOW(), 0, ?, 0)",
        (if n.is_multiple_of(2) { "F" } else { "M" }, ids.admin, &person_uuid),
    )
    .await?;
    let person = tx.last_insert_id().context("person id")? as i64;
    tx.exec_drop(
        "INSERT INTO person_name (preferred, person_id, given_name, family_name, creator, date_created, voided, uuid)
         VALUES (1, ?, 'Amina', 'Okafor', ?, NOW(), 0, ?)",
        (person, ids.admin, uuid("person_name", n)),
    )
    .await?;
    tx.exec_drop(
        "INSERT INTO patient (patient_id, creator, date_created, voided, allergy_status) VALUES (?, ?, NOW(), 0, 'Unknown')",
        (person, ids.admin),
    )
    .await?;
    tx.exec_drop(
        "INSERT INTO patient_identifier (patient_id, identifier, identifier_type, preferred, location_id, creator, date_created, voided, uuid)
         VALUES (?, ?, ?, 1, ?, ?, NOW(), 0, ?)",
        (person, format!("LAT-{n:08}"), ids.id_type, ids.location, ids.admin, uuid("patient_identifier", n)),
    )
    .await?;
    tx.commit().await?;
    let committed = Instant::now();
    if let Some((due, _, sent)) = &mut schedule {
        sent.push(Sent {
            uuid: person_uuid,
            due: *due,
            began,
            committed,
        });
    }

    if let Some((_, due, _)) = &schedule {
        tokio::time::sleep_until(*due).await;
    }
    let began = Instant::now();
    let encounter_uuid = uuid("encounter", n);
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    tx.exec_drop(
        "INSERT INTO encounter (encounter_type, patient_id, location_id, encounter_datetime, creator, date_created, voided, uuid)
         VALUES (?, ?, ?, NOW(), ?, NOW(), 0, ?)",
        (ids.encounter_type, person, ids.location, ids.admin, &encounter_uuid),
    )
    .await?;
    let encounter = tx.last_insert_id().context("encounter id")? as i64;
    let obs = [
        (ids.weight, None, Some(61.5)),
        (ids.temperature, None, Some(37.2)),
        (ids.diagnosis, Some(ids.malaria), None),
    ];
    for (k, (concept, coded, numeric)) in obs.into_iter().enumerate() {
        tx.exec_drop(
            "INSERT INTO obs (person_id, concept_id, encounter_id, obs_datetime, location_id, value_coded, value_numeric,
                              creator, date_created, voided, uuid, status)
             VALUES (?, ?, ?, NOW(), ?, ?, ?, ?, NOW(), 0, ?, 'FINAL')",
            (person, concept, encounter, ids.location, coded, numeric, ids.admin, uuid("obs", n * 3 + k as u64)),
        )
        .await?;
    }
    tx.commit().await?;
    let committed = Instant::now();
    if let Some((_, due, sent)) = schedule {
        sent.push(Sent {
            uuid: encounter_uuid,
            due,
            began,
            committed,
        });
    }
    Ok(())
}

/// Watches HQ for new `person` and `encounter` rows.
struct HqWatch {
    conn: Conn,
    last_person: u64,
    last_encounter: u64,
}

/// What the watcher saw: each row's uuid and the instant the poll that saw it returned, and
/// the instants polls started (for the resolution).
struct Watched {
    arrivals: HashMap<String, Instant>,
    poll_starts: Vec<Instant>,
}

impl HqWatch {
    async fn open(hq: &MariaDb) -> Result<HqWatch> {
        let mut conn = hq.conn().await?;
        let (last_person, last_encounter): (u64, u64) = conn
            .query_first(
                "SELECT (SELECT COALESCE(MAX(person_id), 0) FROM person),
                        (SELECT COALESCE(MAX(encounter_id), 0) FROM encounter)",
            )
            .await?
            .context("max ids")?;
        Ok(HqWatch {
            conn,
            last_person,
            last_encounter,
        })
    }

    /// The uuids of rows that became visible since the last poll.
    async fn poll(&mut self) -> Result<Vec<String>> {
        let rows: Vec<(u8, u64, String)> = self
            .conn
            .exec(
                "SELECT 0, person_id, uuid FROM person WHERE person_id > ?
                 UNION ALL SELECT 1, encounter_id, uuid FROM encounter WHERE encounter_id > ?",
                (self.last_person, self.last_encounter),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(table, id, uuid)| {
                let last = if table == 0 {
                    &mut self.last_person
                } else {
                    &mut self.last_encounter
                };
                *last = (*last).max(id);
                uuid
            })
            .collect())
    }

    /// Polls every [`POLL_INTERVAL`] until `stop`, counting arrivals in `arrived`.
    async fn run(mut self, arrived: Arc<AtomicU64>, stop: CancellationToken) -> Result<Watched> {
        let mut watched = Watched {
            arrivals: HashMap::new(),
            poll_starts: Vec::new(),
        };
        let mut ticks = tokio::time::interval(POLL_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(watched),
                _ = ticks.tick() => {}
            }
            watched.poll_starts.push(Instant::now());
            let uuids = self.poll().await?;
            let now = Instant::now();
            arrived.fetch_add(uuids.len() as u64, Ordering::Relaxed);
            for uuid in uuids {
                watched.arrivals.insert(uuid, now);
            }
        }
    }
}

impl Watched {
    fn print_resolution(&self) {
        let mut spacing: Vec<f64> = self
            .poll_starts
            .windows(2)
            .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
            .collect();
        spacing.sort_by(f64::total_cmp);
        let mean = spacing.iter().sum::<f64>() / spacing.len().max(1) as f64;
        println!(
            "  resolution: HQ polled every {} ms ({} polls; measured spacing mean {mean:.2} ms, p99 {:.2} ms, max {:.2} ms); an arrival is taken when the poll that saw it returned",
            POLL_INTERVAL.as_millis(),
            self.poll_starts.len(),
            percentile(&spacing, 0.99),
            spacing.last().copied().unwrap_or(0.0)
        );
    }
}

/// Latencies joined from what was sent and what arrived.
struct Report {
    /// (seconds into the schedule the transaction was due, latency in ms), in due order.
    latencies: Vec<(f64, f64)>,
    /// Start lateness against the schedule, ms, sorted.
    lateness: Vec<f64>,
    sent: usize,
    missing: usize,
    last_commit_s: f64,
}

impl Report {
    fn new(sent: &[Sent], watched: &Watched, start: Instant) -> Report {
        let mut latencies: Vec<(f64, f64)> = sent
            .iter()
            .filter_map(|s| {
                let arrived = watched.arrivals.get(&s.uuid)?;
                let latency = arrived.saturating_duration_since(s.committed);
                Some(((s.due - start).as_secs_f64(), latency.as_secs_f64() * 1e3))
            })
            .collect();
        latencies.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut lateness: Vec<f64> = sent
            .iter()
            .map(|s| s.began.saturating_duration_since(s.due).as_secs_f64() * 1e3)
            .collect();
        lateness.sort_by(f64::total_cmp);
        let last_commit_s = sent
            .iter()
            .map(|s| s.committed.saturating_duration_since(start).as_secs_f64())
            .fold(0.0, f64::max);
        Report {
            missing: sent.len() - latencies.len(),
            latencies,
            lateness,
            sent: sent.len(),
            last_commit_s,
        }
    }

    fn print_load(&self, rate: u64, seconds: u64) {
        println!(
            "  sent {} transactions ({} row changes: registrations of 4 rows, encounters with 3 obs of 4 rows) on {CONNECTIONS} site connections",
            self.sent,
            self.sent * 4
        );
        println!(
            "  achieved rate {:.1} transactions/s (target {rate}/s for {seconds} s; last commit {:.2} s after the start); start behind schedule: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.sent as f64 / self.last_commit_s.max(1e-3),
            self.last_commit_s,
            percentile(&self.lateness, 0.5),
            percentile(&self.lateness, 0.99),
            self.lateness.last().copied().unwrap_or(0.0)
        );
    }

    fn print_latency(&self) {
        let mut all: Vec<f64> = self.latencies.iter().map(|l| l.1).collect();
        all.sort_by(f64::total_cmp);
        println!(
            "  latency (commit at the site -> visible at HQ), {} transactions: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms{}",
            all.len(),
            percentile(&all, 0.5),
            percentile(&all, 0.9),
            percentile(&all, 0.99),
            all.last().copied().unwrap_or(0.0),
            if self.missing > 0 {
                format!(" ({} NEVER ARRIVED)", self.missing)
            } else {
                String::new()
            }
        );
    }

    /// Latency per window of the schedule and its linear trend: growing latency means a
    /// growing backlog.
    fn print_trend(&self, seconds: f64) {
        let windows = (seconds / WINDOW_SECONDS).ceil().max(1.0) as usize;
        println!("  window (s)    transactions   p50 ms   p99 ms   max ms");
        let mut medians = Vec::new();
        for w in 0..windows {
            let (from, to) = (w as f64 * WINDOW_SECONDS, (w + 1) as f64 * WINDOW_SECONDS);
            let mut these: Vec<f64> = self
                .latencies
                .iter()
                .filter(|l| l.0 >= from && l.0 < to)
                .map(|l| l.1)
                .collect();
            if these.is_empty() {
                continue;
            }
            these.sort_by(f64::total_cmp);
            let median = percentile(&these, 0.5);
            medians.push(median);
            println!(
                "  {from:>4.0} - {to:<4.0}   {:>12}   {median:>6.1}   {:>6.1}   {:>6.1}",
                these.len(),
                percentile(&these, 0.99),
                these.last().copied().unwrap_or(0.0)
            );
        }
        let slope = slope(&self.latencies);
        let growth = slope * seconds;
        let first = medians.first().copied().unwrap_or(0.0);
        let last = medians.last().copied().unwrap_or(0.0);
        // Growth beyond both 100 ms and the first window's median is a backlog, not noise.
        if growth > 100f64.max(first) || last > 2.0 * first + 100.0 {
            println!(
                "  FALLING BEHIND: latency grew {slope:.1} ms per second of load ({growth:.0} ms over the run; median {first:.0} ms in the first window, {last:.0} ms in the last): the pipeline does not keep up with this rate"
            );
        } else {
            println!(
                "  keeping up: latency trend {slope:+.2} ms per second of load (median {first:.0} ms in the first window, {last:.0} ms in the last)"
            );
        }
    }
}

/// Least-squares slope of y over x.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let cov: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let var: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if var == 0.0 { 0.0 } else { cov / var }
}

/// Nearest-rank percentile of sorted values (0 when empty).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// HQ's progress for the (only) site: batches applied and row changes applied.
async fn hq_progress(hq: &MariaDb) -> Result<(u64, u64)> {
    let progress: Option<(u64, u64)> = hq
        .conn()
        .await?
        .query_first("SELECT last_sequence, rows_applied FROM tributary_site_progress")
        .await?;
    Ok(progress.unwrap_or((0, 0)))
}

/// A process whose peak memory and CPU time are read from /proc.
struct Process {
    name: &'static str,
    pid: u32,
}

impl Process {
    fn new(name: &'static str, pid: u32) -> Process {
        Process { name, pid }
    }
}

/// tansu's process id, from the `env` file `deploy/tansu.sh` wrote.
fn tansu_pid(tansu: &Tansu) -> Result<u32> {
    let env = std::fs::read_to_string(tansu.dir().join("env"))?;
    Ok(env
        .lines()
        .find_map(|l| l.strip_prefix("PID="))
        .context("PID in tansu's env file")?
        .trim()
        .parse()?)
}
