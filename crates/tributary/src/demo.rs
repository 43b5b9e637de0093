//! The demo: one field site and one HQ, the whole pipeline over the directory transport.
//!
//! Given two running MariaDB instances (described by the env files `deploy/mariadb.sh`
//! writes), it generates a site key, writes a configuration file, loads an OpenMRS-shaped
//! dataset at the site (and other rows at HQ, so HQ's ids differ), seeds the site into HQ,
//! streams live changes through capture and apply, waits until HQ caught up, and prints
//! per-site status and a verification. Capture and apply run as tasks of this process, through
//! the same library entry points as `tributary capture` and `tributary apply`.

use crate::config::Config;
use crate::dataset::{self, PatientShape};
use crate::report;
use crate::verify::{self, CLINICAL_TABLES};
use anyhow::{Context, Result, bail};
use mysql_async::Conn;
use mysql_async::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tributary_batch::SiteKey;
use tributary_capture::StateDir;

pub const DEMO_SITE: &str = "clinic-demo";
const CLINIC: &str = "Demo Clinic";
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(180);

pub struct DemoOptions {
    pub work_dir: PathBuf,
    pub site_env: PathBuf,
    pub hq_env: PathBuf,
    pub patients: u64,
    pub live_patients: u64,
}

/// Runs the demo; Ok(true) when HQ verified equal to the site.
pub async fn run_demo(options: &DemoOptions) -> Result<bool> {
    let config_path = prepare_work_dir(options)?;
    let config = Config::load(&config_path)?;
    println!("configuration: {}", config_path.display());
    let (site_opts, site_db) = config.site_database()?;
    let (hq_opts, hq_db) = config.hq_database()?;
    let mut site = Conn::new(site_opts.clone())
        .await
        .context("connecting to the site database")?;
    let mut hq = Conn::new(hq_opts.clone())
        .await
        .context("connecting to the HQ database")?;
    let shape = PatientShape::default();

    println!("\n== loading data");
    dataset::load_local_extras(&mut hq, "HQ Regional Hospital").await?;
    let hq_rows =
        dataset::load_patients(&mut hq, "HQ Regional Hospital", "hq-local", 0, 5, shape).await?;
    dataset::load_metadata(&mut hq, CLINIC).await?;
    println!("HQ: {hq_rows} rows of its own (another clinic's patients), shared dictionary");
    dataset::load_metadata(&mut site, CLINIC).await?;
    let started = Instant::now();
    let site_rows =
        dataset::load_patients(&mut site, CLINIC, DEMO_SITE, 0, options.patients, shape).await?;
    println!(
        "site: {} patients, {site_rows} clinical rows in {:.1} s (before capture starts: they reach HQ by seed)",
        options.patients,
        started.elapsed().as_secs_f64()
    );

    println!("\n== seeding {DEMO_SITE} into HQ");
    let capture_settings = config.capture_settings()?;
    let seed_started = Instant::now();
    let seed = tributary_capture::run_seed(
        &capture_settings,
        &tributary_capture::SeedOptions::default(),
        |status| {
            if status.table_done {
                tracing::debug!(table = status.table, rows = status.table_rows, "seeded");
            }
        },
    )
    .await?;
    println!(
        "snapshot: {} rows from {} tables sealed into batches {}..{} in {:.1} s",
        seed.rows,
        seed.tables,
        seed.first_sequence,
        seed.next_sequence.saturating_sub(1),
        seed_started.elapsed().as_secs_f64()
    );

    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    {
        let settings = config.capture_settings()?;
        let token = shutdown.clone();
        tasks.spawn(async move {
            tributary_capture::run_capture(settings, token)
                .await
                .context("capture")
        });
        let settings = config.apply_settings()?;
        let token = shutdown.clone();
        tasks.spawn(async move {
            tributary_apply::run_apply(settings, token)
                .await
                .context("apply")
        });
    }
    let outcome = async {
        let state_dir = config.state_dir()?;
        wait_caught_up(&mut site, &mut hq, &state_dir, &mut tasks).await?;
        let seed_secs = seed_started.elapsed().as_secs_f64();
        println!(
            "seed applied at HQ: {} rows in {seed_secs:.1} s ({:.0} rows/s end to end)",
            seed.rows,
            seed.rows as f64 / seed_secs
        );

        println!("\n== live changes at the site while capture and apply run");
        let live_started = Instant::now();
        let live_rows = dataset::load_patients(
            &mut site,
            CLINIC,
            DEMO_SITE,
            options.patients,
            options.live_patients,
            shape,
        )
        .await?;
        println!(
            "registered {} new patients ({live_rows} rows, one transaction each)",
            options.live_patients
        );
        let live = dataset::live_changes(&mut site, DEMO_SITE, options.patients, shape).await?;
        for change in &live.descriptions {
            println!("{change}");
        }
        wait_caught_up(&mut site, &mut hq, &state_dir, &mut tasks).await?;
        let live_secs = live_started.elapsed().as_secs_f64();
        println!(
            "HQ caught up {live_secs:.1} s after the first live change ({:.0} rows/s)",
            live_rows as f64 / live_secs
        );
        Ok::<_, anyhow::Error>(live.deleted)
    }
    .await;
    shutdown.cancel();
    while let Some(joined) = tasks.join_next().await {
        joined.context("a pipeline task panicked")??;
    }
    let deleted = outcome?;

    println!("\n== status at HQ");
    let statuses = tributary_apply::site_statuses(&mut hq).await?;
    print!(
        "{}",
        report::status_table(&statuses, crate::config::DEFAULT_SITE_SILENT_AFTER_S)
    );
    let parked = tributary_apply::parked_rows(&mut hq, 20).await?;
    if !parked.is_empty() {
        println!("parked rows:");
        print!("{}", report::parked_table(&parked));
    }

    println!("\n== verification: HQ against the site, by identity");
    let policy = config.policy()?;
    let reports = verify::verify(
        &site_opts,
        &site_db,
        &hq_opts,
        &hq_db,
        &policy,
        CLINICAL_TABLES,
    )
    .await?;
    print!("{}", report::verification_table(&reports));
    // Verification compares the site's rows; rows the site deleted must be gone at HQ too.
    let mut deletes_reached_hq = true;
    for (table, uuid) in &deleted {
        let left: Option<u64> = hq
            .exec_first(
                format!("SELECT COUNT(*) FROM {table} WHERE uuid = ?"),
                (uuid,),
            )
            .await?;
        deletes_reached_hq &= left == Some(0);
    }
    println!(
        "rows deleted at the site are gone at HQ: {}",
        if deletes_reached_hq { "yes" } else { "NO" }
    );
    let ok = deletes_reached_hq && reports.iter().all(|r| r.ok());
    let ids_differ = ids_differ(&mut site, &mut hq).await?;
    println!(
        "\n{}: {} rows compared; HQ ids differ from the site's for {} of {} sampled patients (references were translated)",
        if ok {
            "VERIFIED"
        } else {
            "VERIFICATION FAILED"
        },
        reports.iter().map(|r| r.site_rows).sum::<u64>(),
        ids_differ.0,
        ids_differ.1,
    );
    println!(
        "\nTry it by hand: tributary status --config {}  |  tributary verify --site {DEMO_SITE} \
         --list --config {}",
        config_path.display(),
        config_path.display()
    );
    Ok(ok)
}

