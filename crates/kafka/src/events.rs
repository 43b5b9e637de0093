//! The integration topics' producer: sends HQ's change events (already built as keyed JSON
//! records) and reports whether the broker took every one of them.
//!
//! The caller sends one outbox entry's events (or a few entries') at a time and removes the
//! entries only after [`EventProducer::publish`] returned `Ok`: at least once. A failure
//! anywhere in the round fails the round, which the caller sends again whole: consumers may
//! see an event twice, never miss one. Events of one key go to one partition in send order
//! (idempotent producer, at most 5 requests in flight).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::client_config;
use crate::context::{Reachability, TransportContext};
use crate::error::KafkaTransportError;
use crate::settings::KafkaSettings;

/// How long to let librdkafka drain its queue when it is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(50);

/// One record for an integration topic.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub topic: &'a str,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

pub struct EventProducer {
    producer: FutureProducer<TransportContext>,
}

impl EventProducer {
    pub fn new(settings: &KafkaSettings) -> Result<EventProducer, KafkaTransportError> {
        settings.validate()?;
        let producer = FutureProducer::from_config_and_context(
            &client_config::event_producer(settings),
            TransportContext::new("integration", Arc::new(Reachability::default())),
        )
        .map_err(|e| KafkaTransportError::Config(format!("cannot create the producer: {e}")))?;
        Ok(EventProducer { producer })
    }

    /// Sends `events` and waits for every delivery report; `Ok` only when the broker took all
    /// of them. Returns how many were sent.
    pub async fn publish(&self, events: &[Event<'_>]) -> Result<usize, KafkaTransportError> {
        let mut reports: Vec<DeliveryFuture> = Vec::with_capacity(events.len());
        for event in events {
            reports.push(self.send(*event).await?);
        }
        let sent = reports.len();
        let mut first_error = None;
        for report in reports {
            let outcome = match report.await {
                Ok(Ok(_)) => continue,
                Ok(Err((error, _))) => error,
                Err(_) => KafkaError::Canceled,
            };
            first_error.get_or_insert(outcome);
        }
        match first_error {
            None => Ok(sent),
            Some(error) => Err(KafkaTransportError::client("deliver a change event")(error)),
        }
    }

    /// Hands one record to librdkafka, waiting while its local queue is full.
    async fn send(&self, event: Event<'_>) -> Result<DeliveryFuture, KafkaTransportError> {
        loop {
            let record = FutureRecord::to(event.topic)
                .key(event.key)
                .payload(event.value);
            match self.producer.send_result(record) {
                Ok(report) => return Ok(report),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((error, _)) => {
                    return Err(KafkaTransportError::client("send a change event")(error));
                }
            }
        }
    }
}
