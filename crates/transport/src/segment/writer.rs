//! [`SegmentOutbox`]: capture's writer into a site's segment spool.
//!
//! Staging appends a batch record to the active segment and fsyncs it; committing appends
//! the batch's commit record right behind it. Readers take a batch only when its commit
//! record follows it, so a staged batch is invisible and a discarded one (the file is
//! truncated back to where it began) never was visible.
//!
//! Invariants:
//! - only the active (highest-numbered) segment is written, and only at its end; a staged
//!   batch is always the last record of the active segment;
//! - a staged batch is durable before `stage` returns (the capture checkpoint is saved after
//!   it); a commit record need not be (after a crash the checkpoint still covers the staged
//!   batch, and resuming commits it again), except before a roll, which fsyncs the segment
//!   it leaves so a closed segment never ends in an unfinished commit;
//! - at open, and after any failed write, a torn tail of the active segment is cut off: a
//!   record a crash left unfinished is never taken for a batch.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::file::{SegmentFile, Step, list_segments, segment_name};
use super::record::{self, RecordKind};
use crate::durability::{ensure_dir, sync_dir};
use crate::error::TransportError;
use crate::layout::{MAX_BATCH_FILE_BYTES, site_dir};
use crate::outbox::Outbox;
use crate::staged_batch::StagedBatch;

/// Default size at which the active segment is closed and a new one begun.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// What the last batch record of the active segment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// No batch record, or one whose state does not matter any more.
    Other,
    /// A staged batch starting at `offset`, awaiting its commit record.
    Staged { batch: StagedBatch, offset: u64 },
    /// A committed batch (so a repeated commit of it is a no-op).
    Committed(StagedBatch),
}

/// The segment being written.
#[derive(Debug)]
struct Active {
    number: u64,
    file: File,
    path: PathBuf,
    len: u64,
}

/// A capture site's writer of sealed batches into append-only segment files.
#[derive(Debug)]
pub struct SegmentOutbox {
    site_id: String,
    dir: PathBuf,
    segment_bytes: u64,
    active: Active,
    tail: Tail,
    /// A write failed part-way: the tail must be checked before the next operation.
    needs_recovery: bool,
}

impl SegmentOutbox {
    /// Opens the spool of `site_id` under `root` (`<root>/<site_id>/*.segment`), creating it
    /// when missing and cutting off a torn tail a crash left. Segments are closed once they
    /// reach `segment_bytes`.
    pub fn open(root: &Path, site_id: &str, segment_bytes: u64) -> Result<Self, TransportError> {
        let dir = site_dir(root, site_id)?;
        ensure_dir(&dir)?;
        let number = list_segments(&dir)?.last().copied();
        let active = match number {
            Some(number) => open_active(&dir, number, false)?,
            None => open_active(&dir, 1, true)?,
        };
        let mut outbox = SegmentOutbox {
            site_id: site_id.to_owned(),
            dir,
            segment_bytes: segment_bytes.max(1),
            active,
            tail: Tail::Other,
            needs_recovery: true,
        };
        outbox.recover_if_needed()?;
        Ok(outbox)
    }