fn prepare_work_dir(options: &DemoOptions) -> Result<PathBuf> {
    let work = &options.work_dir;
    for sub in ["keys", "state", "batches"] {
        let path = work.join(sub);
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("cleaning {}", path.display()))?;
        }
    }
    std::fs::create_dir_all(work.join("keys"))?;
    let key = SiteKey::generate(DEMO_SITE)?;
    let key_file = work.join("keys").join(key.file_name());
    key.write_new(&key_file)?;
    println!(
        "site key {} for {DEMO_SITE}: {}",
        key.key_id(),
        key_file.display()
    );
    let site = read_env(&options.site_env)?;
    let hq = read_env(&options.hq_env)?;
    let config = format!(
        r#"# Written by `tributary demo`; every command can be run by hand with --config.
[site]
id = "{DEMO_SITE}"
state_dir = "state"
key_file = "keys/{key_file}"
flush_interval_ms = 100

[site.database]
url = "mysql://{site_user}@127.0.0.1:{site_port}/{site_db}"
password_file = "{site_pw}"

[hq]
key_dir = "keys"
poll_interval_ms = 100

[hq.database]
url = "mysql://{hq_user}@127.0.0.1:{hq_port}/{hq_db}"
password_file = "{hq_pw}"

[transport]
directory = "batches"
"#,
        key_file = key.file_name(),
        site_user = env(&site, "USER")?,
        site_port = env(&site, "PORT")?,
        site_db = env(&site, "DATABASE")?,
        site_pw = env(&site, "PASSWORD_FILE")?,
        hq_user = env(&hq, "USER")?,
        hq_port = env(&hq, "PORT")?,
        hq_db = env(&hq, "DATABASE")?,
        hq_pw = env(&hq, "PASSWORD_FILE")?,
    );
    let path = work.join("tributary.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}

/// Reads the KEY=VALUE file `deploy/mariadb.sh start` writes.
fn read_env(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read {}; start the instance with deploy/mariadb.sh",
            path.display()
        )
    })?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_owned(),
                v.trim().trim_matches(['"', '\'']).to_owned(),
            )
        })
        .collect())
}

