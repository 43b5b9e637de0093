//! librdkafka client configurations for the shipper's producer, the applier's consumer and
//! the admin client: the pass-through properties first, then the properties Tributary's
//! guarantees rest on, which always win.

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};

use crate::settings::{DEFAULT_MAX_RECORD_BYTES, KafkaSettings};

/// Common part: brokers, pass-through properties and secrets.
fn base(settings: &KafkaSettings, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (name, value) in settings.properties.iter().chain(&settings.secrets) {
        config.set(name, value);
    }
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", client_id)
        .set_log_level(RDKafkaLogLevel::Info);
    config
}

/// The shipper's idempotent producer: acks from every in-sync replica, at most 5 requests in
/// flight (librdkafka keeps order with idempotence up to 5), no compression (batches are
/// already zstd-compressed and sealed), and no local delivery timeout: a batch is retried
/// until the broker takes it, so a later batch never overtakes an earlier one.
pub fn producer(settings: &KafkaSettings, site_id: &str) -> ClientConfig {
    let mut config = base(settings, &format!("tributary-ship-{site_id}"));
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("compression.type", "none")
        .set("message.timeout.ms", "0")
        .set("message.max.bytes", DEFAULT_MAX_RECORD_BYTES.to_string())
        .set("linger.ms", "5");
    config
}

/// The applier's consumer: a group member that commits offsets itself (after HQ committed the
/// batch), starting at the beginning of partitions the group never committed.
pub fn consumer(settings: &KafkaSettings) -> ClientConfig {
    let mut config = base(settings, "tributary-apply");
    if !settings.properties.contains_key("fetch.wait.max.ms") {
        // A default, not a guarantee: a broker that holds every fetch for the whole wait
        // when the partition is idle (tansu does) would add librdkafka's 500 ms to each
        // batch's latency; 100 ms costs a few small requests a second.
        config.set("fetch.wait.max.ms", "100");
    }
    config
        .set("group.id", &settings.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // Bounds what librdkafka prefetches per partition (invariant 8).
        .set("queued.max.messages.kbytes", "65536");
    config
}

/// The integration topics' producer at HQ: idempotent, acks from every in-sync replica,
/// zstd (change events are JSON), and a bounded delivery timeout: the publisher sends an
/// outbox entry again when any of its events failed.
pub fn event_producer(settings: &KafkaSettings) -> ClientConfig {
    let mut config = base(settings, "tributary-integration");
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("compression.type", "zstd")
        .set("message.timeout.ms", "60000")
        .set("message.max.bytes", DEFAULT_MAX_RECORD_BYTES.to_string())
        .set("linger.ms", "20");
    config
}

/// `tributary kafka init`'s admin client.
pub fn admin(settings: &KafkaSettings) -> ClientConfig {
    base(settings, "tributary-admin")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarantees_win_over_pass_through_properties() {
        let mut settings = KafkaSettings::new("b:9092");
        settings
            .properties
            .insert("security.protocol".into(), "SASL_SSL".into());
        settings
            .properties
            .insert("enable.idempotence".into(), "false".into());
        let p = producer(&settings, "clinic-a");
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(p.get("compression.type"), Some("none"));
        assert_eq!(p.get("security.protocol"), Some("SASL_SSL"));
        let c = consumer(&settings);
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("group.id"), Some("tributary-hq"));
    }

    #[test]
    fn the_consumer_fetch_wait_is_short_unless_configured() {
        let mut settings = KafkaSettings::new("b:9092");
        assert_eq!(consumer(&settings).get("fetch.wait.max.ms"), Some("100"));
        settings
            .properties
            .insert("fetch.wait.max.ms".into(), "500".into());
        assert_eq!(consumer(&settings).get("fetch.wait.max.ms"), Some("500"));
    }
}
