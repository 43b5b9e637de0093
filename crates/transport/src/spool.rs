//! The site's spool as the shipper sees it: committed batches waiting to be carried off the
//! site, in (epoch, sequence) order, each removed only after the transport acknowledged it.
//!
//! [`Spool`] is the contract, with two formats ([`SpoolFormat`]): [`DirectorySpool`] over the
//! directory transport's committed batch files (`<root>/<site>/<epoch>-<sequence>.batch`, one
//! file per batch, the form the applier reads from a shared directory), and
//! [`SegmentSpool`](crate::SegmentSpool) over append-only segment files (the site's own spool
//! when batches leave by Kafka or by carried file).
//!
//! Invariants: `committed_after` lists only complete, committed batches (never staged ones),
//! sorted by (epoch, sequence), at most `limit` of them; `remove` is idempotent; nothing here
//! reads inside a batch.

use std::path::Path;
use std::time::SystemTime;

use crate::error::TransportError;
use crate::inbox::{DirectoryInbox, InboxEntry};
use crate::layout::site_dir;

/// A committed batch in a site's spool, identified by its position in the site's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpooledBatch {
    /// The batch's epoch.
    pub epoch: u64,
    /// The batch's sequence within the epoch.
    pub sequence: u64,
}

/// What a shipper needs from the site's spool.
///
/// Contract: a batch stays listed until [`Spool::remove`] is called for it, and the shipper
/// calls `remove` only after the transport acknowledged the batch (DESIGN.md invariant 1).
/// Batches are removed in stream order: a spool may take the removal of a batch to cover
/// every batch before it.
pub trait Spool: Send + Sync {
    /// The site whose batches this spool holds.
    fn site_id(&self) -> &str;
    /// At most `limit` committed batches after `after` (from the start when `None`), sorted
    /// by (epoch, sequence).
    fn committed_after(
        &self,
        after: Option<SpooledBatch>,
        limit: usize,
    ) -> Result<Vec<SpooledBatch>, TransportError>;
    /// The sealed bytes of a committed batch (size-bounded). A batch no longer in the spool
    /// is [`TransportError::NotInSpool`].
    fn read(&self, batch: &SpooledBatch) -> Result<Vec<u8>, TransportError>;
    /// Removes a delivered batch (and, in stream order, those before it). Already gone is
    /// fine. May be recorded lazily: see [`Spool::flush`].
    fn remove(&self, batch: &SpooledBatch) -> Result<(), TransportError>;
    /// Records every removal so far on disk.
    fn flush(&self) -> Result<(), TransportError> {
        Ok(())
    }
    /// When the oldest batch still held was committed: `None` when the spool is empty (or its
    /// oldest batch was written before commit times were kept).
    fn oldest_committed_at(&self) -> Result<Option<SystemTime>, TransportError>;
}

impl<S: Spool + ?Sized> Spool for Box<S> {
    fn site_id(&self) -> &str {
        (**self).site_id()
    }
    fn committed_after(
        &self,
        after: Option<SpooledBatch>,
        limit: usize,
    ) -> Result<Vec<SpooledBatch>, TransportError> {
        (**self).committed_after(after, limit)
    }
    fn read(&self, batch: &SpooledBatch) -> Result<Vec<u8>, TransportError> {
        (**self).read(batch)
    }
    fn remove(&self, batch: &SpooledBatch) -> Result<(), TransportError> {
        (**self).remove(batch)
    }
    fn flush(&self) -> Result<(), TransportError> {
        (**self).flush()
    }
    fn oldest_committed_at(&self) -> Result<Option<SystemTime>, TransportError> {
        (**self).oldest_committed_at()
    }
}

/// How a site keeps batches until the transport takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpoolFormat {
    /// One file per batch in the transport directory, which the applier reads directly.
    #[default]
    Files,
    /// Append-only segment files, read by `tributary ship` or `tributary export`.
    Segments,
}

/// Opens the spool of `site_id` under `root` in `format`, for reading.
pub fn open_spool(
    format: SpoolFormat,
    root: &Path,
    site_id: &str,
) -> Result<Box<dyn Spool>, TransportError> {
    Ok(match format {
        SpoolFormat::Files => Box::new(DirectorySpool::open(root, site_id)?),
        SpoolFormat::Segments => Box::new(crate::segment::SegmentSpool::open(root, site_id)?),
    })
}

/// The capture outbox directory of one site, read as a spool.
#[derive(Debug, Clone)]
pub struct DirectorySpool {
    inbox: DirectoryInbox,
    site_id: String,
}

impl DirectorySpool {
    /// The spool of `site_id` under `root` (the `[transport] directory` capture writes to).
    pub fn open(root: &Path, site_id: &str) -> Result<Self, TransportError> {
        site_dir(root, site_id)?;
        Ok(DirectorySpool {
            inbox: DirectoryInbox::open(root)?,
            site_id: site_id.to_owned(),
        })
    }

