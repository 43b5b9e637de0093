//! The configuration file: typed, strict (`deny_unknown_fields`), with units in field names and
//! secrets by reference (a password file or an environment variable, never the file itself or
//! the command line). One file may hold the site part, the HQ part, or both; each command
//! checks that the part it needs is there and names what is missing.

mod hq;
mod integration;
#[cfg(test)]
mod properties;
mod site;
#[cfg(test)]
mod tests;
mod transport;

pub use hq::{
    ConflictsSection, ConsoleSection, DEFAULT_SITE_SILENT_AFTER_S, HqSection, RefreshSection,
};
pub use integration::{DEFAULT_TOPIC_PREFIX, IntegrationSection};
pub use site::SiteSection;
pub use transport::{KafkaSection, SecretSource, TransportKind, TransportSection};

use anyhow::{Context, Result, bail};
use mysql_async::{Opts, OptsBuilder};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tributary_schema::Policy;

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
    /// What travels beyond the schema map's tables; give a site and HQ the same section.
    pub sync: Option<SyncSection>,
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

/// `[sync]`: rows that travel although their table is kept at the site by default.
///
/// ```toml
/// [sync]
/// global_properties = ["addresshierarchy.*", "facility.code"]
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSection {
    /// Names of the `global_property` rows that travel (`*` matches any run of characters);
    /// the others stay at the site. Matched at HQ by name: a setting several sites send is
    /// one row at HQ, and a change from another site than the last writer is a conflict.
    #[serde(default)]
    pub global_properties: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// `IP:port` to serve Prometheus metrics on, e.g. `127.0.0.1:9464`. Keep it on loopback
    /// (or a private interface a scraper reaches): whoever reaches it reads the counters.
    pub listen: String,
}

/// Names the configuration file in an error about what it says (the field and the fix are in
/// the error itself): `config.apply_settings().in_file(&config)?`.
pub trait InFile<T> {
    fn in_file(self, config: &Config) -> Result<T>;
}

impl<T> InFile<T> for Result<T> {
    fn in_file(self, config: &Config) -> Result<T> {
        self.with_context(|| format!("configuration file {}", config.origin.display()))
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read configuration file {}", path.display()))?;
        Config::parse(&text, path)
    }

    /// A configuration from its text; `path` is where it came from (relative paths in it are
    /// relative to its directory).
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let mut config: Config = toml::from_str(text)
            .with_context(|| format!("configuration file {} is invalid", path.display()))?;
        config.origin = path.to_owned();
        Ok(config)
    }

    pub fn policy(&self) -> Result<Policy> {
        let mut policy = match &self.schema_map {
            Some(path) => Policy::load(&self.resolve(path))?,
            None => Policy::openmrs_core(),
        };
        if let Some(sync) = &self.sync {
            for pattern in &sync.global_properties {
                if pattern.trim().is_empty() || pattern.chars().any(char::is_control) {
                    bail!(
                        "sync.global_properties has {pattern:?}: give setting names such as \
                         \"facility.code\", or patterns with * such as \"addresshierarchy.*\""
                    );
                }
            }
            policy
                .global_properties
                .extend(sync.global_properties.iter().cloned());
        }
        Ok(policy)
    }

    /// Relative paths in the file are relative to the file's directory.
    pub(super) fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.origin.parent().unwrap_or(Path::new(".")).join(path)
        }
    }

    pub(super) fn site(&self) -> Result<&SiteSection> {
        self.site.as_ref().with_context(|| {
            format!(
                "{} has no [site] section; capture and seed need one",
                self.origin.display()
            )
        })
    }

    pub(super) fn hq(&self) -> Result<&HqSection> {
        self.hq.as_ref().with_context(|| {
            format!(
                "{} has no [hq] section; the applier and status need one",
                self.origin.display()
            )
        })
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

    pub(super) fn database(
        &self,
        section: &DatabaseSection,
        field: &str,
    ) -> Result<(Opts, String)> {
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
