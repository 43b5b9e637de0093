//! librdkafka's callbacks as Tributary sees them: its log lines go to `tracing` at debug level
//! (they repeat once per connection attempt), and broker outages are reported once per
//! outage: a warning when the brokers become unreachable, an info line when a record gets
//! through again. A refused TLS handshake or SASL login is an error, logged once per reason.
//!
//! Invariant: nothing here logs record contents or configuration secrets (librdkafka's own
//! messages name brokers, topics and partitions only).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// Tracks whether the brokers are reachable, to log an outage once.
#[derive(Debug, Default)]
pub struct Reachability {
    /// When the current outage started, while there is one.
    outage_since: Mutex<Option<Instant>>,
    /// The last refusal of the connection's security settings (TLS or SASL), as librdkafka
    /// worded it.
    refusal: Mutex<Option<String>>,
}

impl Reachability {
    /// Records an unreachable broker; logs only at the start of an outage.
    pub fn unreachable(&self, role: &str, reason: &str) {
        let Ok(mut since) = self.outage_since.lock() else {
            return;
        };
        if since.is_none() {
            *since = Some(Instant::now());
            tracing::warn!(
                role,
                reason,
                "kafka brokers unreachable; batches wait where they are (spool or topic) and \
                 the client keeps reconnecting with backoff"
            );
        }
    }

    /// Records that a request went through; logs the end of an outage.
    pub fn reachable(&self, role: &str) {
        let Ok(mut since) = self.outage_since.lock() else {
            return;
        };
        if let Some(started) = since.take() {
            tracing::info!(
                role,
                outage_s = started.elapsed().as_secs(),
                "kafka brokers reachable again"
            );
        }
    }

    /// Records that the broker refused the connection's TLS or SASL settings; logs each
    /// new reason once (they repeat at every reconnect and are the operator's to fix).
    pub fn refused(&self, role: &str, reason: &str) {
        let Ok(mut refusal) = self.refusal.lock() else {
            return;
        };
        if refusal.as_deref() != Some(reason) {
            tracing::error!(
                role,
                reason,
                "the kafka connection's security settings were refused; check \
                 security.protocol and the ssl.* and sasl.* properties under \
                 [transport.kafka.librdkafka] (and their secrets)"
            );
            *refusal = Some(reason.to_owned());
        }
    }

    /// The last refusal of the security settings, if any.
    pub fn refusal(&self) -> Option<String> {
        self.refusal.lock().ok().and_then(|r| r.clone())
    }

    /// Whether an outage is going on.
    pub fn in_outage(&self) -> bool {
        self.outage_since
            .lock()
            .map(|s| s.is_some())
            .unwrap_or(false)
    }
}

/// The client context of the shipper's producer and `kafka init`.
#[derive(Debug)]
pub struct TransportContext {
    role: &'static str,
    reachability: Arc<Reachability>,
}

impl TransportContext {
    /// A context reporting outages of the client playing `role` into `reachability`.
    pub fn new(role: &'static str, reachability: Arc<Reachability>) -> Self {
        TransportContext { role, reachability }
    }
}

impl ClientContext for TransportContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        route_log(self.role, level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        route_error(self.role, &self.reachability, &error, reason);
    }
}

/// As the context of `kafka init`'s connection probe, which produces nothing.
impl rdkafka::producer::ProducerContext for TransportContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

pub(crate) fn route_log(role: &str, level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
            tracing::error!(role, facility = fac, "librdkafka: {message}")
        }
        _ => tracing::debug!(role, facility = fac, "librdkafka: {message}"),
    }
}

pub(crate) fn route_error(
    role: &str,
    reachability: &Reachability,
    error: &KafkaError,
    reason: &str,
) {
    match error.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::Resolve,
        ) => reachability.unreachable(role, reason),
        Some(
            RDKafkaErrorCode::SSL
            | RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed,
        ) => reachability.refused(role, reason),
        Some(RDKafkaErrorCode::Fatal) => {
            tracing::error!(role, %error, reason, "librdkafka fatal error")
        }
        _ => tracing::debug!(role, %error, reason, "librdkafka error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_tracked_from_first_error_to_first_success() {
        let r = Reachability::default();
        assert!(!r.in_outage());
        r.unreachable("ship", "connection refused");
        r.unreachable("ship", "connection refused");
        assert!(r.in_outage());
        r.reachable("ship");
        assert!(!r.in_outage());
    }

    #[test]
    fn a_refused_handshake_is_remembered_for_the_error_message() {
        let r = Reachability::default();
        assert_eq!(r.refusal(), None);
        r.refused("admin", "SSL handshake failed: certificate verify failed");
        r.refused("admin", "SSL handshake failed: certificate verify failed");
        assert_eq!(
            r.refusal().as_deref(),
            Some("SSL handshake failed: certificate verify failed")
        );
        assert!(!r.in_outage());
    }
}
