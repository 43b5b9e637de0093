//! `[transport]` and `[transport.kafka]`: how batches travel.

use super::Config;
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use tributary_kafka::{
    ConsumerSettings, KafkaSettings, SECRET_PROPERTIES, ShipperSettings, check_property,
};
use tributary_transport::{Spool, SpoolFormat, open_spool};

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
pub struct SecretSource {
    /// A file holding the secret (first line).
    pub file: Option<PathBuf>,
    /// An environment variable holding it, when no file is given.
    pub env: Option<String>,
}

impl Config {
    pub(super) fn transport_dir(&self) -> Result<PathBuf> {
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
        self.client_properties(
            "transport.kafka",
            &section.librdkafka,
            &section.secrets,
            &mut settings,
        )?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks and adds the pass-through librdkafka properties and reads the secrets of a
    /// Kafka client section (`field` names it in errors).
    pub(super) fn client_properties(
        &self,
        field: &str,
        librdkafka: &std::collections::BTreeMap<String, toml::Value>,
        secrets: &std::collections::BTreeMap<String, SecretSource>,
        settings: &mut KafkaSettings,
    ) -> Result<()> {
        for (name, value) in librdkafka {
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                _ => bail!("{field}.librdkafka.\"{name}\" must be a string, number or boolean"),
            };
            check_property(name, &text)?;
            settings.properties.insert(name.clone(), text);
        }
        for (name, source) in secrets {
            if !SECRET_PROPERTIES.contains(&name.as_str()) {
                bail!(
                    "{field}.secrets.\"{name}\" is not a secret librdkafka property (one of {}); \
                     put it under {field}.librdkafka",
                    SECRET_PROPERTIES.join(", ")
                );
            }
            let secret = self.secret(source, &format!("{field}.secrets.\"{name}\""))?;
            settings.secrets.insert(name.clone(), secret);
        }
        Ok(())
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

    pub(super) fn kafka_section(&self) -> Result<&KafkaSection> {
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
    pub(super) fn secret(&self, source: &SecretSource, field: &str) -> Result<String> {
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
}
