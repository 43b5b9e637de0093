//! The Kafka transport: the site's shipper (spool -> topic) and HQ's consumer (topic ->
//! applier), over librdkafka.
//!
//! Module map: [`settings`] (what the transport needs, and which librdkafka properties may be
//! passed through), `client_config` (the producer, consumer and admin configurations),
//! `context` (librdkafka's logs and outage reports), `record` (a batch as a record: key,
//! headers, value), [`shipper`], [`consumer`], `topic` (`tributary kafka init`, and the integration topics), `events` (the integration
//! topics' producer at HQ), `error`,
//! [`metrics`] (the shipper's `/metrics` counters).
//!
//! Invariants kept here: a spool entry is removed only after its delivery report succeeded;
//! an offset is committed only after the handler says HQ committed the batch; one site's
//! batches travel in order in one partition (key = site id, idempotent producer); a gap is
//! held, never skipped. This crate never opens a batch: the bytes it moves are sealed.
//!
//! It is its own crate, not a module of `tributary-transport`, so that capture and apply
//! (which depend on the transport crate for the directory transport) never build or link
//! librdkafka; only the binary does.

mod client_config;
pub mod consumer;
mod context;
mod error;
mod events;
pub mod metrics;
mod record;
pub mod settings;
pub mod shipper;
mod topic;

pub use consumer::{
    BatchHandler, ConsumeError, ConsumerReport, ConsumerSettings, Handled, RunMode, run_consumer,
};
pub use context::Reachability;
pub use error::KafkaTransportError;
pub use events::{Event, EventProducer};
pub use record::{Received, ReceivedBatch, batch_headers};
pub use settings::{KafkaSettings, SECRET_PROPERTIES, ShipperSettings, check_property};
pub use shipper::{ShipperProgress, run_shipper};
pub use topic::{TopicInit, create_topics, init_topic};