    fn entry(&self, batch: &SpooledBatch) -> Result<InboxEntry, TransportError> {
        let mut entry = InboxEntry {
            site_id: self.site_id.clone(),
            epoch: batch.epoch,
            sequence: batch.sequence,
            path: Default::default(),
        };
        entry.path = site_dir(self.inbox.root(), &self.site_id)?.join(entry.file_name());
        Ok(entry)
    }
}

impl Spool for DirectorySpool {
    fn site_id(&self) -> &str {
        &self.site_id
    }

    fn committed_after(
        &self,
        after: Option<SpooledBatch>,
        limit: usize,
    ) -> Result<Vec<SpooledBatch>, TransportError> {
        Ok(self
            .inbox
            .pending(&self.site_id)?
            .into_iter()
            .map(|e| SpooledBatch {
                epoch: e.epoch,
                sequence: e.sequence,
            })
            .filter(|b| after.is_none_or(|after| *b > after))
            .take(limit)
            .collect())
    }

    fn read(&self, batch: &SpooledBatch) -> Result<Vec<u8>, TransportError> {
        self.inbox.read(&self.entry(batch)?).map_err(|e| match e {
            TransportError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                TransportError::NotInSpool {
                    spool: self.inbox.root().join(&self.site_id),
                    epoch: batch.epoch,
                    sequence: batch.sequence,
                }
            }
            other => other,
        })
    }

    fn remove(&self, batch: &SpooledBatch) -> Result<(), TransportError> {
        self.inbox.acknowledge(&self.entry(batch)?)
    }

    /// A batch file is written once, when it is staged, and committed by a rename just after:
    /// its modification time is its commit time.
    fn oldest_committed_at(&self) -> Result<Option<SystemTime>, TransportError> {
        for entry in self.inbox.pending(&self.site_id)? {
            match std::fs::metadata(&entry.path) {
                Ok(metadata) => {
                    return metadata
                        .modified()
                        .map(Some)
                        .map_err(TransportError::io("inspect a batch file", &entry.path));
                }
                // Taken by the applier meanwhile: the next one is the oldest.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(TransportError::io("inspect a batch file", &entry.path)(e)),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{DirectoryOutbox, Outbox};

    #[test]
    fn the_oldest_batch_file_gives_the_oldest_commit_time() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = DirectoryOutbox::open(tmp.path(), "clinic-1").unwrap();
        assert_eq!(outbox.oldest_committed_at().unwrap(), None, "empty");
        for sequence in [1, 2] {
            let staged = outbox.stage(1, sequence, b"sealed").unwrap();
            outbox.commit(&staged).unwrap();
        }
        let spool = DirectorySpool::open(tmp.path(), "clinic-1").unwrap();
        let first = outbox.oldest_committed_at().unwrap().expect("a time");
        let first_file = spool
            .entry(&SpooledBatch {
                epoch: 1,
                sequence: 1,
            })
            .unwrap()
            .path;
        assert_eq!(
            Some(first),
            std::fs::metadata(first_file).unwrap().modified().ok()
        );
        spool
            .remove(&SpooledBatch {
                epoch: 1,
                sequence: 1,
            })
            .unwrap();
        let second_file = spool
            .entry(&SpooledBatch {
                epoch: 1,
                sequence: 2,
            })
            .unwrap()
            .path;
        assert_eq!(
            spool.oldest_committed_at().unwrap(),
            std::fs::metadata(second_file).unwrap().modified().ok()
        );
    }

    #[test]
    fn lists_committed_batches_in_order_and_removes_them() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = DirectoryOutbox::open(tmp.path(), "clinic-1").unwrap();
        for (epoch, sequence) in [(2, 1), (1, 10), (1, 9)] {
            let staged = outbox.stage(epoch, sequence, b"sealed").unwrap();
            outbox.commit(&staged).unwrap();
        }
        outbox.stage(2, 2, b"not yet committed").unwrap();
        let spool = DirectorySpool::open(tmp.path(), "clinic-1").unwrap();
        let listed = spool.committed_after(None, 10).unwrap();
        let positions: Vec<_> = listed.iter().map(|b| (b.epoch, b.sequence)).collect();
        assert_eq!(positions, vec![(1, 9), (1, 10), (2, 1)]);
        assert_eq!(
            spool.committed_after(Some(listed[0]), 1).unwrap(),
            vec![listed[1]]
        );
        assert_eq!(spool.read(&listed[0]).unwrap(), b"sealed");
        spool.remove(&listed[0]).unwrap();
        spool.remove(&listed[0]).unwrap();
        assert_eq!(
            spool.committed_after(None, 10).unwrap(),
            listed[1..].to_vec()
        );
        assert!(matches!(
            spool.read(&listed[0]),
            Err(TransportError::NotInSpool { .. })
        ));
    }

    #[test]
    fn refuses_invalid_site_ids() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            DirectorySpool::open(tmp.path(), "../x"),
            Err(TransportError::InvalidSiteId(_))
        ));
    }
}
