//! What the Kafka transport needs, resolved by the binary's configuration, and the rules for
//! librdkafka properties passed through from the configuration file.
//!
//! Invariants: a property that would break a delivery guarantee (idempotence, acks=all,
//! manual offset commits, ordering, no second compression) is refused with its name; the
//! properties Tributary sets itself cannot be overridden; secrets (passwords, private keys)
//! never come from the pass-through table (only from a file or the environment, resolved by
//! the binary) and never appear in `Debug` output or logs.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::error::KafkaTransportError;

/// Default topic of the sync stream.
pub const DEFAULT_TOPIC: &str = "tributary.batches";
/// Default consumer group of HQ appliers.
pub const DEFAULT_GROUP: &str = "tributary-hq";
/// Default partitions of the topic: sites spread over this many appliers at most.
pub const DEFAULT_PARTITIONS: i32 = 12;
/// Default replication factor (a production cluster of three brokers).
pub const DEFAULT_REPLICATION_FACTOR: i32 = 3;
/// Batches the shipper has handed to librdkafka without a delivery report yet.
pub const DEFAULT_MAX_IN_FLIGHT_BATCHES: usize = 64;
/// Bytes of those batches: bounds the shipper's memory during an outage (invariant 8).
pub const DEFAULT_MAX_IN_FLIGHT_BYTES: usize = 64 * 1024 * 1024;
/// Largest record the producer sends (a sealed batch), and the consumer accepts.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 32 * 1024 * 1024;

/// Record header naming the site (also the record key).
pub const HEADER_SITE: &str = "tributary-site";
/// Record header holding the batch's epoch (decimal).
pub const HEADER_EPOCH: &str = "tributary-epoch";
/// Record header holding the batch's sequence (decimal).
pub const HEADER_SEQUENCE: &str = "tributary-sequence";

/// Connection and topic settings shared by the shipper, the consumer and `kafka init`.
#[derive(Clone)]
pub struct KafkaSettings {
    /// `host:port[,host:port...]`.
    pub brokers: String,
    pub topic: String,
    /// Consumer group of HQ appliers.
    pub group: String,
    pub partitions: i32,
    pub replication_factor: i32,
    /// Extra librdkafka properties (TLS, SASL, tuning), already checked by [`check_property`].
    pub properties: BTreeMap<String, String>,
    /// Secret librdkafka properties (`sasl.password`, `ssl.key.password`), read from files or
    /// the environment. Never logged.
    pub secrets: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSettings")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("properties", &self.properties)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KafkaSettings {
    /// Settings with the defaults and no extra properties.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaSettings {
            brokers: brokers.into(),
            topic: DEFAULT_TOPIC.to_owned(),
            group: DEFAULT_GROUP.to_owned(),
            partitions: DEFAULT_PARTITIONS,
            replication_factor: DEFAULT_REPLICATION_FACTOR,
            properties: BTreeMap::new(),
            secrets: BTreeMap::new(),
        }
    }

    /// Checks every field; errors name the field.
    pub fn validate(&self) -> Result<(), KafkaTransportError> {
        let bad = |m: String| Err(KafkaTransportError::Config(m));
        if self.brokers.trim().is_empty() {
            return bad("transport.kafka.brokers is empty (host:port[,host:port...])".into());
        }
        if self.topic.is_empty()
            || self.topic.len() > 249
            || !self
                .topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return bad(format!(
                "transport.kafka.topic {:?} is not a Kafka topic name (1-249 of [A-Za-z0-9._-])",
                self.topic
            ));
        }
        if self.group.trim().is_empty() {
            return bad("transport.kafka.group is empty".into());
        }
        if self.partitions < 1 {
            return bad("transport.kafka.partitions must be at least 1".into());
        }
        if self.replication_factor < 1 {
            return bad("transport.kafka.replication_factor must be at least 1".into());
        }
        for (name, value) in &self.properties {
            check_property(name, value)?;
        }
        for name in self.secrets.keys() {
            if !SECRET_PROPERTIES.contains(&name.as_str()) {
                return bad(format!("{name} is not a secret librdkafka property"));
            }
        }
        Ok(())
    }
}

/// Shipper tuning.
#[derive(Debug, Clone)]
pub struct ShipperSettings {
    pub max_in_flight_batches: usize,
    pub max_in_flight_bytes: usize,
    /// How often an empty spool is looked at again.
    pub poll_interval: Duration,
    /// How often progress is logged while there is work.
    pub progress_interval: Duration,
    /// At shutdown, how long to wait for outstanding delivery reports.
    pub drain_timeout: Duration,
}

