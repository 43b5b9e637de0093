//! [`StagedBatch`]: a handle on a batch the outbox has made durable under a
//! hidden name but not yet published.
//!
//! Invariant: a staged batch is identified by (epoch, sequence) alone, so the
//! handle can be stored in a capture checkpoint (serde or its file name) and
//! resolved again by the site's [`DirectoryOutbox`](crate::DirectoryOutbox).
//! Handles order by epoch, then sequence.

use serde::{Deserialize, Serialize};

use crate::batch_name::BatchName;
use crate::error::TransportError;

/// A batch written and fsynced under its hidden staged name, awaiting commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StagedBatch {
    /// The batch's epoch.
    pub epoch: u64,
    /// The batch's sequence within the epoch.
    pub sequence: u64,
}

impl StagedBatch {
    /// A handle for the batch at (epoch, sequence).
    pub fn new(epoch: u64, sequence: u64) -> Self {
        StagedBatch { epoch, sequence }
    }

    /// The staged file's name, `.<epoch:010>-<sequence:020>.batch.staged`.
    pub fn file_name(&self) -> String {
        self.name().staged_file_name()
    }

    /// The name the batch gets when committed, `<epoch:010>-<sequence:020>.batch`.
    pub fn committed_file_name(&self) -> String {
        self.name().file_name()
    }

    /// Parses a name produced by [`StagedBatch::file_name`].
    pub fn from_file_name(name: &str) -> Result<StagedBatch, TransportError> {
        let BatchName { epoch, sequence } = BatchName::parse_staged(name)?;
        Ok(StagedBatch { epoch, sequence })
    }

    pub(crate) fn name(&self) -> BatchName {
        BatchName {
            epoch: self.epoch,
            sequence: self.sequence,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_name_round_trips() {
        let staged = StagedBatch::new(3, 10);
        assert_eq!(
            staged.file_name(),
            ".0000000003-00000000000000000010.batch.staged"
        );
        assert_eq!(
            staged.committed_file_name(),
            "0000000003-00000000000000000010.batch"
        );
        assert_eq!(
            StagedBatch::from_file_name(&staged.file_name()).unwrap(),
            staged
        );
        assert!(StagedBatch::from_file_name(&staged.committed_file_name()).is_err());
    }

    #[test]
    fn serde_round_trips_and_orders_numerically() {
        let staged = StagedBatch::new(3, 10);
        let json = serde_json::to_string(&staged).unwrap();
        assert_eq!(json, r#"{"epoch":3,"sequence":10}"#);
        assert_eq!(serde_json::from_str::<StagedBatch>(&json).unwrap(), staged);
        assert!(StagedBatch::new(3, 9) < staged && staged < StagedBatch::new(4, 0));
    }
}
