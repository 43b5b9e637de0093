//! `[hq]`, `[hq.conflicts]`, `[hq.refresh]` and `[hq.console]`: the HQ database the applier
//! writes into (`[hq.integration]` is in `integration`).

use super::{Config, DatabaseSection};

/// A site silent this long is shown offline unless `[hq] site_silent_after_s` says otherwise.
pub const DEFAULT_SITE_SILENT_AFTER_S: u64 = 1_800;

/// Where the console listens unless `[hq.console] listen` says otherwise.
const DEFAULT_CONSOLE_LISTEN: &str = "127.0.0.1:8470";
use anyhow::{Context, Result, bail};
use mysql_async::Opts;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tributary_apply::{
    ApplySettings, ConflictPolicies, ConflictPolicy, DEFAULT_FULL_REFRESH_MIN_INTERVAL,
    DEFAULT_PARKED_REPORT_AGE, DEFAULT_POLL_INTERVAL, DEFAULT_REFRESH_BATCH_SIZE,
    DEFAULT_REFRESH_FLUSH_INTERVAL, DEFAULT_REFRESH_MAX_ATTEMPTS, DEFAULT_REFRESH_MAX_QUEUED,
    DEFAULT_REFRESH_TIMEOUT, DEFAULT_RESOLVER_CACHE_ENTRIES, DEFAULT_RETRY_PARKED_INTERVAL,
    Endpoint, RefreshSettings, Refresher, UsernamePolicy,
};
use tributary_batch::Keyring;

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
    /// A site HQ has not heard from for this long is shown offline (default 1800; an idle
    /// capture sends a keepalive every minute).
    pub site_silent_after_s: Option<u64>,
    /// What happens when a site changes a row that was edited at HQ, or written from another
    /// site, since that site last wrote it (`[hq.conflicts]`); by default both versions wait
    /// in the conflict queue for a person (`tributary conflicts`).
    pub conflicts: Option<ConflictsSection>,
    /// Ask HQ OpenMRS to refresh its caches and search index after applying; off when absent.
    pub refresh: Option<RefreshSection>,
    /// The admin console the applier serves; off when absent.
    pub console: Option<ConsoleSection>,
    /// The integration topics: applied changes published on Kafka; off when absent.
    pub integration: Option<super::IntegrationSection>,
}

/// `[hq.console]`: a web page served by `tributary apply` for the HQ data team: the sites,
/// parked rows, conflicts (resolved from the page) and rejected batches.
///
/// ```toml
/// [hq.console]
/// listen = "127.0.0.1:8470"                     # the default; keep it on loopback
/// token_file = "/etc/tributary/console.token"   # the sign-in token (first line), mode 0600
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSection {
    /// `IP:port`; default `127.0.0.1:8470`.
    pub listen: Option<String>,
    /// A file holding the token people sign in with (first line, at least 16 characters).
    pub token_file: PathBuf,
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

impl Config {
    pub fn hq_database(&self) -> Result<(Opts, String)> {
        self.database(&self.hq()?.database, "hq.database")
    }

    pub fn has_hq(&self) -> bool {
        self.hq.is_some()
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
            record_applied: hq.integration.is_some(),
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

    /// `[hq.console]`, resolved: where to serve the console and the token to sign in with;
    /// `None` when the section is absent.
    pub fn console_settings(&self) -> Result<Option<crate::console::ConsoleSettings>> {
        let hq = self.hq()?;
        let Some(section) = &hq.console else {
            return Ok(None);
        };
        let listen = section.listen.as_deref().unwrap_or(DEFAULT_CONSOLE_LISTEN);
        let listen = listen.parse().with_context(|| {
            format!("hq.console.listen '{listen}' is not an IP:port such as 127.0.0.1:8470")
        })?;
        let path = self.resolve(&section.token_file);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "hq.console.token_file: cannot read {}; write the console's sign-in token \
                 there (one line, mode 0600)",
                path.display()
            )
        })?;
        let token = text.lines().next().unwrap_or_default().trim().to_owned();
        if token.len() < 16 {
            bail!(
                "hq.console.token_file {}: the token must be at least 16 characters (e.g. \
                 `openssl rand -hex 24`)",
                path.display()
            );
        }
        let (hq_opts, database) = self.hq_database()?;
        Ok(Some(crate::console::ConsoleSettings {
            listen,
            token,
            hq: hq_opts,
            database,
            policy: self.policy()?,
            conflicts: self.conflict_policies()?,
            record_applied: self.integration_enabled(),
            site_silent_after_s: self.site_silent_after_s()?,
        }))
    }

    /// `[hq] site_silent_after_s`: a site silent this long is shown offline.
    pub fn site_silent_after_s(&self) -> Result<u64> {
        Ok(self
            .hq()?
            .site_silent_after_s
            .unwrap_or(DEFAULT_SITE_SILENT_AFTER_S))
    }

    /// `[hq] parked_report_age_s`: parked rows older than this are reported.
    pub fn parked_report_age(&self) -> Result<Duration> {
        Ok(self
            .hq()?
            .parked_report_age_s
            .map_or(DEFAULT_PARKED_REPORT_AGE, Duration::from_secs))
    }
}
