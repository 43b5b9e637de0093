//! What HQ applied, published for other systems (`[hq.integration]`, off by default).
//!
//! Every HQ transaction that writes a site's rows (a batch, a parked row's release, a conflict
//! resolved for the site) also records, in the same transaction, the changes it wrote in
//! HQ's integration outbox ([`outbox`]): what HQ committed is exactly what is published,
//! nothing parked or refused, and nothing is lost when the applier stops between its commit
//! and Kafka's acknowledgement. A publisher (the binary's `integration_publisher`) turns each
//! outbox entry into Debezium-style change events ([`envelope`]), with the columns an
//! integration must not see hashed or dropped ([`masking`]), and removes the entry once the
//! broker has taken all of them: at least once, in HQ's commit order per row.

mod applied;
mod envelope;
mod masking;
pub(crate) mod outbox;

pub use applied::{AppliedChange, AppliedChanges};
pub use envelope::{EnvelopeSettings, EventRecord, records_for, table_topic, transaction_topic};
pub use masking::{MaskAction, Masking};
pub use outbox::{OutboxEntry, OutboxReader};
