//! A site, an HQ and the `tributary` binary wired together the way an operator would: a key
//! generated with `tributary keys generate`, a configuration file, and capture/apply started
//! as separate processes. End-to-end tests build on this.

use crate::{ChildGuard, MariaDb, child_log_filter, tributary_bin, wait_until};
use anyhow::{Context, Result, bail};
use mysql_async::prelude::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use tributary::dataset;
use tributary_transport::{
    DEFAULT_SEGMENT_BYTES, Outbox, SegmentOutbox, SegmentSpool, Spool, SpooledBatch,
};

/// How long a test waits for the pipeline to catch up before failing.
pub const CATCH_UP: Duration = Duration::from_secs(90);

pub struct Pipeline {
    pub site: MariaDb,
    pub hq: MariaDb,
    pub site_id: String,
    pub work: PathBuf,
    /// The configuration with [site], [hq] and [transport] sections.
    pub config: PathBuf,
    pub key_file: PathBuf,
}

pub struct PipelineOptions {
    pub max_batch_rows: usize,
    pub transaction_part_rows: usize,
    /// How often idle capture sends an empty batch.
    pub keepalive_interval_ms: u64,
    /// How often batches carry the site's health report.
    pub health_interval_ms: u64,
    /// Extra mariadbd options for the site (they override the defaults).
    pub site_server_args: &'static [&'static str],
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            max_batch_rows: 5_000,
            transaction_part_rows: 5_000,
            keepalive_interval_ms: 500,
            health_interval_ms: 60_000,
            site_server_args: &[],
        }
    }
}

impl Pipeline {
    /// Starts a site and an HQ, generates the site key, writes the configuration, and loads
    /// the shared dictionary at both (HQ first gets rows of its own, so its ids differ).
    pub async fn start(name: &str, options: PipelineOptions) -> Result<Pipeline> {
        let name = name.to_owned();
        let site_args = options.site_server_args;
        let (site, hq) = tokio::task::spawn_blocking(move || {
            if site_args.is_empty() {
                MariaDb::start_site_and_hq(&name)
            } else {
                Ok((
                    MariaDb::start_with_args(crate::Role::Site, &name, site_args)?,
                    MariaDb::start(crate::Role::Hq, &name)?,
                ))
            }
        })
        .await??;
        let work = site.dir().join("work");
        std::fs::create_dir_all(work.join("keys"))?;
        let site_id = "clinic-a".to_owned();
        let out = run_tributary(&[
            "keys",
            "generate",
            "--site",
            &site_id,
            "--out-dir",
            &work.join("keys").display().to_string(),
        ])?;
        let key_file = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let config = work.join("tributary.toml");
        write_config(
            &config,
            &site_id,
            &site,
            &hq,
            &key_file,
            &work.join("batches"),
            &options,
        )?;
        let pipeline = Pipeline {
            site,
            hq,
            site_id,
            work,
            config,
            key_file,
        };
        let mut hq_conn = pipeline.hq.conn().await?;
        dataset::load_local_extras(&mut hq_conn, "HQ Regional Hospital").await?;
        dataset::load_patients(
            &mut hq_conn,
            "HQ Regional Hospital",
            "hq-local",
            0,
            3,
            dataset::PatientShape::default(),
        )
        .await?;
        dataset::load_metadata(&mut hq_conn, CLINIC).await?;
        dataset::load_metadata(&mut pipeline.site.conn().await?, CLINIC).await?;
        Ok(pipeline)
    }

    /// Starts `tributary <command> --config <config>` as a separate process.
    pub fn spawn(&self, command: &str, name: &str) -> Result<ChildGuard> {
        let mut cmd = Command::new(tributary_bin());
        cmd.args([command, "--config"])
            .arg(&self.config)
            .env("RUST_LOG", child_log_filter());
        ChildGuard::spawn(&mut cmd, &self.work.join("logs"), name)
    }

