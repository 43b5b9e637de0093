//! The directory transport for Tributary: a shared directory where capture
//! agents publish sealed batches and the applier consumes them; the same
//! directory is the site's spool that the Kafka shipper reads ([`Spool`]). A site whose
//! batches leave by Kafka or by carried file keeps them in append-only segment files instead
//! ([`SegmentOutbox`], [`SegmentSpool`]).
//!
//! Layout: `<root>/<site_id>/<epoch:010>-<sequence:020>.batch`. Writers make
//! each batch durable under a hidden staged name and then publish it with an
//! atomic rename, so readers never see partial files. The transport moves
//! opaque sealed bytes; it never decrypts or logs batch contents.
//!
//! Carried files ([`CarriedFileWriter`], [`CarriedFileReader`]) are the same stream by hand:
//! one site's batches in one file a person carries (`tributary export` / `tributary import`).

mod batch_name;
mod carried_file;
mod durability;
mod error;
mod inbox;
mod layout;
mod outbox;
mod rejection;
mod segment;
mod spool;
mod staged_batch;

pub use carried_file::{
    BatchDamage, CARRIED_FILE_MAGIC, CARRIED_FILE_VERSION, CarriedFileError, CarriedFileHeader,
    CarriedFileReader, CarriedFileSummary, CarriedFileWriter, CarriedItem, MAX_CARRIED_BATCH_BYTES,
};
pub use error::TransportError;
pub use inbox::{DirectoryInbox, InboxEntry};
pub use layout::MAX_BATCH_FILE_BYTES;
pub use outbox::{DirectoryOutbox, Outbox, open_outbox};
pub use rejection::MAX_REASON_BYTES;
pub use segment::{DEFAULT_SEGMENT_BYTES, SegmentOutbox, SegmentSpool, WATERMARK_INTERVAL};
pub use spool::{DirectorySpool, Spool, SpoolFormat, SpooledBatch, open_spool};
pub use staged_batch::StagedBatch;
