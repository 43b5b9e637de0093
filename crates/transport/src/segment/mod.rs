//! The segment spool: a site's batches in append-only segment files, for sites whose
//! batches leave by Kafka or by carried file (the directory transport keeps one file per
//! batch, which is what the applier reads).
//!
//! ```text
//! <root>/<site_id>/<number:020>.segment    records: batch, commit, batch, commit, ...
//! <root>/<site_id>/acknowledged            the delivery watermark
//! ```
//!
//! Capture writes through [`SegmentOutbox`]; the shipper and export read through
//! [`SegmentSpool`]. They may be separate processes: the writer only appends to (or cuts
//! back the unfinished end of) the highest-numbered segment, the reader only deletes closed
//! segments it has seen delivered. Record framing is in `record`; see
//! docs/batch-format.md for the byte layout.

mod file;
mod reader;
mod record;
mod writer;

pub use reader::{SegmentSpool, WATERMARK_INTERVAL};
pub use writer::{DEFAULT_SEGMENT_BYTES, SegmentOutbox};

#[cfg(test)]
mod tests;