impl Default for ShipperSettings {
    fn default() -> Self {
        ShipperSettings {
            max_in_flight_batches: DEFAULT_MAX_IN_FLIGHT_BATCHES,
            max_in_flight_bytes: DEFAULT_MAX_IN_FLIGHT_BYTES,
            // A batch committed to an idle spool waits for the next look: at most this long.
            poll_interval: Duration::from_millis(50),
            progress_interval: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Secret properties: accepted only through `KafkaSettings::secrets` (a file or an
/// environment variable), never inline in the configuration file.
pub const SECRET_PROPERTIES: &[&str] = &[
    "sasl.password",
    "ssl.key.password",
    "ssl.keystore.password",
    "sasl.oauthbearer.client.secret",
];

/// Properties Tributary sets from its own fields or for its guarantees.
const OWNED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "use transport.kafka.brokers"),
    ("metadata.broker.list", "use transport.kafka.brokers"),
    ("group.id", "use transport.kafka.group"),
    (
        "transactional.id",
        "Kafka transactions are not used: the applier's dedupe gives exactly-once",
    ),
    (
        "enable.auto.offset.store",
        "the consumer commits offsets itself, after HQ committed the batch",
    ),
    (
        "ssl.key.pem",
        "private keys come from a file: use ssl.key.location",
    ),
    (
        "sasl.oauthbearer.config",
        "may hold a secret; not supported",
    ),
];

/// Checks one pass-through property: refuses secrets, Tributary's own properties and values
/// that break a guarantee, naming the property.
pub fn check_property(name: &str, value: &str) -> Result<(), KafkaTransportError> {
    let refuse = |why: &str| {
        Err(KafkaTransportError::Config(format!(
            "transport.kafka.librdkafka.\"{name}\" is refused: {why}"
        )))
    };
    let lower = value.trim().to_ascii_lowercase();
    if SECRET_PROPERTIES.contains(&name) || name.contains("password") || name.contains("secret") {
        return refuse(
            "secrets never go in the configuration file; use transport.kafka.secrets with a \
             file or an environment variable",
        );
    }
    if let Some((_, why)) = OWNED_PROPERTIES.iter().find(|(p, _)| *p == name) {
        return refuse(why);
    }
    match name {
        "enable.idempotence" if lower != "true" => refuse(
            "the shipper needs the idempotent producer (no duplicates or reordering on retry)",
        ),
        "acks" | "request.required.acks" if !matches!(lower.as_str(), "all" | "-1") => refuse(
            "a batch is removed from the spool only once every in-sync replica has it (acks=all)",
        ),
        "enable.auto.commit" if lower != "false" => refuse(
            "offsets are committed only after HQ committed the batch (enable.auto.commit=false)",
        ),
        "compression.type" | "compression.codec" if lower != "none" => refuse(
            "batches are already zstd-compressed and encrypted; a second compression only costs CPU",
        ),
        "max.in.flight.requests.per.connection" | "max.in.flight" => match lower.parse::<u32>() {
            Ok(1..=5) => Ok(()),
            _ => refuse("it must be 1-5 to keep each site's batches in order"),
        },
        "message.timeout.ms" | "delivery.timeout.ms" if lower != "0" => refuse(
            "a finite delivery timeout lets a later batch overtake an earlier one; the shipper \
             retries until the broker takes the batch",
        ),
        "isolation.level" | "enable.partition.eof" => Ok(()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarantee_breaking_properties_are_refused_by_name() {
        for (name, value) in [
            ("enable.idempotence", "false"),
            ("acks", "1"),
            ("request.required.acks", "0"),
            ("enable.auto.commit", "true"),
            ("compression.type", "zstd"),
            ("max.in.flight.requests.per.connection", "6"),
            ("message.timeout.ms", "300000"),
            ("sasl.password", "hunter2"),
            ("ssl.key.password", "hunter2"),
            ("bootstrap.servers", "x:9092"),
            ("transactional.id", "t"),
        ] {
            let err = check_property(name, value).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
            assert!(!err.contains("hunter2"), "a secret was echoed: {err}");
        }
        for (name, value) in [
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("acks", "-1"),
            ("enable.auto.commit", "false"),
            ("compression.type", "none"),
            ("max.in.flight.requests.per.connection", "1"),
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "clinic-a"),
            ("ssl.ca.location", "/etc/ssl/ca.pem"),
        ] {
            check_property(name, value).unwrap();
        }
    }

    #[test]
    fn validate_names_the_field_and_debug_hides_secrets() {
        let mut settings = KafkaSettings::new("127.0.0.1:9092");
        settings.validate().unwrap();
        settings.topic = "bad topic".into();
        assert!(
            settings
                .validate()
                .unwrap_err()
                .to_string()
                .contains("transport.kafka.topic")
        );
        settings.topic = DEFAULT_TOPIC.into();
        settings.partitions = 0;
        assert!(
            settings
                .validate()
                .unwrap_err()
                .to_string()
                .contains("partitions")
        );
        settings.partitions = 3;
        settings
            .secrets
            .insert("sasl.password".into(), "hunter2".into());
        settings.validate().unwrap();
        let debug = format!("{settings:?}");
        assert!(
            debug.contains("sasl.password") && !debug.contains("hunter2"),
            "{debug}"
        );
    }
}
