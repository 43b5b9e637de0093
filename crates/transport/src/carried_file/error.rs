//! What can go wrong with a carried file, classified once: [`CarriedFileError`] ends the
//! reading (or writing) of a file; [`BatchDamage`] costs one batch and the reading goes on.
//!
//! Invariant: messages name the file, the byte offset, the batch's sequence where it is known
//! and what the operator can do; never batch contents.

use std::io;
use std::path::PathBuf;

use thiserror::Error;
use tributary_batch::BatchError;

/// Why a carried file cannot be written, or cannot be read any further.
#[derive(Debug, Error)]
pub enum CarriedFileError {
    /// A filesystem operation failed (disk full, a stick pulled out, permissions).
    #[error("could not {operation} {}", path.display())]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The file does not start with the carried-file magic.
    #[error(
        "{} is not a tributary carried file (it does not start with \"TRBCARRY\"); \
         pass the file `tributary export` wrote",
        path.display()
    )]
    NotACarriedFile {
        /// The file.
        path: PathBuf,
    },

    /// The file's format version is not one this build reads.
    #[error(
        "{} is a carried file of format version {version}, which this build cannot read \
         (it reads version {supported}); upgrade tributary at HQ",
        path.display()
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version it declares.
        version: u8,
        /// The version this build reads.
        supported: u8,
    },

    /// The header's CRC does not match, or its fields contradict each other.
    #[error(
        "the header of carried file {} is damaged ({problem}); nothing in it can be trusted: \
         export the batches again",
        path.display()
    )]
    HeaderDamaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },

    /// A record's frame (sequence, length) fails its CRC: where the next batch starts is
    /// unknown, so nothing after it can be read.
    #[error(
        "carried file {} is damaged at byte {offset}: the frame of batch {index} of {count} \
         fails its checksum, so it and the batches after it cannot be read; export from \
         sequence {resume_from} again",
        path.display()
    )]
    FrameDamaged {
        /// The file.
        path: PathBuf,
        /// Byte offset of the frame.
        offset: u64,
        /// 1-based index of the record.
        index: u32,
        /// Records the header announces.
        count: u32,
        /// The first sequence not read yet.
        resume_from: u64,
    },

    /// The file ends before the records the header announces are complete.
    #[error(
        "carried file {} is truncated: it ends at byte {offset}, inside {inside} (batch {index} \
         of {count}); the batches before it were read, export from sequence {resume_from} again",
        path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Where the bytes end.
        offset: u64,
        /// The part of the record that was cut short.
        inside: &'static str,
        /// 1-based index of the record.
        index: u32,
        /// Records the header announces.
        count: u32,
        /// The first sequence not read.
        resume_from: u64,
    },

    /// A record's frame is intact but holds what no writer writes.
    #[error(
        "carried file {} is malformed at byte {offset} (batch {index} of {count}): {problem}; \
         it was not written by `tributary export`",
        path.display()
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Byte offset of the record's frame.
        offset: u64,
        /// 1-based index of the record.
        index: u32,
        /// Records the header announces.
        count: u32,
        /// What is wrong.
        problem: String,
    },

    /// Bytes follow the last record the header announces.
    #[error(
        "carried file {} has bytes after its last batch (from byte {offset}); the batches it \
         announces were read, the rest is ignored",
        path.display()
    )]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Where the unexpected bytes start.
        offset: u64,
    },

    /// The writer was given a batch that does not belong at this point of the file.
    #[error("cannot add this batch to carried file {}: {problem}", path.display())]
    Refused {
        /// The file being written.
        path: PathBuf,
        /// Why.
        problem: String,
    },
}

impl CarriedFileError {
    /// Whether trying again may succeed: filesystem errors are transient (a stick re-inserted,
    /// space freed); every other error is in the bytes and definite.
    pub fn is_transient(&self) -> bool {
        match self {
            CarriedFileError::Io { .. } => true,
            CarriedFileError::NotACarriedFile { .. }
            | CarriedFileError::UnsupportedVersion { .. }
            | CarriedFileError::HeaderDamaged { .. }
            | CarriedFileError::FrameDamaged { .. }
            | CarriedFileError::Truncated { .. }
            | CarriedFileError::Malformed { .. }
            | CarriedFileError::TrailingBytes { .. }
            | CarriedFileError::Refused { .. } => false,
        }
    }

    /// An error-mapping closure for a failed filesystem `operation` on `path`.
    pub(crate) fn io<'a>(
        operation: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(io::Error) -> CarriedFileError + 'a {
        move |source| CarriedFileError::Io {
            operation,
            path: path.to_owned(),
            source,
        }
    }
}

/// Why one batch of a carried file is not usable; the batches after it still are.
#[derive(Debug, Error)]
pub enum BatchDamage {
    /// The batch's bytes do not match the CRC written beside them.
    #[error("its bytes fail their checksum (CRC-32 {actual:08x}, written {expected:08x})")]
    Checksum {
        /// The CRC the writer recorded.
        expected: u32,
        /// The CRC of the bytes read.
        actual: u32,
    },
    /// The bytes match their CRC but are not a well-framed batch.
    #[error("it is not a well-framed batch: {0}")]
    Unframed(#[source] BatchError),
    /// The batch's own header names another position than the file puts it at.
    #[error(
        "its header says site '{site_id}' epoch {epoch} sequence {sequence}, which is not \
         where the file puts it"
    )]
    Misplaced {
        /// Site the batch header names.
        site_id: String,
        /// Epoch the batch header names.
        epoch: u64,
        /// Sequence the batch header names.
        sequence: u64,
    },
}
