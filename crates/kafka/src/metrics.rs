//! The shipper's Prometheus metrics, registered once in the default registry (the binary
//! serves them on `/metrics`). Names follow `tributary_ship_<what>_<unit>[_total]`;
//! METRICS.md says what each one answers and when to alert.
//!
//! A shipper serves one site's spool, so there is no site label (the scrape target names the
//! site). The counters move with [`ShipperProgress`](crate::ShipperProgress), which updates
//! both.

use prometheus::{IntCounter, IntGauge};
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
}