    /// Runs a one-shot `tributary` command with this pipeline's configuration.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.push("--config".into());
        all.push(self.config.display().to_string());
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        run_tributary(&refs)
    }

    /// Waits until HQ has applied everything the site committed: capture's checkpoint is at
    /// the site's binlog position and HQ applied the last published batch.
    pub async fn wait_caught_up(&self, children: &mut [&mut ChildGuard]) -> Result<()> {
        let result = wait_site_applied(
            &self.site,
            &self.hq,
            &self.site_id,
            &self.work.join("state"),
        )
        .await;
        if let Err(e) = result {
            let logs: Vec<String> = children.iter().map(|c| c.logs()).collect();
            return Err(e.context(logs.join("\n")));
        }
        Ok(())
    }

    /// `tributary verify` over the clinical tables: Ok when HQ matches the site.
    pub fn verify(&self) -> Result<String> {
        let out = self.run(&["verify"])?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "verification failed:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }

    /// `tributary status` output.
    pub fn status(&self) -> Result<String> {
        let out = self.run(&["status", "--parked", "50"])?;
        if !out.status.success() {
            bail!("status failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// How many row changes HQ counted as applied for the (single) site: each exactly once
    /// when nothing was lost or applied twice. `None` before the site's first batch.
    pub async fn rows_applied_at_hq(&self) -> Result<Option<u64>> {
        Ok(self
            .hq
            .conn()
            .await?
            .query_first("SELECT rows_applied FROM tributary_site_progress")
            .await?)
    }

    /// Rows at HQ whose integer references point at no row, over every reference the schema
    /// map knows (declared FKs and undeclared ones) in the clinical tables.
    pub async fn dangling_references_at_hq(&self) -> Result<u64> {
        dangling_references(&self.hq).await
    }
}

pub const CLINIC: &str = "Demo Clinic";

/// Waits until HQ has applied everything `site` committed: the checkpoint in `state` (the
/// capture's state directory) is at the site's binlog position and HQ applied the last batch
/// published.
pub async fn wait_site_applied(
    site: &MariaDb,
    hq: &MariaDb,
    site_id: &str,
    state: &Path,
) -> Result<()> {
    wait_until(
        &format!("HQ to catch up with {site_id}"),
        CATCH_UP,
        move || async move {
            let position: String = site.scalar("SELECT @@gtid_binlog_pos").await?;
            let Some(checkpoint) = tributary_capture_checkpoint(state)? else {
                return Ok(false);
            };
            let applied: Option<(u64, u64)> = hq
                .conn()
                .await?
                .exec_first(
                    "SELECT epoch, last_sequence FROM tributary_site_progress WHERE site_id = ?",
                    (site_id,),
                )
                .await
                .unwrap_or(None);
            // The same epoch: a new one's first batches are not the old one's.
            let (epoch, last) = applied.unwrap_or((checkpoint.2, 0));
            Ok(checkpoint.0 == position && epoch == checkpoint.2 && last + 1 == checkpoint.1)
        },
    )
    .await
}

/// Counts references at `db` (declared and undeclared) in the clinical tables that point at no
/// row.
pub async fn dangling_references(db: &MariaDb) -> Result<u64> {
    let mut conn = db.conn().await?;
    let catalog = tributary_schema::Catalog::introspect(&mut conn, db.database()).await?;
    let map =
        tributary_schema::SchemaMap::build(&catalog, &tributary_schema::Policy::openmrs_core())?;
    let mut dangling = 0u64;
    for table in tributary::verify::CLINICAL_TABLES {
        let Some(t) = map.table(table) else { continue };
        for (column, target) in &t.references {
            let Some(target_map) = map.table(target) else {
                continue;
            };
            let [key] = target_map.primary_key.as_slice() else {
                continue;
            };
            let sql = format!(
                "SELECT COUNT(*) FROM `{table}` c LEFT JOIN `{target}` p ON p.`{key}` = c.`{column}` \
                 WHERE c.`{column}` IS NOT NULL AND p.`{key}` IS NULL"
            );
            let n: Option<u64> = conn.query_first(sql).await?;
            dangling += n.unwrap_or(0);
        }
    }
    Ok(dangling)
}

/// Reads capture's checkpoint file: (GTID position, next sequence).
/// Capture's checkpoint: (GTID position, next sequence, epoch).
pub fn tributary_capture_checkpoint(state_dir: &Path) -> Result<Option<(String, u64, u64)>> {
    let path = state_dir.join("capture-state.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let v: serde_json::Value = serde_json::from_slice(&bytes).context("checkpoint json")?;
            Ok(Some((
                v["gtid_position"].as_str().unwrap_or_default().to_owned(),
                v["next_sequence"].as_u64().unwrap_or(0),
                v["epoch"].as_u64().unwrap_or(0),
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub fn run_tributary(args: &[&str]) -> Result<Output> {
    let out = Command::new(tributary_bin())
        .args(args)
        .output()
        .with_context(|| format!("running tributary {args:?}"))?;
    Ok(out)
}

/// Like [`run_tributary`] but fails with the command's stderr when it does not succeed.
pub fn run_ok(out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "tributary exited with {}:\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn write_config(
    path: &Path,
    site_id: &str,
    site: &MariaDb,
    hq: &MariaDb,
    key_file: &Path,
    transport: &Path,
    options: &PipelineOptions,
) -> Result<()> {
    let keys = key_file.parent().context("key file has a directory")?;
    let text = format!(
        r#"[site]
id = "{site_id}"
state_dir = "state"
key_file = "{key}"
flush_interval_ms = 50
keepalive_interval_ms = {keepalive_interval_ms}
health_interval_ms = {health_interval_ms}
max_batch_rows = {max_batch_rows}
transaction_part_rows = {transaction_part_rows}

[site.database]
url = "mysql://{su}@127.0.0.1:{sp}/{sd}"
password_file = "{spw}"

[hq]
key_dir = "{keys}"
poll_interval_ms = 50
retry_parked_interval_ms = 300

[hq.database]
url = "mysql://{hu}@127.0.0.1:{hp}/{hd}"
password_file = "{hpw}"

[transport]
directory = "{transport}"
"#,
        max_batch_rows = options.max_batch_rows,
        keepalive_interval_ms = options.keepalive_interval_ms,
        health_interval_ms = options.health_interval_ms,
        transaction_part_rows = options.transaction_part_rows,
        key = key_file.display(),
        keys = keys.display(),
        transport = transport.display(),
        su = site.user(),
        sp = site.port(),
        sd = site.database(),
        spw = site.password_file().display(),
        hu = hq.user(),
        hp = hq.port(),
        hd = hq.database(),
        hpw = hq.password_file().display(),
    );
    std::fs::write(path, text)?;
    Ok(())
}

impl Pipeline {
    /// Another site feeding this pipeline's HQ through the same transport directory: its key
    /// generated into HQ's key directory (an applier started later reads it), and a
    /// configuration `<work>/<site_id>.toml` whose state directory is `state-<site_id>`.
    /// Returns the configuration and the state directory's name.
    pub fn add_site(&self, site_id: &str, db: &MariaDb) -> Result<(PathBuf, String)> {
        let keys = self.key_file.parent().context("key directory")?;
        let out = run_ok(run_tributary(&[
            "keys",
            "generate",
            "--site",
            site_id,
            "--out-dir",
            &keys.display().to_string(),
        ])?)?;
        let config = self.work.join(format!("{site_id}.toml"));
        write_config(
            &config,
            site_id,
            db,
            &self.hq,
            Path::new(out.trim()),
            &self.work.join("batches"),
            &PipelineOptions::default(),
        )?;
        let state_dir = format!("state-{site_id}");
        let text = std::fs::read_to_string(&config)?.replace(
            "state_dir = \"state\"",
            &format!("state_dir = \"{state_dir}\""),
        );
        std::fs::write(&config, text)?;
        Ok((config, state_dir))
    }

    /// Rows parked at HQ and conflicts recorded there.
    pub async fn parked_and_conflicts(&self) -> Result<(u64, u64)> {
        let mut hq = self.hq.conn().await?;
        let parked: Option<u64> = hq
            .query_first("SELECT COUNT(*) FROM tributary_parked_row")
            .await?;
        let conflicts: Option<u64> = hq
            .query_first("SELECT COUNT(*) FROM tributary_conflict")
            .await?;
        Ok((parked.unwrap_or(0), conflicts.unwrap_or(0)))
    }
}

impl Pipeline {
    /// A second configuration whose transport directory is `transport` (so batches can be
    /// moved between capture's outbox and the applier's inbox by hand), with the given key.
    ///
    /// Capture there publishes every source transaction as its own batch.
    pub fn config_with(
        &self,
        name: &str,
        transport: &Path,
        key_file: &Path,
        state_dir: &str,
    ) -> Result<PathBuf> {
        let path = self.work.join(name);
        write_config(
            &path,
            &self.site_id,
            &self.site,
            &self.hq,
            key_file,
            transport,
            &PipelineOptions {
                max_batch_rows: 1,
                // These tests count the batches capture publishes.
                keepalive_interval_ms: 3_600_000,
                health_interval_ms: 3_600_000,
                ..PipelineOptions::default()
            },
        )?;
        let text = std::fs::read_to_string(&path)?.replace(
            "state_dir = \"state\"",
            &format!("state_dir = \"{state_dir}\""),
        );
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// Runs a one-shot command with another configuration file.
    pub fn run_with(&self, config: &Path, args: &[&str]) -> Result<Output> {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.push("--config".into());
        all.push(config.display().to_string());
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        run_tributary(&refs)
    }
}

/// The committed batch files of one site in a transport directory, sorted by name (which is
/// epoch then sequence, zero-padded).
pub fn batch_files(transport: &Path, site_id: &str) -> Result<Vec<PathBuf>> {
    let dir = transport.join(site_id);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "batch") && p.is_file())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    files.sort();
    Ok(files)
}

/// Places batch bytes into a site's inbox directory atomically (temp name, then rename),
/// under the given file name.
pub fn deliver(bytes: &[u8], inbox: &Path, site_id: &str, file_name: &str) -> Result<()> {
    let dir = inbox.join(site_id);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".{file_name}.copying"));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, dir.join(file_name))?;
    Ok(())
}

impl Pipeline {
    /// Starts `tributary <command>` with another configuration file.
    pub fn spawn_with(&self, command: &str, config: &Path, name: &str) -> Result<ChildGuard> {
        self.spawn_with_args(command, config, name, &[])
    }

    /// Starts `tributary <command> --config <config> <extra...>`.
    pub fn spawn_with_args(
        &self,
        command: &str,
        config: &Path,
        name: &str,
        extra: &[&str],
    ) -> Result<ChildGuard> {
        let mut cmd = Command::new(tributary_bin());
        cmd.args([command, "--config"])
            .arg(config)
            .args(extra)
            .env("RUST_LOG", child_log_filter());
        ChildGuard::spawn(&mut cmd, &self.work.join("logs"), name)
    }

    /// Starts capture and the applier with the main configuration and waits until capture
    /// has recorded where it starts (changes after that are streamed).
    pub async fn start_streaming(&self) -> Result<(ChildGuard, ChildGuard)> {
        let capture = self.spawn("capture", "capture")?;
        let apply = self.spawn("apply", "apply")?;
        self.wait_capture_started("state", &capture).await?;
        Ok((capture, apply))
    }

    /// Runs capture with `config` (and state directory `state`) around one new patient `n` of
    /// `clinic-a`, and returns the one batch it published into `transport`.
    pub async fn capture_one_patient(
        &self,
        config: &Path,
        state: &str,
        transport: &Path,
        site: &mut mysql_async::Conn,
        n: u64,
        shape: dataset::PatientShape,
    ) -> Result<PathBuf> {
        let mut capture = self.spawn_with("capture", config, state)?;
        self.wait_capture_started(state, &capture).await?;
        dataset::load_patients(site, CLINIC, "clinic-a", n, 1, shape).await?;
        self.wait_capture_published(state, &capture).await?;
        capture.signal("TERM")?;
        capture.wait_exit(Duration::from_secs(30)).await?;
        let files = batch_files(transport, "clinic-a")?;
        match files.as_slice() {
            [one] => Ok(one.clone()),
            _ => bail!("expected one batch in {}: {files:?}", transport.display()),
        }
    }

    /// Waits until the capture using `<work>/<state_dir>` has written its checkpoint.
    pub async fn wait_capture_started(&self, state_dir: &str, capture: &ChildGuard) -> Result<()> {
        wait_checkpoint_written(&self.work.join(state_dir), capture, Duration::from_secs(30)).await
    }

    /// Waits until the capture using `<work>/<state_dir>` has published everything the site
    /// committed (its checkpoint is at the site's binlog position).
    pub async fn wait_capture_published(
        &self,
        state_dir: &str,
        capture: &ChildGuard,
    ) -> Result<()> {
        let state = self.work.join(state_dir);
        let site = &self.site;
        wait_until(
            "capture to publish every transaction",
            Duration::from_secs(60),
            || {
                let state = state.clone();
                async move {
                    let position: String = site.scalar("SELECT @@gtid_binlog_pos").await?;
                    Ok(
                        tributary_capture_checkpoint(&state)?
                            .is_some_and(|(p, _, _)| p == position),
                    )
                }
            },
        )
        .await
        .map_err(|e| e.context(capture.logs()))
    }
}

impl Pipeline {
    /// Switches the configuration to the Kafka transport: `[transport] directory` becomes the
    /// site's spool (capture writes it, `tributary ship` sends it) and HQ's rejected-batch
    /// store; the applier consumes `topic` in group `tributary-hq`. Topics are created with
    /// `partitions` partitions and replication factor 1 (`tributary kafka init`).
    pub fn use_kafka(&self, brokers: &str, topic: &str, partitions: u32) -> Result<()> {
        use_kafka_in(&self.config, brokers, topic, partitions)
    }

    /// The site's spool when the Kafka transport is used: its committed, undelivered batches.
    pub fn spooled_batches(&self) -> Result<Vec<SpooledBatch>> {
        let spool = SegmentSpool::open(&self.work.join("batches"), &self.site_id)?;
        Ok(spool.committed_after(None, usize::MAX)?)
    }

    /// Bytes of the site's segment spool on disk.
    pub fn spool_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for entry in std::fs::read_dir(self.work.join("batches").join(&self.site_id))? {
            total += entry?.metadata()?.len();
        }
        Ok(total)
    }

    /// Takes one batch out of the site's segment spool (capture and the shipper must be
    /// stopped): the spool is rewritten without it. Returns the batch's name as a batch file
    /// and its sealed bytes.
    pub fn take_from_spool(&self, sequence: u64) -> Result<(String, Vec<u8>)> {
        let root = self.work.join("batches");
        let rebuilt = self.work.join("batches-rebuilt");
        let mut taken = None;
        {
            let spool = SegmentSpool::open(&root, &self.site_id)?;
            let mut outbox = SegmentOutbox::open(&rebuilt, &self.site_id, DEFAULT_SEGMENT_BYTES)?;
            for batch in spool.committed_after(None, usize::MAX)? {
                let bytes = spool.read(&batch)?;
                if batch.sequence == sequence {
                    let name = format!("{:010}-{:020}.batch", batch.epoch, batch.sequence);
                    taken = Some((name, bytes));
                } else {
                    let staged = outbox.stage(batch.epoch, batch.sequence, &bytes)?;
                    outbox.commit(&staged)?;
                }
            }
        }
        std::fs::remove_dir_all(root.join(&self.site_id))?;
        std::fs::rename(rebuilt.join(&self.site_id), root.join(&self.site_id))?;
        taken.with_context(|| format!("batch {sequence} is not in the spool"))
    }
}

/// Switches the configuration file `config` to the Kafka transport, as
/// [`Pipeline::use_kafka`] does.
pub fn use_kafka_in(config: &Path, brokers: &str, topic: &str, partitions: u32) -> Result<()> {
    let text = std::fs::read_to_string(config)?;
    if !text.contains("[transport]\n") {
        bail!("{} has no [transport] section", config.display());
    }
    let text = text.replace("[transport]\n", "[transport]\nkind = \"kafka\"\n");
    let text = format!(
        "{text}\n[transport.kafka]\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\n\
         group = \"tributary-hq\"\npartitions = {partitions}\nreplication_factor = 1\n\
         hold_retry_ms = 500\ndrain_idle_ms = 5000\n"
    );
    std::fs::write(config, text)?;
    Ok(())
}

/// The last batch HQ applied for the (only) site, 0 before the first.
pub async fn applied_sequence(hq: &MariaDb) -> Result<u64> {
    let mut conn = hq.conn().await?;
    Ok(conn
        .query_first("SELECT last_sequence FROM tributary_site_progress")
        .await
        .unwrap_or(None)
        .unwrap_or(0))
}

/// Waits until HQ applied at least one more batch than `before` (the pipeline is mid-stream).
pub async fn wait_for_progress(
    hq: &MariaDb,
    before: u64,
    children: &mut [&mut ChildGuard],
) -> Result<()> {
    let result = wait_until("HQ to apply another batch", CATCH_UP, || async move {
        Ok(applied_sequence(hq).await? > before)
    })
    .await;
    result.map_err(|e| {
        e.context(
            children
                .iter()
                .map(|c| c.logs())
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })
}

impl Pipeline {
    /// Registers patients `first..first + count` of site `clinic-a` on a connection of its
    /// own, in the background (the site keeps working while a test does something else);
    /// the task returns the row changes written.
    pub fn spawn_patient_load(
        &self,
        first: u64,
        count: u64,
        shape: dataset::PatientShape,
    ) -> tokio::task::JoinHandle<Result<u64>> {
        let opts = self.site.opts();
        tokio::spawn(async move {
            let mut conn = mysql_async::Conn::new(opts).await?;
            Ok(dataset::load_patients(&mut conn, CLINIC, "clinic-a", first, count, shape).await?)
        })
    }
}

/// Waits until the capture keeping its state in `state_dir` has written its first checkpoint
/// (its start position); on timeout the error carries the capture's logs.
pub async fn wait_checkpoint_written(
    state_dir: &Path,
    capture: &ChildGuard,
    deadline: Duration,
) -> Result<()> {
    let state = state_dir.join("capture-state.json");
    wait_until("capture to record its start position", deadline, || {
        let exists = state.exists();
        async move { Ok(exists) }
    })
    .await
    .map_err(|e| e.context(capture.logs()))
}
