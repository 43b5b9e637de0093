//! The configuration file: typed, strict (`deny_unknown_fields`), with units in field names and
//! secrets by reference (a password file or an environment variable, never the file itself or
//! the command line). One file may hold the site part, the HQ part, or both; each command
//! checks that the part it needs is there and names what is missing.

use anyhow::{Context, Result, bail};
use mysql_async::{Opts, OptsBuilder};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tributary_apply::{
    ApplySettings, ConflictPolicies, ConflictPolicy, DEFAULT_FULL_REFRESH_MIN_INTERVAL,
    DEFAULT_PARKED_REPORT_AGE, DEFAULT_POLL_INTERVAL, DEFAULT_REFRESH_BATCH_SIZE,
    DEFAULT_REFRESH_FLUSH_INTERVAL, DEFAULT_REFRESH_MAX_ATTEMPTS, DEFAULT_REFRESH_MAX_QUEUED,
    DEFAULT_REFRESH_TIMEOUT, DEFAULT_RESOLVER_CACHE_ENTRIES, DEFAULT_RETRY_PARKED_INTERVAL,
    Endpoint, RefreshSettings, Refresher, UsernamePolicy,
};
use tributary_batch::Keyring;
use tributary_capture::{
    CaptureSettings, DEFAULT_DISK_RESERVE_BYTES, DEFAULT_FLUSH_INTERVAL,
    DEFAULT_IDENTITY_CACHE_ENTRIES, DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_MAX_BATCH_ROWS,
    DEFAULT_OUTBOX_LIMIT_BYTES, DEFAULT_SNAPSHOT_CHUNK_ROWS, DEFAULT_TRANSACTION_PART_ROWS,
    ResumeBy, SpoolLimits, StartPosition,
};
use tributary_kafka::{
    ConsumerSettings, KafkaSettings, SECRET_PROPERTIES, ShipperSettings, check_property,
};
use tributary_schema::Policy;
use tributary_transport::{Spool, SpoolFormat, open_spool};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The field site this capture agent serves.
    pub site: Option<SiteSection>,
    /// The HQ database the applier writes into.
    pub hq: Option<HqSection>,
    /// The shared directory batches travel through.
    pub transport: Option<TransportSection>,
    /// A schema-map policy file; the embedded OpenMRS core policy when absent.
    pub schema_map: Option<PathBuf>,
    /// Where capture, ship and apply serve `GET /metrics`; off when absent.
    pub metrics: Option<MetricsSection>,
    #[serde(skip)]
    origin: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// `mysql://user@host:port/database`; a password in the URL is refused.
    pub url: String,
    /// A file holding the password (first line), readable by the service user only.
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password, when no file is given.
    pub password_env: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSection {
    pub id: String,
    pub database: DatabaseSection,
    /// Server id capture registers with; must be unique among the source's replicas.
    pub replica_server_id: Option<u32>,
    /// Capture state (checkpoint, lock).
    pub state_dir: PathBuf,
    /// The site's key file (`tributary keys generate`).
    pub key_file: PathBuf,
    pub max_batch_rows: Option<usize>,
    /// Rows of one source transaction held in memory before it travels in parts.
    pub transaction_part_rows: Option<usize>,
    pub flush_interval_ms: Option<u64>,
    /// An idle capture sends an empty batch this often (default 60 000).
    pub keepalive_interval_ms: Option<u64>,
    pub identity_cache_entries: Option<usize>,
    /// Rows a seed reads per query (and per durable step of an interrupted seed); default 2000.
    pub seed_chunk_rows: Option<usize>,
    /// The most the outbox may hold while the transport is behind (default 10240 MiB);
    /// capture waits at the limit, nothing is lost while the site keeps its binlogs.
    pub outbox_limit_mb: Option<u64>,
    /// Space to leave free on the outbox's disk (default 512 MiB).
    pub disk_reserve_mb: Option<u64>,
    /// `current` (default: stream from now; older rows come by `tributary seed`) or `oldest`.
    pub start_position: Option<String>,
    /// Which checkpoint key capture resumes from: `gtid` (default; by binlog file/position
    /// where the source has no GTIDs) or `file_position`.
    pub resume_by: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HqSection {
    pub database: DatabaseSection,
    /// A directory of site key files (`*.key`) the applier accepts batches from.
    pub key_dir: PathBuf,
    pub poll_interval_ms: Option<u64>,
    pub resolver_cache_entries: Option<usize>,
    /// How often every parked row is retried without an arrival (default 60 000).
    pub retry_parked_interval_ms: Option<u64>,
    /// Parked rows older than this are reported by a warning, `status` and the age gauge
    /// (default 86 400, a day).
    pub parked_report_age_s: Option<u64>,
    /// What happens when a site changes a row that was edited at HQ, or written from another
    /// site, since that site last wrote it (`[hq.conflicts]`); by default both versions wait
    /// in the conflict queue for a person (`tributary conflicts`).
    pub conflicts: Option<ConflictsSection>,
    /// Ask HQ OpenMRS to refresh its caches and search index after applying; off when absent.
    pub refresh: Option<RefreshSection>,
}

/// `[hq.conflicts]`: a policy per table, `queue` (the default: both versions wait for a
/// person), `site-wins`, `hq-wins` or `newest-date-changed` (the later `date_changed` wins;
/// deletes and tables without the column wait in the queue).
///
/// ```toml
/// [hq.conflicts]
/// default = "queue"
/// tables = { person_name = "newest-date-changed", obs = "site-wins" }
/// usernames = "park"   # or "suffix-site": a clashing login name is written as name@site
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConflictsSection {
    #[serde(default)]
    pub default: ConflictPolicy,
    #[serde(default)]
    pub tables: BTreeMap<String, ConflictPolicy>,
    /// A user whose username or system id another HQ user has (OpenMRS keeps them unique in
    /// the application only): `park` (the default) or `suffix-site` (written as name@site).
    #[serde(default)]
    pub usernames: UsernamePolicy,
}

/// `[hq.refresh]`: after each batch commits, the applier names the entities it wrote to HQ
/// OpenMRS's REST API (`POST <base_url>/ws/rest/v1/searchindexupdate` and `.../cleardbcache`),
/// coalesced per resource type and sent every `flush_interval_ms`. Failed calls never stop
/// applying: they are retried, then logged and counted
/// (`tributary_apply_refresh_failed_total`).
///
/// ```toml
/// [hq.refresh]
/// base_url = "https://hq.example/openmrs"      # the part before /ws/rest
/// username = "tributary"                       # an OpenMRS account (HTTP Basic)
/// password_file = "/etc/tributary/openmrs.password"   # or password_env = "VAR"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshSection {
    /// HQ OpenMRS's address up to its context path, e.g. `https://hq.example/openmrs`.
    /// `https` is verified against the system's CA store (or `SSL_CERT_FILE`).
    pub base_url: String,
    /// The OpenMRS account the calls authenticate as.
    pub username: String,
    /// A file holding its password (first line), readable by the service user only.
    pub password_file: Option<PathBuf>,
    /// An environment variable holding it, when no file is given.
    pub password_env: Option<String>,
    /// Update the search index (default true).
    pub search_index: Option<bool>,
    /// Evict Hibernate's second-level cache (default true).
    pub db_cache: Option<bool>,
    /// Entities of one resource type named one call each per flush; more become one call
    /// for the whole type (default 50).
    pub batch_size: Option<usize>,
    /// Changed entities waiting at most; beyond, one full refresh instead (default 100 000).
    pub max_queued_entities: Option<usize>,
    /// How often what waits is sent (default 2 000).
    pub flush_interval_ms: Option<u64>,
    /// One request's limit (default 30 000).
    pub timeout_ms: Option<u64>,
    /// Attempts per call, 1 s doubling to 30 s apart (default 5).
    pub max_attempts: Option<u32>,
    /// Full refreshes (search index rebuilt) at most this often (default 900).
    pub full_refresh_min_interval_s: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportSection {
    /// `directory` (the default), `kafka`, or `carried` (a site with no link at all).
    #[serde(default)]
    pub kind: TransportKind,
    /// Capture writes `<directory>/<site>/...`. With `kind = "directory"` the applier reads it
    /// there (one file per batch); with `kind = "kafka"` it is the site's spool of segment
    /// files (`tributary ship` sends it to Kafka) and, at HQ, where rejected batches are
    /// kept; with `kind = "carried"` it is the site's spool that `tributary export` copies
    /// into carried files (at HQ, `tributary import` places them there for the applier).
    pub directory: PathBuf,
    /// The Kafka transport, when `kind = "kafka"`.
    pub kafka: Option<KafkaSection>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    #[default]
    Directory,
    Kafka,
    Carried,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// `host:port[,host:port...]`.
    pub brokers: String,
    /// Default `tributary.batches`.
    pub topic: Option<String>,
    /// HQ appliers' consumer group; default `tributary-hq`.
    pub group: Option<String>,
    /// For `tributary kafka init`; default 12.
    pub partitions: Option<i32>,
    /// For `tributary kafka init`; default 3.
    pub replication_factor: Option<i32>,
    /// Shipper: batches awaiting their delivery report at most (default 64).
    pub max_in_flight_batches: Option<usize>,
    /// Shipper: bytes of those batches at most (default 64 MiB).
    pub max_in_flight_bytes: Option<usize>,
    /// Applier: how long batches held by a gap wait before HQ's progress is checked for them
    /// again (default 5 000; doubled while nothing changes, up to a minute; at once when a
    /// batch of their site is applied).
    pub hold_retry_ms: Option<u64>,
    /// Applier, `--once`: stop after this long without a new batch (default 5 000).
    pub drain_idle_ms: Option<u64>,
    /// Extra librdkafka properties passed through (TLS: `security.protocol`,
    /// `ssl.ca.location`, ...; SASL: `sasl.mechanism`, `sasl.username`). Secrets are refused
    /// here: put them under `secrets`.
    #[serde(default)]
    pub librdkafka: std::collections::BTreeMap<String, toml::Value>,
    /// Secret librdkafka properties (`sasl.password`, `ssl.key.password`), each from a file
    /// or an environment variable: `"sasl.password" = { file = "kafka.password" }`.
    #[serde(default)]
    pub secrets: std::collections::BTreeMap<String, SecretSource>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// `IP:port` to serve Prometheus metrics on, e.g. `127.0.0.1:9464`. Keep it on loopback
    /// (or a private interface a scraper reaches): whoever reaches it reads the counters.
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// A file holding the secret (first line).
    pub file: Option<PathBuf>,
    /// An environment variable holding it, when no file is given.
    pub env: Option<String>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read configuration file {}", path.display()))?;
        let mut config: Config = toml::from_str(&text)
            .with_context(|| format!("configuration file {} is invalid", path.display()))?;
        config.origin = path.to_owned();
        Ok(config)
    }

    pub fn policy(&self) -> Result<Policy> {
        match &self.schema_map {
            Some(path) => Ok(Policy::load(&self.resolve(path))?),
            None => Ok(Policy::openmrs_core()),
        }
    }

    /// Relative paths in the file are relative to the file's directory.
    fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.origin.parent().unwrap_or(Path::new(".")).join(path)
        }
    }

    fn site(&self) -> Result<&SiteSection> {
        self.site.as_ref().with_context(|| {
            format!(
                "{} has no [site] section; capture and seed need one",
                self.origin.display()
            )
        })
    }

    fn hq(&self) -> Result<&HqSection> {
        self.hq.as_ref().with_context(|| {
            format!(
                "{} has no [hq] section; the applier and status need one",
                self.origin.display()
            )
        })
    }

    fn transport_dir(&self) -> Result<PathBuf> {
        let transport = self.transport.as_ref().with_context(|| {
            format!(
                "{} has no [transport] section (directory = ...)",
                self.origin.display()
            )
        })?;
        Ok(self.resolve(&transport.directory))
    }

    /// Which transport carries batches (directory unless `[transport] kind = "kafka"`).
    pub fn transport_kind(&self) -> TransportKind {
        self.transport
            .as_ref()
            .map_or(TransportKind::Directory, |t| t.kind)
    }

    /// The `[transport]` directory: the directory transport, or the Kafka spool (site) and
    /// rejected-batch store (HQ).
    pub fn transport_directory(&self) -> Result<PathBuf> {
        self.transport_dir()
    }

    /// How the site keeps its batches: files the applier reads from the shared directory,
    /// or, when they leave by Kafka, segment files the shipper reads.
    pub fn spool_format(&self) -> SpoolFormat {
        match self.transport_kind() {
            TransportKind::Directory => SpoolFormat::Files,
            TransportKind::Kafka | TransportKind::Carried => SpoolFormat::Segments,
        }
    }

    /// The site's spool, for reading (`ship`, `export`).
    pub fn open_spool(&self) -> Result<Box<dyn Spool>> {
        Ok(open_spool(
            self.spool_format(),
            &self.transport_dir()?,
            &self.site_id()?,
        )?)
    }

    /// The resolved `[transport.kafka]` section, with secrets read and every librdkafka
    /// property checked against Tributary's guarantees.
    pub fn kafka_settings(&self) -> Result<KafkaSettings> {
        let section = self.kafka_section()?;
        let mut settings = KafkaSettings::new(section.brokers.clone());
        if let Some(topic) = &section.topic {
            settings.topic = topic.clone();
        }
        if let Some(group) = &section.group {
            settings.group = group.clone();
        }
        if let Some(partitions) = section.partitions {
            settings.partitions = partitions;
        }
        if let Some(factor) = section.replication_factor {
            settings.replication_factor = factor;
        }
        for (name, value) in &section.librdkafka {
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                _ => bail!(
                    "transport.kafka.librdkafka.\"{name}\" must be a string, number or boolean"
                ),
            };
            check_property(name, &text)?;
            settings.properties.insert(name.clone(), text);
        }
        for (name, source) in &section.secrets {
            if !SECRET_PROPERTIES.contains(&name.as_str()) {
                bail!(
                    "transport.kafka.secrets.\"{name}\" is not a secret librdkafka property \
                     (one of {}); put it under transport.kafka.librdkafka",
                    SECRET_PROPERTIES.join(", ")
                );
            }
            let field = format!("transport.kafka.secrets.\"{name}\"");
            let secret = self.secret(source, &field)?;
            settings.secrets.insert(name.clone(), secret);
        }
        settings.validate()?;
        Ok(settings)
    }

    pub fn shipper_settings(&self) -> Result<ShipperSettings> {
        let section = self.kafka_section()?;
        let mut settings = ShipperSettings::default();
        if let Some(n) = section.max_in_flight_batches {
            if n == 0 {
                bail!("transport.kafka.max_in_flight_batches must be at least 1");
            }
            settings.max_in_flight_batches = n;
        }
        if let Some(n) = section.max_in_flight_bytes {
            settings.max_in_flight_bytes = n;
        }
        Ok(settings)
    }

    pub fn consumer_settings(&self) -> Result<ConsumerSettings> {
        let section = self.kafka_section()?;
        let mut settings = ConsumerSettings::default();
        if let Some(ms) = section.hold_retry_ms {
            settings.hold_retry = Duration::from_millis(ms);
        }
        if let Some(ms) = section.drain_idle_ms {
            settings.idle_window = Duration::from_millis(ms);
        }
        if let Some(hq) = &self.hq
            && let Some(ms) = hq.poll_interval_ms
        {
            settings.tick_interval = Duration::from_millis(ms.max(10));
        }
        Ok(settings)
    }

    fn kafka_section(&self) -> Result<&KafkaSection> {
        let transport = self
            .transport
            .as_ref()
            .with_context(|| format!("{} has no [transport] section", self.origin.display()))?;
        if transport.kind != TransportKind::Kafka {
            bail!(
                "{}: [transport] kind is not \"kafka\"; set kind = \"kafka\" and a \
                 [transport.kafka] section",
                self.origin.display()
            );
        }
        transport.kafka.as_ref().with_context(|| {
            format!(
                "{} has kind = \"kafka\" but no [transport.kafka] section (brokers = ...)",
                self.origin.display()
            )
        })
    }

    /// A secret from a file (first line) or an environment variable; never echoed.
    fn secret(&self, source: &SecretSource, field: &str) -> Result<String> {
        match (&source.file, &source.env) {
            (Some(file), _) => {
                let file = self.resolve(file);
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {field}.file {}", file.display()))?;
                Ok(text.lines().next().unwrap_or_default().to_owned())
            }
            (None, Some(var)) => std::env::var(var)
                .with_context(|| format!("{field}.env names {var}, which is not set")),
            (None, None) => bail!("{field} needs file = \"...\" or env = \"...\""),
        }
    }

    /// Where to serve `/metrics`: `flag` (`--metrics-listen`) when given, else
    /// `[metrics] listen`, else nowhere.
    pub fn metrics_listen(&self, flag: Option<SocketAddr>) -> Result<Option<SocketAddr>> {
        if flag.is_some() {
            return Ok(flag);
        }
        let Some(section) = &self.metrics else {
            return Ok(None);
        };
        let address = section
            .listen
            .trim()
            .parse::<SocketAddr>()
            .with_context(|| {
                format!(
                    "metrics.listen in {} is '{}', not an address; use IP:port, e.g. \
                 \"127.0.0.1:9464\" (loopback: only this machine can scrape it)",
                    self.origin.display(),
                    section.listen
                )
            })?;
        Ok(Some(address))
    }

    pub fn site_id(&self) -> Result<String> {
        Ok(self.site()?.id.clone())
    }

    pub fn site_database(&self) -> Result<(Opts, String)> {
        self.database(&self.site()?.database, "site.database")
    }

    pub fn hq_database(&self) -> Result<(Opts, String)> {
        self.database(&self.hq()?.database, "hq.database")
    }

    pub fn state_dir(&self) -> Result<PathBuf> {
        Ok(self.resolve(&self.site()?.state_dir))
    }

    /// Whether the file has a `[site]` section (`tributary status` then shows the capture
    /// checkpoint) and an `[hq]` section (status at HQ).
    pub fn has_site(&self) -> bool {
        self.site.is_some()
    }

    pub fn has_hq(&self) -> bool {
        self.hq.is_some()
    }

    /// `[site] resume_by`.
    pub fn resume_by(&self) -> Result<ResumeBy> {
        match self.site()?.resume_by.as_deref() {
            None | Some("gtid") => Ok(ResumeBy::Gtid),
            Some("file_position") => Ok(ResumeBy::FilePosition),
            Some(other) => bail!(
                "site.resume_by in {} is '{other}'; use \"gtid\" (the default: by GTID, or by \
                 binlog file/position where the source has no GTIDs) or \"file_position\" \
                 (always by binlog file/position)",
                self.origin.display()
            ),
        }
    }

    pub fn capture_settings(&self) -> Result<CaptureSettings> {
        let site = self.site()?;
        tributary_batch::validate_site_id(&site.id).context("site.id")?;
        let (source, database) = self.site_database()?;
        let start = match site.start_position.as_deref() {
            None | Some("current") => StartPosition::Current,
            Some("oldest") => StartPosition::Oldest,
            Some(other) => bail!("site.start_position is '{other}'; use 'current' or 'oldest'"),
        };
        let resume_by = self.resume_by()?;
        Ok(CaptureSettings {
            site_id: site.id.clone(),
            source,
            database,
            replica_server_id: site
                .replica_server_id
                .unwrap_or_else(|| default_replica_id(&site.id)),
            state_dir: self.resolve(&site.state_dir),
            outbox_dir: self.transport_dir()?,
            key_file: self.resolve(&site.key_file),
            policy: self.policy()?,
            max_batch_rows: site.max_batch_rows.unwrap_or(DEFAULT_MAX_BATCH_ROWS),
            transaction_part_rows: site
                .transaction_part_rows
                .unwrap_or(DEFAULT_TRANSACTION_PART_ROWS),
            flush_interval: site
                .flush_interval_ms
                .map_or(DEFAULT_FLUSH_INTERVAL, Duration::from_millis),
            keepalive_interval: site
                .keepalive_interval_ms
                .map_or(DEFAULT_KEEPALIVE_INTERVAL, Duration::from_millis),
            identity_cache_entries: site
                .identity_cache_entries
                .unwrap_or(DEFAULT_IDENTITY_CACHE_ENTRIES),
            snapshot_chunk_rows: site
                .seed_chunk_rows
                .unwrap_or(DEFAULT_SNAPSHOT_CHUNK_ROWS)
                .max(1),
            start,
            resume_by,
            spool_format: self.spool_format(),
            spool: SpoolLimits {
                max_bytes: site
                    .outbox_limit_mb
                    .map_or(DEFAULT_OUTBOX_LIMIT_BYTES, |mb| mb.saturating_mul(1 << 20)),
                disk_reserve_bytes: site
                    .disk_reserve_mb
                    .map_or(DEFAULT_DISK_RESERVE_BYTES, |mb| mb.saturating_mul(1 << 20)),
            },
        })
    }

    pub fn apply_settings(&self) -> Result<ApplySettings> {
        let hq = self.hq()?;
        let (opts, database) = self.hq_database()?;
        let key_dir = self.resolve(&hq.key_dir);
        let keyring = Keyring::load_dir(&key_dir)
            .with_context(|| format!("loading site keys from hq.key_dir {}", key_dir.display()))?;
        if keyring.is_empty() {
            bail!(
                "hq.key_dir {} holds no site keys (*.key); copy each site's key file there",
                key_dir.display()
            );
        }
        Ok(ApplySettings {
            hq: opts,
            database,
            inbox_dir: self.transport_dir()?,
            keyring,
            policy: self.policy()?,
            poll_interval: hq
                .poll_interval_ms
                .map_or(DEFAULT_POLL_INTERVAL, Duration::from_millis),
            resolver_cache_entries: hq
                .resolver_cache_entries
                .unwrap_or(DEFAULT_RESOLVER_CACHE_ENTRIES),
            retry_parked_interval: hq
                .retry_parked_interval_ms
                .map_or(DEFAULT_RETRY_PARKED_INTERVAL, Duration::from_millis),
            parked_report_age: self.parked_report_age()?,
            conflicts: self.conflict_policies()?,
            refresh: self.refresh_settings()?.map(Refresher::new).transpose()?,
        })
    }

    /// `[hq.conflicts]`: each table's conflict policy.
    pub fn conflict_policies(&self) -> Result<ConflictPolicies> {
        let section = self.hq()?.conflicts.clone().unwrap_or_default();
        Ok(ConflictPolicies {
            default: section.default,
            tables: section.tables,
            usernames: section.usernames,
        })
    }

    /// `[hq.refresh]`, resolved and checked; `None` when the section is absent (the default).
    pub fn refresh_settings(&self) -> Result<Option<RefreshSettings>> {
        let Some(section) = self.hq()?.refresh.as_ref() else {
            return Ok(None);
        };
        let field = "hq.refresh";
        let password = match (&section.password_file, &section.password_env) {
            (Some(file), _) => {
                let file = self.resolve(file);
                let text = std::fs::read_to_string(&file).with_context(|| {
                    format!("cannot read {field}.password_file {}", file.display())
                })?;
                text.lines().next().unwrap_or_default().to_owned()
            }
            (None, Some(var)) => std::env::var(var)
                .with_context(|| format!("{field}.password_env names {var}, which is not set"))?,
            (None, None) => bail!(
                "{field} needs password_file = \"...\" or password_env = \"...\" (the OpenMRS \
                 account's password; never in the file itself)"
            ),
        };
        let url = section.base_url.as_str();
        if url.contains('@') {
            bail!(
                "{field}.base_url contains credentials; remove them and use {field}.username with \
                 {field}.password_file or {field}.password_env"
            );
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!(
                "{field}.base_url '{url}' must be http:// or https:// followed by OpenMRS's host \
                 and context path (e.g. https://hq.example/openmrs), without credentials"
            );
        }
        let mut endpoints = Vec::new();
        if section.search_index.unwrap_or(true) {
            endpoints.push(Endpoint::SearchIndex);
        }
        if section.db_cache.unwrap_or(true) {
            endpoints.push(Endpoint::DbCache);
        }
        if endpoints.is_empty() {
            bail!(
                "{field}: search_index and db_cache are both false, so there is nothing to ask; \
                 remove the section to turn refreshing off"
            );
        }
        let at_least_one = |value: Option<u64>, name: &str, default: u64| -> Result<u64> {
            match value {
                Some(0) => bail!("{field}.{name} must be at least 1"),
                Some(v) => Ok(v),
                None => Ok(default),
            }
        };
        let settings = RefreshSettings {
            base_url: section.base_url.clone(),
            username: section.username.clone(),
            password,
            endpoints,
            batch_size: at_least_one(
                section.batch_size.map(|v| v as u64),
                "batch_size",
                DEFAULT_REFRESH_BATCH_SIZE as u64,
            )? as usize,
            max_queued_entities: at_least_one(
                section.max_queued_entities.map(|v| v as u64),
                "max_queued_entities",
                DEFAULT_REFRESH_MAX_QUEUED as u64,
            )? as usize,
            flush_interval: Duration::from_millis(at_least_one(
                section.flush_interval_ms,
                "flush_interval_ms",
                DEFAULT_REFRESH_FLUSH_INTERVAL.as_millis() as u64,
            )?),
            timeout: Duration::from_millis(at_least_one(
                section.timeout_ms,
                "timeout_ms",
                DEFAULT_REFRESH_TIMEOUT.as_millis() as u64,
            )?),
            max_attempts: at_least_one(
                section.max_attempts.map(u64::from),
                "max_attempts",
                u64::from(DEFAULT_REFRESH_MAX_ATTEMPTS),
            )?
            .try_into()
            .unwrap_or(u32::MAX),
            full_refresh_min_interval: section
                .full_refresh_min_interval_s
                .map_or(DEFAULT_FULL_REFRESH_MIN_INTERVAL, Duration::from_secs),
        };
        Ok(Some(settings))
    }

    /// `[hq] parked_report_age_s`: parked rows older than this are reported.
    pub fn parked_report_age(&self) -> Result<Duration> {
        Ok(self
            .hq()?
            .parked_report_age_s
            .map_or(DEFAULT_PARKED_REPORT_AGE, Duration::from_secs))
    }

    fn database(&self, section: &DatabaseSection, field: &str) -> Result<(Opts, String)> {
        let opts = Opts::from_url(&section.url)
            .with_context(|| format!("{field}.url is not a valid mysql:// URL"))?;
        if opts.pass().is_some() {
            bail!(
                "{field}.url contains a password; remove it and use {field}.password_file or \
                 {field}.password_env (passwords never go in URLs, logs or command lines)"
            );
        }
        let Some(database) = opts.db_name().map(str::to_owned) else {
            bail!("{field}.url names no database (mysql://user@host:port/<database>)");
        };
        let password =
            match (&section.password_file, &section.password_env) {
                (Some(file), _) => {
                    let file = self.resolve(file);
                    let text = std::fs::read_to_string(&file).with_context(|| {
                        format!("cannot read {field}.password_file {}", file.display())
                    })?;
                    Some(text.lines().next().unwrap_or_default().to_owned())
                }
                (None, Some(var)) => Some(std::env::var(var).with_context(|| {
                    format!("{field}.password_env names {var}, which is not set")
                })?),
                (None, None) => None,
            };
        Ok((OptsBuilder::from_opts(opts).pass(password).into(), database))
    }
}

