//! `[hq.integration]`: the integration topics, HQ's applied changes published on Kafka in the
//! Debezium envelope for other systems (off when absent).

use super::Config;
use super::transport::SecretSource;
use crate::integration_publisher::IntegrationSettings;
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;
use tributary_apply::integration::{EnvelopeSettings, MaskAction, Masking};
use tributary_kafka::KafkaSettings;

/// The first part of every integration topic's name unless `topic_prefix` says otherwise.
pub const DEFAULT_TOPIC_PREFIX: &str = "tributary";
/// Partitions of each integration topic the publisher creates.
const DEFAULT_PARTITIONS: i32 = 1;
/// How often the publisher looks for newly applied changes.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// The shortest hash key accepted.
const MIN_HASH_KEY_CHARS: usize = 16;

/// `[hq.integration]`: every change HQ applies (batches, released parked rows, conflicts
/// resolved for the site) is published on `<topic_prefix>.<database>.<table>`, keyed by the
/// row's identity, with a BEGIN and an END event per HQ transaction on
/// `<topic_prefix>.transaction` (docs/integration-topics.md).
///
/// ```toml
/// [hq.integration]
/// brokers = "kafka-1:9092,kafka-2:9092"
/// topic_prefix = "tributary"                  # the default
/// tables = ["patient", "encounter", "obs"]    # default: every synced table
/// hash_key_file = "/etc/tributary/mask.key"   # needed by "hash" rules (16+ characters)
///
/// [hq.integration.mask]
/// "person_name.given_name" = "hash"           # a keyed hash instead of the value
/// "person_name.family_name" = "hash"
/// "person_address.address1" = "drop"         # left out of the event
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationSection {
    /// `host:port[,host:port...]`.
    pub brokers: String,
    /// First part of the topic names (Debezium's `topic.prefix`); default `tributary`.
    pub topic_prefix: Option<String>,
    /// Tables published; default every table the schema map syncs.
    pub tables: Option<Vec<String>>,
    /// Partitions of the topics the publisher creates (default 1; a row's events always go
    /// to one partition, keyed by its identity).
    pub partitions: Option<i32>,
    /// Replication factor of the topics it creates (default 3).
    pub replication_factor: Option<i32>,
    /// How often the publisher looks for newly applied changes (default 500).
    pub poll_interval_ms: Option<u64>,
    /// A file holding the key of the masking hash (first line, at least 16 characters).
    pub hash_key_file: Option<PathBuf>,
    /// `"table.column" = "hash"` or `"drop"`.
    #[serde(default)]
    pub mask: BTreeMap<String, MaskAction>,
    /// Extra librdkafka properties passed through (TLS, SASL), as for `[transport.kafka]`.
    #[serde(default)]
    pub librdkafka: BTreeMap<String, toml::Value>,
    /// Secret librdkafka properties, each from a file or an environment variable.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
}

impl Config {
    /// Whether `[hq.integration]` is there (the applier then records what it writes).
    pub fn integration_enabled(&self) -> bool {
        self.hq.as_ref().is_some_and(|hq| hq.integration.is_some())
    }

    /// `[hq.integration]`, resolved and checked; `None` when the section is absent.
    pub fn integration_settings(&self) -> Result<Option<IntegrationSettings>> {
        let hq = self.hq()?;
        let Some(section) = &hq.integration else {
            return Ok(None);
        };
        let field = "hq.integration";
        let (hq_opts, database) = self.hq_database()?;
        let topic_prefix = section
            .topic_prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_TOPIC_PREFIX.to_owned());
        let envelope = EnvelopeSettings {
            topic_prefix,
            database,
            tables: section
                .tables
                .as_ref()
                .map(|t| t.iter().cloned().collect::<BTreeSet<_>>()),
            masking: self.masking(section)?,
            published_columns: None,
        };
        let mut kafka = KafkaSettings::new(section.brokers.clone());
        kafka.topic = tributary_apply::integration::transaction_topic(&envelope);
        kafka.partitions = section.partitions.unwrap_or(DEFAULT_PARTITIONS);
        if let Some(factor) = section.replication_factor {
            kafka.replication_factor = factor;
        }
        self.client_properties(field, &section.librdkafka, &section.secrets, &mut kafka)?;
        kafka.validate().map_err(|e| {
            anyhow::anyhow!(
                "{field}: {e} (the topics are named <topic_prefix>.<database>.<table>; check \
                 topic_prefix)"
            )
        })?;
        let poll_interval = match section.poll_interval_ms {
            Some(0) => bail!("{field}.poll_interval_ms must be at least 1"),
            Some(ms) => Duration::from_millis(ms),
            None => DEFAULT_POLL_INTERVAL,
        };
        Ok(Some(IntegrationSettings {
            kafka,
            envelope,
            hq: hq_opts,
            policy: self.policy()?,
            poll_interval,
        }))
    }

    fn masking(&self, section: &IntegrationSection) -> Result<Masking> {
        let mut rules = BTreeMap::new();
        for (name, action) in &section.mask {
            let Some((table, column)) = name.split_once('.') else {
                bail!(
                    "hq.integration.mask.\"{name}\": name a column as \"table.column\", e.g. \
                     \"person_name.given_name\" = \"hash\""
                );
            };
            rules.insert((table.to_owned(), column.to_owned()), *action);
        }
        let hashes = rules.values().any(|a| *a == MaskAction::Hash);
        let key = match (&section.hash_key_file, hashes) {
            (Some(file), _) => {
                let path = self.resolve(file);
                let text = std::fs::read_to_string(&path).with_context(|| {
                    format!(
                        "hq.integration.hash_key_file: cannot read {}; write the masking key \
                         there (one line, mode 0600, e.g. `openssl rand -hex 32`)",
                        path.display()
                    )
                })?;
                let key = text.lines().next().unwrap_or_default().trim().to_owned();
                if key.chars().count() < MIN_HASH_KEY_CHARS {
                    bail!(
                        "hq.integration.hash_key_file {}: the key must be at least \
                         {MIN_HASH_KEY_CHARS} characters (e.g. `openssl rand -hex 32`)",
                        path.display()
                    );
                }
                key.into_bytes()
            }
            (None, true) => bail!(
                "hq.integration.mask hashes columns but hq.integration.hash_key_file is not \
                 set; name a file holding the masking key (one line, at least \
                 {MIN_HASH_KEY_CHARS} characters, e.g. `openssl rand -hex 32`)"
            ),
            (None, false) => Vec::new(),
        };
        Ok(Masking::new(rules, key))
    }
}