    /// Walks the active segment, cuts off a torn tail and finds the last batch's state.
    fn recover_if_needed(&mut self) -> Result<(), TransportError> {
        if !self.needs_recovery {
            return Ok(());
        }
        let reader = SegmentFile {
            file: self.active.file.try_clone().map_err(TransportError::io(
                "reopen spool segment",
                &self.active.path,
            ))?,
            path: self.active.path.clone(),
        };
        let len = reader.len()?;
        let mut tail = Tail::Other;
        let mut offset = 0;
        let end = loop {
            match reader.step(offset, len)? {
                Step::Record { header, offset: at } => {
                    let batch = StagedBatch::new(header.epoch, header.sequence);
                    tail = match (header.kind, tail) {
                        (RecordKind::Batch, _) => Tail::Staged { batch, offset: at },
                        (RecordKind::Commit, Tail::Staged { batch: staged, .. })
                            if staged == batch =>
                        {
                            Tail::Committed(batch)
                        }
                        (RecordKind::Commit, _) => Tail::Other,
                    };
                    offset = at + header.record_len();
                }
                Step::End => break len,
                Step::Torn { offset } => break offset,
            }
        };
        let mut end = end;
        // A staged batch is only ever resumed (committed) when it is whole.
        if let Tail::Staged { offset, .. } = tail
            && let Step::Record { header, .. } = reader.step(offset, len)?
            && reader.payload(&header, offset).is_err()
        {
            end = offset;
            tail = Tail::Other;
        }
        if end < len {
            tracing::warn!(
                segment = %self.active.path.display(),
                bytes = len - end,
                "cutting off the unfinished end of the spool's active segment"
            );
            self.truncate(end)?;
        }
        self.active.len = end;
        self.tail = tail;
        self.needs_recovery = false;
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> Result<(), TransportError> {
        let path = &self.active.path;
        self.active
            .file
            .set_len(len)
            .map_err(TransportError::io("truncate spool segment", path))?;
        self.active
            .file
            .sync_all()
            .map_err(TransportError::io("fsync spool segment", path))?;
        self.active.len = len;
        Ok(())
    }

    /// Closes the active segment (durably, commit records included) and begins the next.
    fn roll(&mut self) -> Result<(), TransportError> {
        self.active
            .file
            .sync_data()
            .map_err(TransportError::io("fsync spool segment", &self.active.path))?;
        self.active = open_active(&self.dir, self.active.number + 1, true)?;
        Ok(())
    }

    /// Appends `parts` at the end of the active segment; on failure the segment is marked
    /// for recovery so no half-written record stays in front of the next one.
    fn append(&mut self, parts: &[&[u8]], sync: bool) -> Result<u64, TransportError> {
        let start = self.active.len;
        let result = (|| {
            let mut at = start;
            for part in parts {
                self.active
                    .file
                    .write_all_at(part, at)
                    .map_err(TransportError::io(
                        "append to spool segment",
                        &self.active.path,
                    ))?;
                at += part.len() as u64;
            }
            if sync {
                self.active
                    .file
                    .sync_data()
                    .map_err(TransportError::io("fsync spool segment", &self.active.path))?;
            }
            Ok(at)
        })();
        match result {
            Ok(end) => {
                self.active.len = end;
                Ok(start)
            }
            Err(e) => {
                self.needs_recovery = true;
                Err(e)
            }
        }
    }

    fn not_staged(&self, staged: &StagedBatch) -> TransportError {
        TransportError::NotStaged {
            spool: self.dir.clone(),
            epoch: staged.epoch,
            sequence: staged.sequence,
        }
    }
}

impl Outbox for SegmentOutbox {
    fn format(&self) -> crate::SpoolFormat {
        crate::SpoolFormat::Segments
    }

    fn site_id(&self) -> &str {
        &self.site_id
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    fn stage(
        &mut self,
        epoch: u64,
        sequence: u64,
        sealed: &[u8],
    ) -> Result<StagedBatch, TransportError> {
        if sealed.len() as u64 > MAX_BATCH_FILE_BYTES {
            return Err(TransportError::BatchTooLarge {
                path: self.active.path.clone(),
                size: sealed.len() as u64,
                limit: MAX_BATCH_FILE_BYTES,
            });
        }
        self.recover_if_needed()?;
        if let Tail::Staged { offset, .. } = self.tail {
            // Staging the same position again replaces the earlier attempt.
            self.truncate(offset)?;
            self.tail = Tail::Other;
        }
        if self.active.len >= self.segment_bytes {
            self.roll()?;
        }
        let batch = StagedBatch::new(epoch, sequence);
        let header = record::encode_header(RecordKind::Batch, epoch, sequence, sealed);
        let offset = self.append(&[&header, sealed], true)?;
        self.tail = Tail::Staged { batch, offset };
        Ok(batch)
    }

    fn commit(&mut self, staged: &StagedBatch) -> Result<(), TransportError> {
        self.recover_if_needed()?;
        match self.tail {
            Tail::Committed(batch) if batch == *staged => Ok(()),
            Tail::Staged { batch, .. } if batch == *staged => {
                let committed_at = record::commit_time_payload(std::time::SystemTime::now());
                let header = record::encode_header(
                    RecordKind::Commit,
                    staged.epoch,
                    staged.sequence,
                    &committed_at,
                );
                self.append(&[&header, &committed_at], false)?;
                self.tail = Tail::Committed(batch);
                Ok(())
            }
            _ => Err(self.not_staged(staged)),
        }
    }

    fn staged(&mut self) -> Result<Vec<StagedBatch>, TransportError> {
        self.recover_if_needed()?;
        Ok(match self.tail {
            Tail::Staged { batch, .. } => vec![batch],
            _ => Vec::new(),
        })
    }

    fn discard(&mut self, staged: &StagedBatch) -> Result<(), TransportError> {
        self.recover_if_needed()?;
        if let Tail::Staged { batch, offset } = self.tail
            && batch == *staged
        {
            self.truncate(offset)?;
            self.tail = Tail::Other;
        }
        Ok(())
    }
}

/// Opens (or, with `create`, creates durably) segment `number` for appending.
fn open_active(dir: &Path, number: u64, create: bool) -> Result<Active, TransportError> {
    let path = dir.join(segment_name(number));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(create)
        .open(&path)
        .map_err(TransportError::io("open spool segment", &path))?;
    if create {
        sync_dir(dir)?;
    }
    let len = file
        .metadata()
        .map_err(TransportError::io("inspect spool segment", &path))?
        .len();
    Ok(Active {
        number,
        file,
        path,
        len,
    })
}
