//! Carried files: one file holding a run of one site's sealed batches, for a site with no
//! link at all (a person carries it to HQ on a USB stick).
//!
//! ```text
//! header   "TRBCARRY" | version | site id | epoch | first/last sequence | batch count
//!          | created at | CRC-32 of the header
//! record*  sequence | length | CRC-32 of (sequence, length) | sealed batch | CRC-32 of the batch
//! ```
//!
//! (All integers big-endian; the byte layout is in `docs/batch-format.md`, "Carried files".)
//!
//! Invariants: a carried file only ever appears complete under its final name (written under
//! a hidden temporary name, fsynced, renamed, directory fsynced); every record the writer
//! accepts is a well-framed batch whose header names the file's site and epoch and the
//! record's sequence, in strictly increasing order; the reader holds one batch at a time,
//! never sizes a buffer from a length it has not bounded, and never panics: damage inside a
//! batch (its CRC) costs that batch alone and names its sequence, damage to a record's frame
//! or a cut-short file ends the reading at that point with the offset and what was expected.
//! The batches stay sealed throughout: nothing here decrypts, and errors name positions, never
//! contents.

mod error;
mod header;
#[cfg(test)]
mod properties;
mod reader;
mod writer;

pub use error::{BatchDamage, CarriedFileError};
pub use header::{CARRIED_FILE_MAGIC, CARRIED_FILE_VERSION, CarriedFileHeader};
pub use reader::{CarriedFileReader, CarriedItem};
pub use writer::{CarriedFileSummary, CarriedFileWriter};

/// Largest sealed batch a carried file holds: the transport's batch limit (1 GiB).
pub const MAX_CARRIED_BATCH_BYTES: u64 = crate::layout::MAX_BATCH_FILE_BYTES;

/// Bytes of a record's frame before the batch: sequence (8), length (4), frame CRC (4).
pub(crate) const RECORD_FRAME_BYTES: usize = 16;
/// Bytes after the batch: its CRC-32.
pub(crate) const RECORD_TRAILER_BYTES: usize = 4;

/// CRC-32 (IEEE 802.3, as zlib and gzip compute it) of `bytes`.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// A record's frame: sequence, length and the CRC-32 of those 12 bytes.
pub(crate) fn encode_frame(sequence: u64, length: u32) -> [u8; RECORD_FRAME_BYTES] {
    let mut frame = [0u8; RECORD_FRAME_BYTES];
    frame[..8].copy_from_slice(&sequence.to_be_bytes());
    frame[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32(&frame[..12]);
    frame[12..].copy_from_slice(&crc.to_be_bytes());
    frame
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Real sealed batches for the tests of this module.

    use tributary_batch::{BatchHeader, SiteKey, seal};

    /// A sealed batch of `site` at (epoch, sequence) with a small payload.
    pub(crate) fn sealed(key: &SiteKey, site: &str, epoch: u64, sequence: u64) -> Vec<u8> {
        let header = BatchHeader::new(site, key.key_id(), epoch, sequence, 1);
        seal(&header, format!("{{\"n\":{sequence}}}").as_bytes(), key).unwrap()
    }

    /// A key for `site`.
    pub(crate) fn key(site: &str) -> SiteKey {
        SiteKey::generate(site).unwrap()
    }
}