fn env<'a>(map: &'a BTreeMap<String, String>, key: &str) -> Result<&'a str> {
    map.get(key)
        .map(String::as_str)
        .with_context(|| format!("instance env file has no {key}"))
}

/// Waits until every committed site transaction is applied at HQ: the capture checkpoint has
/// reached the site's binlog position and HQ has applied the last published batch.
async fn wait_caught_up(
    site: &mut Conn,
    hq: &mut Conn,
    state_dir: &Path,
    tasks: &mut JoinSet<Result<()>>,
) -> Result<()> {
    let deadline = Instant::now() + CATCH_UP_DEADLINE;
    loop {
        if let Some(finished) = tasks.try_join_next() {
            finished.context("a pipeline task panicked")??;
            bail!("a pipeline task stopped before HQ caught up");
        }
        let site_position: Option<String> = site.query_first("SELECT @@gtid_binlog_pos").await?;
        let checkpoint = StateDir::peek(state_dir)?;
        let applied: Option<u64> = hq
            .exec_first(
                "SELECT last_sequence FROM tributary_site_progress WHERE site_id = ?",
                (DEMO_SITE,),
            )
            .await
            .unwrap_or(None);
        if let (Some(position), Some(checkpoint)) = (site_position, checkpoint)
            && checkpoint.gtid_position == position
            && applied.unwrap_or(0) + 1 == checkpoint.next_sequence
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "HQ did not catch up within {} s; see `tributary status`",
                CATCH_UP_DEADLINE.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many of a sample of site patients have a different person_id at HQ.
async fn ids_differ(site: &mut Conn, hq: &mut Conn) -> Result<(u64, u64)> {
    let sample: Vec<(i64, String)> = site
        .query("SELECT person_id, uuid FROM person ORDER BY person_id DESC LIMIT 20")
        .await?;
    let mut differ = 0;
    for (id, uuid) in &sample {
        let hq_id: Option<i64> = hq
            .exec_first("SELECT person_id FROM person WHERE uuid = ?", (uuid,))
            .await?;
        if hq_id.is_some_and(|h| h != *id) {
            differ += 1;
        }
    }
    Ok((differ, sample.len() as u64))
}