/// A replica server id derived from the site id, in a range MariaDB servers rarely use.
fn default_replica_id(site_id: &str) -> u32 {
    let hash = site_id.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    });
    0x5452_0000 | (hash & 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("tributary.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_password_in_the_url_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            r#"
            [site]
            id = "clinic-a"
            state_dir = "state"
            key_file = "k.key"
            [site.database]
            url = "mysql://u:secret@127.0.0.1:3306/openmrs"
            "#,
        );
        let err = Config::load(&path)
            .unwrap()
            .site_database()
            .unwrap_err()
            .to_string();
        assert!(err.contains("contains a password"), "{err}");
        assert!(
            !err.contains("secret"),
            "the password itself is never echoed"
        );
    }

    #[test]
    fn unknown_fields_and_missing_sections_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "[hq]\nkey_dirr = \"x\"\n");
        let err = format!("{:#}", Config::load(&path).unwrap_err());
        assert!(err.contains("key_dirr"), "{err}");
        let path = write(dir.path(), "schema_map = \"x.toml\"\n");
        let err = Config::load(&path)
            .unwrap()
            .capture_settings()
            .unwrap_err()
            .to_string();
        assert!(err.contains("no [site] section"), "{err}");
    }

    #[test]
    fn resume_by_defaults_to_gtid_and_a_wrong_value_names_the_field_and_the_choices() {
        let dir = tempfile::tempdir().unwrap();
        let site = |extra: &str| {
            format!(
                "[site]\nid = \"clinic-a\"\nstate_dir = \"state\"\nkey_file = \"k.key\"\n{extra}\n\
                 [site.database]\nurl = \"mysql://u@127.0.0.1:3306/openmrs\"\n"
            )
        };
        let config = Config::load(&write(dir.path(), &site(""))).unwrap();
        assert_eq!(config.resume_by().unwrap(), ResumeBy::Gtid);
        let config =
            Config::load(&write(dir.path(), &site("resume_by = \"file_position\""))).unwrap();
        assert_eq!(config.resume_by().unwrap(), ResumeBy::FilePosition);
        let config = Config::load(&write(dir.path(), &site("resume_by = \"position\""))).unwrap();
        let err = config.resume_by().unwrap_err().to_string();
        for part in [
            "site.resume_by",
            "'position'",
            "\"gtid\"",
            "\"file_position\"",
        ] {
            assert!(err.contains(part), "{part}: {err}");
        }
        let err = format!(
            "{:#}",
            Config::load(&write(dir.path(), &site("resume = \"gtid\""))).unwrap_err()
        );
        assert!(err.contains("unknown field `resume`"), "{err}");
    }

    #[test]
    fn parked_report_age_defaults_to_a_day_and_is_read_in_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let hq = "[hq]\nkey_dir = \"k\"\n[hq.database]\nurl = \"mysql://u@h/db\"\n";
        let config = Config::load(&write(dir.path(), hq)).unwrap();
        assert_eq!(
            config.parked_report_age().unwrap(),
            DEFAULT_PARKED_REPORT_AGE
        );
        let config = Config::load(&write(
            dir.path(),
            &hq.replace("[hq]\n", "[hq]\nparked_report_age_s = 0\n"),
        ))
        .unwrap();
        assert_eq!(config.parked_report_age().unwrap(), Duration::ZERO);
        let err = format!(
            "{:#}",
            Config::load(&write(
                dir.path(),
                &hq.replace("[hq]\n", "[hq]\nparked_report_age = 5\n")
            ))
            .unwrap_err()
        );
        assert!(err.contains("parked_report_age"), "{err}");
    }

    #[test]
    fn refreshing_hq_openmrs_is_off_by_default_and_its_section_is_checked_by_field() {
        let dir = tempfile::tempdir().unwrap();
        let hq = "[hq]\nkey_dir = \"k\"\n[hq.database]\nurl = \"mysql://u@h/db\"\n";
        let config = Config::load(&write(dir.path(), hq)).unwrap();
        assert!(
            config.refresh_settings().unwrap().is_none(),
            "off by default"
        );

        std::fs::write(dir.path().join("openmrs.pw"), "Admin123\n").unwrap();
        let with = |section: &str| format!("{hq}[hq.refresh]\n{section}\n");
        let base = "base_url = \"http://127.0.0.1:8080/openmrs/\"\nusername = \"tributary\"\n\
                    password_file = \"openmrs.pw\"";
        let config = Config::load(&write(dir.path(), &with(base))).unwrap();
        let settings = config.refresh_settings().unwrap().unwrap();
        assert_eq!(settings.password, "Admin123");
        assert_eq!(
            settings.endpoints,
            [Endpoint::SearchIndex, Endpoint::DbCache]
        );
        assert_eq!(settings.batch_size, DEFAULT_REFRESH_BATCH_SIZE);
        assert_eq!(settings.flush_interval, DEFAULT_REFRESH_FLUSH_INTERVAL);
        assert_eq!(settings.max_attempts, DEFAULT_REFRESH_MAX_ATTEMPTS);
        assert!(!format!("{settings:?}").contains("Admin123"));

        let tuned = format!(
            "{base}\nsearch_index = false\nbatch_size = 7\nflush_interval_ms = 100\n\
             timeout_ms = 500\nmax_attempts = 2\nmax_queued_entities = 9\n\
             full_refresh_min_interval_s = 0"
        );
        let settings = Config::load(&write(dir.path(), &with(&tuned)))
            .unwrap()
            .refresh_settings()
            .unwrap()
            .unwrap();
        assert_eq!(settings.endpoints, [Endpoint::DbCache]);
        assert_eq!(
            (
                settings.batch_size,
                settings.max_queued_entities,
                settings.max_attempts
            ),
            (7, 9, 2)
        );
        assert_eq!(settings.timeout, Duration::from_millis(500));
        assert_eq!(settings.full_refresh_min_interval, Duration::ZERO);

        for (section, expected) in [
            (
                "base_url = \"http://h/openmrs\"\nusername = \"u\"".to_owned(),
                "password_file",
            ),
            (base.replace("http://", "ftp://"), "hq.refresh.base_url"),
            (
                base.replace("http://", "http://admin:Secret9@"),
                "contains credentials",
            ),
            (format!("{base}\nbatch_size = 0"), "hq.refresh.batch_size"),
            (
                format!("{base}\nsearch_index = false\ndb_cache = false"),
                "nothing to ask",
            ),
        ] {
            let err = format!(
                "{:#}",
                Config::load(&write(dir.path(), &with(&section)))
                    .unwrap()
                    .refresh_settings()
                    .unwrap_err()
            );
            assert!(err.contains(expected), "{expected}: {err}");
            assert!(!err.contains("Secret9"), "{err}");
        }
        let err = format!(
            "{:#}",
            Config::load(&write(dir.path(), &with(&format!("{base}\nbatch = 3")))).unwrap_err()
        );
        assert!(err.contains("batch"), "{err}");
    }

    const KAFKA_SITE: &str = r#"
        [transport]
        kind = "kafka"
        directory = "spool"
        [transport.kafka]
        brokers = "127.0.0.1:9092"
        partitions = 6
        [transport.kafka.librdkafka]
        "security.protocol" = "SASL_SSL"
        "sasl.mechanism" = "SCRAM-SHA-512"
        "sasl.username" = "clinic-a"
        "socket.keepalive.enable" = true
        [transport.kafka.secrets]
        "sasl.password" = { file = "kafka.pw" }
        "#;

    #[test]
    fn kafka_settings_pass_properties_through_and_read_secrets_from_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kafka.pw"), "s3cret\n").unwrap();
        let config = Config::load(&write(dir.path(), KAFKA_SITE)).unwrap();
        assert_eq!(config.transport_kind(), TransportKind::Kafka);
        let kafka = config.kafka_settings().unwrap();
        assert_eq!(kafka.topic, "tributary.batches");
        assert_eq!(kafka.partitions, 6);
        assert_eq!(kafka.properties["sasl.mechanism"], "SCRAM-SHA-512");
        assert_eq!(kafka.properties["socket.keepalive.enable"], "true");
        assert_eq!(kafka.secrets["sasl.password"], "s3cret");
        assert!(!format!("{kafka:?}").contains("s3cret"));
        assert_eq!(
            config.transport_directory().unwrap(),
            dir.path().join("spool")
        );
    }

    #[test]
    fn kafka_properties_that_break_guarantees_or_hold_secrets_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for (line, name) in [
            ("\"enable.idempotence\" = false", "enable.idempotence"),
            ("\"acks\" = 1", "acks"),
            ("\"enable.auto.commit\" = true", "enable.auto.commit"),
            ("\"sasl.password\" = \"inline-secret\"", "sasl.password"),
        ] {
            let text = format!(
                "[transport]\nkind = \"kafka\"\ndirectory = \"d\"\n[transport.kafka]\n\
                 brokers = \"b:9092\"\n[transport.kafka.librdkafka]\n{line}\n"
            );
            let err = format!(
                "{:#}",
                Config::load(&write(dir.path(), &text))
                    .unwrap()
                    .kafka_settings()
                    .unwrap_err()
            );
            assert!(err.contains(name), "{err}");
            assert!(!err.contains("inline-secret"), "{err}");
        }
        let text = "[transport]\ndirectory = \"d\"\n";
        let config = Config::load(&write(dir.path(), text)).unwrap();
        assert_eq!(config.transport_kind(), TransportKind::Directory);
        assert!(config.kafka_settings().is_err());
    }

    #[test]
    fn sites_keep_one_file_per_batch_only_where_the_applier_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        for (kind, format) in [
            ("directory", SpoolFormat::Files),
            ("kafka", SpoolFormat::Segments),
            ("carried", SpoolFormat::Segments),
        ] {
            let text = format!("[transport]\nkind = \"{kind}\"\ndirectory = \"d\"\n");
            let config = Config::load(&write(dir.path(), &text)).unwrap();
            assert_eq!(config.spool_format(), format, "{kind}");
        }
    }

    #[test]
    fn the_example_kafka_configurations_are_valid() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples");
        let site = Config::load(&examples.join("site-kafka.toml")).unwrap();
        assert_eq!(site.transport_kind(), TransportKind::Kafka);
        site.shipper_settings().unwrap();
        // The secret's variable is not set here: the error names it, nothing else is wrong.
        let err = format!("{:#}", site.kafka_settings().unwrap_err());
        assert!(err.contains("TRIBUTARY_KAFKA_PASSWORD"), "{err}");
        let metrics = Some("127.0.0.1:9464".parse().unwrap());
        assert_eq!(site.metrics_listen(None).unwrap(), metrics);
        let hq = Config::load(&examples.join("hq-kafka.toml")).unwrap();
        assert_eq!(hq.metrics_listen(None).unwrap(), metrics);
        let err = format!("{:#}", hq.kafka_settings().unwrap_err());
        assert!(err.contains("hq-client.key.password"), "{err}");
        hq.consumer_settings().unwrap();
    }

    #[test]
    fn metrics_listen_comes_from_the_flag_then_the_file_and_is_off_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let flag: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        let config = Config::load(&write(dir.path(), "")).unwrap();
        assert_eq!(config.metrics_listen(None).unwrap(), None);
        assert_eq!(config.metrics_listen(Some(flag)).unwrap(), Some(flag));
        let path = write(dir.path(), "[metrics]\nlisten = \"127.0.0.1:9464\"\n");
        let config = Config::load(&path).unwrap();
        assert_eq!(
            config.metrics_listen(None).unwrap(),
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(config.metrics_listen(Some(flag)).unwrap(), Some(flag));

        let path = write(dir.path(), "[metrics]\nlisten = \"localhost\"\n");
        let err = format!(
            "{:#}",
            Config::load(&path)
                .unwrap()
                .metrics_listen(None)
                .unwrap_err()
        );
        assert!(
            err.contains("metrics.listen") && err.contains("127.0.0.1:9464"),
            "names the field and an example: {err}"
        );
        let path = write(
            dir.path(),
            "[metrics]\nlisten = \"127.0.0.1:9464\"\nport = 1\n",
        );
        let err = format!("{:#}", Config::load(&path).unwrap_err());
        assert!(err.contains("port"), "{err}");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "hunter2\n").unwrap();
        let path = write(
            dir.path(),
            r#"
            [site]
            id = "clinic-a"
            state_dir = "state"
            key_file = "k.key"
            [site.database]
            url = "mysql://u@127.0.0.1:3306/openmrs"
            password_file = "pw"
            [transport]
            directory = "batches"
            "#,
        );
        let settings = Config::load(&path).unwrap().capture_settings().unwrap();
        assert_eq!(settings.state_dir, dir.path().join("state"));
        assert_eq!(settings.outbox_dir, dir.path().join("batches"));
        assert_eq!(settings.database, "openmrs");
        assert_eq!(settings.source.pass(), Some("hunter2"));
    }
}
