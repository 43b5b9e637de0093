//! The transport's error type, [`TransportError`], and its retry
//! classification.
//!
//! Invariants: filesystem failures always carry the operation and the path
//! involved (with the OS error as `#[source]`); messages name files and batch
//! positions only, never batch contents.

use std::io;
use std::path::PathBuf;

use thiserror::Error;
use tributary_batch::InvalidSiteId;

/// Why a transport operation failed.
#[derive(Debug, Error)]
pub enum TransportError {
    /// A filesystem operation failed (disk full, permissions, I/O error, ...).
    #[error("could not {operation} {}", path.display())]
    Io {
        /// What was being done, e.g. "fsync staged batch".
        operation: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A site id broke the naming rules.
    #[error("transport cannot use this site: {0}")]
    InvalidSiteId(#[from] InvalidSiteId),

    /// A file name is not a batch (or staged batch) name.
    #[error("{name:?} is not a {expected} file name: {problem}")]
    InvalidBatchName {
        /// The rejected name.
        name: String,
        /// What kind of name was expected, with its pattern.
        expected: &'static str,
        /// What is wrong with it.
        problem: String,
    },

    /// `commit` found neither the staged file nor the committed file.
    #[error(
        "staged batch {} is gone and {} does not exist: it was discarded, or committed and \
         already consumed by the applier; check the applier's checkpoint before re-sealing it",
        staged.display(),
        committed.display()
    )]
    StagedBatchMissing {
        /// Where the staged file should have been.
        staged: PathBuf,
        /// Where the committed file would be.
        committed: PathBuf,
    },

    /// A batch file exceeds the transport's size limit.
    #[error(
        "batch file {} is {size} bytes, over the {limit}-byte transport limit; \
         capture smaller batches (reject this file)",
        path.display()
    )]
    BatchTooLarge {
        /// The file (or the staged file it would have become).
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },

    /// Something other than a directory sits where a directory belongs.
    #[error("{} is not a directory; move it away or point tributary at another transport root", path.display())]
    NotADirectory {
        /// The offending path.
        path: PathBuf,
    },

    /// An inbox entry does not point at a pending batch of this inbox.
    #[error(
        "inbox entry {} is not a pending batch of this inbox (expected {}); \
         only pass entries returned by `pending`",
        path.display(),
        expected.display()
    )]
    ForeignEntry {
        /// The path the entry carried.
        path: PathBuf,
        /// The path its site, epoch and sequence map to in this inbox.
        expected: PathBuf,
    },

    /// A spool segment holds unreadable bytes where a record should be, with more after them.
    #[error(
        "spool segment {} is damaged at byte {offset}: the batches from there on cannot be \
         read. Move the file aside to let shipping go on; HQ then waits at the missing \
         batches until the site is seeded again ('tributary seed --restart-stream')",
        path.display()
    )]
    SpoolDamaged {
        /// The segment file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
    },

    /// `commit` was asked for a batch that is not the spool's staged batch.
    #[error(
        "batch {epoch}-{sequence} is not staged in the spool {}: it was discarded, or never \
         staged; capture resumes from its checkpoint to seal it again",
        spool.display()
    )]
    NotStaged {
        /// The site's spool directory.
        spool: PathBuf,
        /// The batch's epoch.
        epoch: u64,
        /// The batch's sequence.
        sequence: u64,
    },

    /// A batch asked for is no longer (or not yet) in the spool.
    #[error(
        "batch {epoch}-{sequence} is not in the spool {} (already delivered and removed?)",
        spool.display()
    )]
    NotInSpool {
        /// The site's spool directory.
        spool: PathBuf,
        /// The batch's epoch.
        epoch: u64,
        /// The batch's sequence.
        sequence: u64,
    },

    /// The spool's delivery watermark file cannot be read.
    #[error(
        "{} is not a spool watermark; delete it (batches already delivered are then sent \
         again, and HQ skips them)",
        path.display()
    )]
    BadWatermark {
        /// The watermark file.
        path: PathBuf,
    },
}

impl TransportError {
    /// Whether retrying the same operation later may succeed.
    ///
    /// Filesystem errors (disk full, a share briefly unavailable, a
    /// permission fixed by the operator) are transient; bad names, missing
    /// staged batches, oversized files and foreign entries are definite.
    pub fn is_transient(&self) -> bool {
        match self {
            // A stale listing: listing again moves on.
            TransportError::Io { .. } | TransportError::NotInSpool { .. } => true,
            TransportError::InvalidSiteId(_)
            | TransportError::InvalidBatchName { .. }
            | TransportError::StagedBatchMissing { .. }
            | TransportError::BatchTooLarge { .. }
            | TransportError::NotADirectory { .. }
            | TransportError::ForeignEntry { .. }
            | TransportError::SpoolDamaged { .. }
            | TransportError::NotStaged { .. }
            | TransportError::BadWatermark { .. } => false,
        }
    }

    /// An error-mapping closure for a failed filesystem `operation` on `path`.
    pub(crate) fn io<'a>(
        operation: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(io::Error) -> TransportError + 'a {
        move |source| TransportError::Io {
            operation,
            path: path.to_owned(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_transient_and_name_operation_and_path() {
        let err = TransportError::io("fsync staged batch", std::path::Path::new("/t/a/x"))(
            io::Error::other("disk full"),
        );
        assert!(err.is_transient());
        assert_eq!(err.to_string(), "could not fsync staged batch /t/a/x");
        assert!(std::error::Error::source(&err).is_some_and(|s| s.to_string() == "disk full"));
    }

    #[test]
    fn naming_and_size_errors_are_definite() {
        let name = TransportError::InvalidBatchName {
            name: "x".into(),
            expected: "batch",
            problem: "p".into(),
        };
        let big = TransportError::BatchTooLarge {
            path: "/t/a/x".into(),
            size: 2,
            limit: 1,
        };
        assert!(!name.is_transient() && !big.is_transient());
    }
}
