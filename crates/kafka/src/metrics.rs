//! The Kafka transport's Prometheus metrics, registered once in the default registry (the
//! binary serves them on `/metrics`): the shipper's (`tributary_ship_...`) and HQ's consumer's
//! (`tributary_apply_kafka_...`). METRICS.md says what each one answers and when to alert.
//!
//! A shipper serves one site's spool, so there is no site label (the scrape target names the
//! site). The counters move with [`ShipperProgress`](crate::ShipperProgress), which updates
//! both. The consumer's are labelled by partition (as many as the topic has) and by a closed
//! set of outcomes; site ids never become labels here.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use std::sync::LazyLock;

static BATCHES: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(IntCounter::new(
        "tributary_ship_batches_total",
        "Batches the brokers acknowledged (acks=all) and the shipper removed from the spool.",
    ))
});

static BYTES: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(IntCounter::new(
        "tributary_ship_bytes_total",
        "Bytes of those batches.",
    ))
});

static IN_FLIGHT: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(IntGauge::new(
        "tributary_ship_in_flight_batches",
        "Batches handed to the producer and still awaiting their delivery report.",
    ))
});

static RECORDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(IntCounterVec::new(
        Opts::new(
            "tributary_apply_kafka_records_total",
            "Records the consumer took from the topic, by outcome: done (applied, duplicate or \
             rejected, committed at HQ), held (a gap: an earlier batch of its site is missing), \
             skipped (read again on a pass back over held batches, finished before).",
        ),
        &["outcome"],
    ))
});

static HELD: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    registered(IntGaugeVec::new(
        Opts::new(
            "tributary_apply_kafka_held_lineages",
            "Site epochs held at a gap in this partition (nothing from the first held batch \
             on is committed; the partition's other sites flow on).",
        ),
        &["partition"],
    ))
});

static COMMITTED: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    registered(IntGaugeVec::new(
        Opts::new(
            "tributary_apply_kafka_committed_offset",
            "The offset the consumer group resumes this partition from, as last committed.",
        ),
        &["partition"],
    ))
});

/// The consumer's metrics: every outcome's series at zero before the first record.
pub fn register_consumer() {
    for outcome in ["done", "held", "skipped"] {
        RECORDS.with_label_values(&[outcome]);
    }
    LazyLock::force(&HELD);
    LazyLock::force(&COMMITTED);
}

/// What became of a record the consumer took.
pub(crate) fn record(outcome: &'static str) {
    RECORDS.with_label_values(&[outcome]).inc();
}

/// A partition's held lineages, now.
pub(crate) fn held(partition: i32, lineages: usize) {
    HELD.with_label_values(&[&partition.to_string()])
        .set(i64::try_from(lineages).unwrap_or(i64::MAX));
}

/// A partition's commit point, as just requested.
pub(crate) fn committed(partition: i32, next: i64) {
    COMMITTED
        .with_label_values(&[&partition.to_string()])
        .set(next);
}

/// Registers every shipper metric, so a scrape shows them (at zero) before the first batch.
pub fn register() {
    LazyLock::force(&BATCHES);
    LazyLock::force(&BYTES);
    LazyLock::force(&IN_FLIGHT);
}

pub(crate) fn batch_sent() {
    IN_FLIGHT.inc();
}

pub(crate) fn batch_reported() {
    IN_FLIGHT.dec();
}

pub(crate) fn batch_delivered(bytes: u64) {
    BATCHES.inc();
    BYTES.inc_by(bytes);
}

/// Registers `metric` in the default registry. The names and help texts are constants of
/// this module (the test below registers every one), so an error here is a programming
/// error: it is logged and the metric still counts, unserved, rather than stopping the shipper.
fn registered<M>(metric: prometheus::Result<M>) -> M
where
    M: prometheus::core::Collector + Clone + 'static,
{
    let metric = metric.expect("metric names and help texts are valid constants");
    if let Err(e) = prometheus::register(Box::new(metric.clone())) {
        tracing::error!(error = %e, "a shipper metric could not be registered");
    }
    metric
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ShipperProgress;

    #[test]
    fn shipper_progress_moves_the_served_metrics() {
        register();
        let names: Vec<String> = prometheus::gather()
            .iter()
            .map(|family| family.name().to_owned())
            .collect();
        for name in [
            "tributary_ship_batches_total",
            "tributary_ship_bytes_total",
            "tributary_ship_in_flight_batches",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
        let (batches, bytes) = (BATCHES.get(), BYTES.get());
        let progress = ShipperProgress::default();
        progress.sent();
        assert_eq!(IN_FLIGHT.get(), 1);
        progress.reported();
        progress.delivered(1_000);
        assert_eq!(IN_FLIGHT.get(), 0);
        assert_eq!((BATCHES.get(), BYTES.get()), (batches + 1, bytes + 1_000));
    }

    #[test]
    fn consumer_metrics_are_served_under_their_documented_names() {
        register_consumer();
        record("held");
        held(3, 2);
        committed(3, 41);
        let names: Vec<String> = prometheus::gather()
            .iter()
            .map(|family| family.name().to_owned())
            .collect();
        for name in [
            "tributary_apply_kafka_records_total",
            "tributary_apply_kafka_held_lineages",
            "tributary_apply_kafka_committed_offset",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
        assert!(RECORDS.with_label_values(&["held"]).get() >= 1);
        assert_eq!(HELD.with_label_values(&["3"]).get(), 2);
        assert_eq!(COMMITTED.with_label_values(&["3"]).get(), 41);
    }
}
