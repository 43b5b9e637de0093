//! The Kafka transport's errors, classified once.
//!
//! - transient: the broker or the spool is unavailable for now (the shipper and the consumer
//!   retry with backoff; nothing is lost because the spool entry or the uncommitted offset
//!   stays);
//! - fatal: configuration an operator must change, a missing topic, a batch the broker will
//!   never take (too large), or a librdkafka fatal error (the idempotent producer's state was
//!   lost). The command stops and says what to do.
//!
//! Messages name topics, partitions, offsets and batch positions, never batch contents or
//! configuration secrets.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use thiserror::Error;
use tributary_transport::TransportError;

#[derive(Debug, Error)]
pub enum KafkaTransportError {
    /// A configuration value breaks a guarantee or is malformed.
    #[error("kafka configuration: {0}")]
    Config(String),

    /// The spool could not be read or updated.
    #[error("spool: {0}")]
    Spool(#[from] TransportError),

    /// A spool file is not a batch of this site.
    #[error(
        "spool batch epoch {epoch} sequence {sequence} is not a batch of site '{site_id}' \
         ({problem}); move it out of the spool directory and check which capture writes there"
    )]
    ForeignBatch {
        site_id: String,
        epoch: u64,
        sequence: u64,
        problem: String,
    },

    /// The broker refused a batch for good.
    #[error(
        "kafka refused batch epoch {epoch} sequence {sequence} of site '{site_id}' for topic \
         '{topic}': {source}; {remedy}"
    )]
    Undeliverable {
        site_id: String,
        epoch: u64,
        sequence: u64,
        topic: String,
        remedy: &'static str,
        #[source]
        source: Box<KafkaError>,
    },

    /// A client call failed.
    #[error("kafka {operation}: {source}")]
    Client {
        operation: &'static str,
        #[source]
        source: Box<KafkaError>,
    },

    /// The topic exists with fewer partitions than configured, or cannot be created.
    #[error("kafka topic '{topic}': {problem}")]
    Topic { topic: String, problem: String },
}

impl KafkaTransportError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            KafkaTransportError::Spool(e) => e.is_transient(),
            KafkaTransportError::Client { source, .. } => is_transient_kafka(source),
            KafkaTransportError::Config(_)
            | KafkaTransportError::ForeignBatch { .. }
            | KafkaTransportError::Undeliverable { .. }
            | KafkaTransportError::Topic { .. } => false,
        }
    }

    /// What an operator can do about it, when the error is one they can fix (a missing
    /// topic, missing rights) even though the transport keeps retrying.
    pub fn remedy(&self) -> Option<&'static str> {
        use RDKafkaErrorCode as C;
        match self {
            KafkaTransportError::Undeliverable { remedy, .. } => Some(remedy),
            KafkaTransportError::Client { source, .. } => match code_of(source) {
                Some(
                    C::UnknownTopicOrPartition
                    | C::UnknownTopic
                    | C::TopicAuthorizationFailed
                    | C::ClusterAuthorizationFailed,
                ) => Some(remedy_for(source)),
                _ => None,
            },
            _ => None,
        }
    }

    pub(crate) fn client(operation: &'static str) -> impl FnOnce(KafkaError) -> Self {
        move |source| KafkaTransportError::Client {
            operation,
            source: Box::new(source),
        }
    }
}

/// The error code inside a client error, when it carries one.
pub(crate) fn code_of(error: &KafkaError) -> Option<RDKafkaErrorCode> {
    error.rdkafka_error_code()
}

/// librdkafka errors that say "not now" rather than "never": broker transport, timeouts,
/// coordinator moves, a full local queue.
pub(crate) fn is_transient_kafka(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    if matches!(error, KafkaError::Canceled) {
        // The client went away before answering (shutdown, a new session).
        return true;
    }
    match code_of(error) {
        Some(code) => matches!(
            code,
            C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::OperationTimedOut
                | C::RequestTimedOut
                | C::QueueFull
                | C::MessageTimedOut
                | C::NotCoordinator
                | C::CoordinatorNotAvailable
                | C::CoordinatorLoadInProgress
                | C::NotLeaderForPartition
                | C::LeaderNotAvailable
                | C::NetworkException
                | C::NotEnoughReplicas
                | C::NotEnoughReplicasAfterAppend
                | C::RebalanceInProgress
                | C::UnknownTopicOrPartition
                | C::Resolve
                | C::WaitingForCoordinator
                | C::PurgeQueue
                | C::PurgeInflight
        ),
        None => false,
    }
}

/// What an operator does about a batch the broker refused for good.
pub(crate) fn remedy_for(error: &KafkaError) -> &'static str {
    use RDKafkaErrorCode as C;
    match code_of(error) {
        Some(C::MessageSizeTooLarge) | Some(C::InvalidMessageSize) => {
            "raise the topic's max.message.bytes (and the producer's message.max.bytes) or \
             lower site.max_batch_rows"
        }
        Some(C::UnknownTopicOrPartition) | Some(C::UnknownTopic) => {
            "create the topic with 'tributary kafka init'"
        }
        Some(C::TopicAuthorizationFailed) | Some(C::ClusterAuthorizationFailed) => {
            "grant this site's Kafka principal Write (and IdempotentWrite) on the topic"
        }
        _ => {
            "check the broker's logs; the batch stays in the spool and is sent again at the next start"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_outages_are_transient_and_refusals_are_not() {
        let down = KafkaTransportError::Client {
            operation: "deliver",
            source: Box::new(KafkaError::MessageProduction(
                RDKafkaErrorCode::AllBrokersDown,
            )),
        };
        assert!(down.is_transient());
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(!is_transient_kafka(&too_large));
        assert!(remedy_for(&too_large).contains("max.message.bytes"));
        assert!(!KafkaTransportError::Config("x".into()).is_transient());
    }
}
