//! [`Outbox`]: capture's two-phase writer of sealed batches, and [`DirectoryOutbox`], the
//! one that writes into the shared transport directory (one file per batch).
//!
//! Publishing is two-phase so the capture agent can checkpoint in between:
//! `stage` makes the batch durable but invisible, `commit` makes it visible. In the
//! directory, `stage` writes the batch under a hidden name and `commit` renames it to its
//! visible name.
//!
//! Invariants: a `.staged` file is always complete (it is written as
//! `.staging`, fsynced, then renamed); a visible `.batch` file only ever
//! appears by an atomic rename of a complete, fsynced file, followed by a
//! directory fsync, so readers never see partial batches; every operation is
//! safe to repeat after a crash.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::batch_name::BatchName;
use crate::durability::{ensure_dir, sync_dir, write_file};
use crate::error::TransportError;
use crate::layout::{MAX_BATCH_FILE_BYTES, is_hidden, site_dir};
use crate::staged_batch::StagedBatch;

/// What capture needs from wherever its sealed batches go first.
///
/// Contract: `stage` returns only once the batch is durable; a staged batch is invisible to
/// readers until `commit`; `commit` and `discard` are idempotent; after a crash, `staged`
/// lists what was staged and neither committed nor discarded, so resuming can finish it.
pub trait Outbox: Send {
    /// The site this outbox writes for.
    fn site_id(&self) -> &str;
    /// The directory holding this site's batches (its size is the spool's size).
    fn dir(&self) -> &Path;
    /// Writes `sealed` as the staged batch (epoch, sequence) and makes it durable. An earlier
    /// staged batch at the same position is replaced.
    fn stage(
        &mut self,
        epoch: u64,
        sequence: u64,
        sealed: &[u8],
    ) -> Result<StagedBatch, TransportError>;
    /// Makes a staged batch visible to readers.
    fn commit(&mut self, staged: &StagedBatch) -> Result<(), TransportError>;
    /// Staged batches neither committed nor discarded, in stream order.
    fn staged(&mut self) -> Result<Vec<StagedBatch>, TransportError>;
    /// Drops a staged batch. Missing is fine.
    fn discard(&mut self, staged: &StagedBatch) -> Result<(), TransportError>;
    /// When the oldest batch the transport has not taken yet was committed (`None`: none
    /// waits), read as the transport's reader sees the spool.
    fn oldest_committed_at(&self) -> Result<Option<std::time::SystemTime>, TransportError> {
        let root = self.dir().parent().unwrap_or(self.dir());
        crate::open_spool(self.format(), root, self.site_id())?.oldest_committed_at()
    }
    /// The spool format this outbox writes.
    fn format(&self) -> crate::SpoolFormat;
}

/// Opens capture's outbox for `site_id` under `root` in `format`; segment files are closed
/// at `segment_bytes`.
pub fn open_outbox(
    format: crate::SpoolFormat,
    root: &Path,
    site_id: &str,
    segment_bytes: u64,
) -> Result<Box<dyn Outbox>, TransportError> {
    Ok(match format {
        crate::SpoolFormat::Files => Box::new(DirectoryOutbox::open(root, site_id)?),
        crate::SpoolFormat::Segments => Box::new(crate::segment::SegmentOutbox::open(
            root,
            site_id,
            segment_bytes,
        )?),
    })
}

impl Outbox for DirectoryOutbox {
    fn format(&self) -> crate::SpoolFormat {
        crate::SpoolFormat::Files
    }

    fn site_id(&self) -> &str {
        DirectoryOutbox::site_id(self)
    }
    fn dir(&self) -> &Path {
        DirectoryOutbox::dir(self)
    }
    fn stage(
        &mut self,
        epoch: u64,
        sequence: u64,
        sealed: &[u8],
    ) -> Result<StagedBatch, TransportError> {
        DirectoryOutbox::stage(self, epoch, sequence, sealed)
    }
    fn commit(&mut self, staged: &StagedBatch) -> Result<(), TransportError> {
        DirectoryOutbox::commit(self, staged).map(drop)
    }
    fn staged(&mut self) -> Result<Vec<StagedBatch>, TransportError> {
        DirectoryOutbox::staged(self)
    }
    fn discard(&mut self, staged: &StagedBatch) -> Result<(), TransportError> {
        DirectoryOutbox::discard(self, staged)
    }
}

/// A capture site's writer of sealed batches into the shared transport directory.
#[derive(Debug, Clone)]
pub struct DirectoryOutbox {
    site_id: String,
    site_dir: PathBuf,
}

impl DirectoryOutbox {
    /// Opens the outbox for `site_id` under `root`, creating (and fsyncing)
    /// `root` and `<root>/<site_id>` if missing.
    pub fn open(root: &Path, site_id: &str) -> Result<Self, TransportError> {
        let site_dir = site_dir(root, site_id)?;
        ensure_dir(&site_dir)?;
        Ok(DirectoryOutbox {
            site_id: site_id.to_owned(),
            site_dir,
        })
    }

    /// The site this outbox writes for.
    pub fn site_id(&self) -> &str {
        &self.site_id
    }

    /// The directory holding this site's batches.
    pub fn dir(&self) -> &Path {
        &self.site_dir
    }

    /// Writes `sealed` as the staged batch (epoch, sequence) and makes it
    /// durable. An earlier staged file for the same position is replaced.
    pub fn stage(
        &self,
        epoch: u64,
        sequence: u64,
        sealed: &[u8],
    ) -> Result<StagedBatch, TransportError> {
        let staged = StagedBatch::new(epoch, sequence);
        let staged_path = self.staged_path(&staged);
        if sealed.len() as u64 > MAX_BATCH_FILE_BYTES {
            return Err(TransportError::BatchTooLarge {
                path: staged_path,
                size: sealed.len() as u64,
                limit: MAX_BATCH_FILE_BYTES,
            });
        }
        let staging_path = self.site_dir.join(staged.name().staging_file_name());
        write_file(&staging_path, sealed)?;
        fs::rename(&staging_path, &staged_path)
            .map_err(TransportError::io("rename staging file into", &staged_path))?;
        sync_dir(&self.site_dir)?;
        Ok(staged)
    }

    /// Publishes a staged batch under its final name and returns that path.
    ///
    /// Idempotent: if the staged file is already gone but the committed file
    /// exists, the earlier commit went through and this returns `Ok`. A
    /// committed file already present alongside a staged one is replaced (it
    /// holds the same position of the same site's stream).
    pub fn commit(&self, staged: &StagedBatch) -> Result<PathBuf, TransportError> {
        let staged_path = self.staged_path(staged);
        let committed_path = self.committed_path(staged);
        match fs::rename(&staged_path, &committed_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !self.site_dir.is_dir() {
                    // The share is unmounted or the directory was removed: retryable.
                    return Err(TransportError::io(
                        "commit staged batch to",
                        &committed_path,
                    )(e));
                }
                if fs::symlink_metadata(&committed_path).is_err() {
                    return Err(TransportError::StagedBatchMissing {
                        staged: staged_path,
                        committed: committed_path,
                    });
                }
            }
            Err(e) => {
                return Err(TransportError::io(
                    "commit staged batch to",
                    &committed_path,
                )(e));
            }
        }
        // Also on the idempotent path: the earlier rename may not be durable yet.
        sync_dir(&self.site_dir)?;
        Ok(committed_path)
    }

    /// Staged batches left behind (e.g. by a crash between stage and commit),
    /// sorted by epoch then sequence. Files being written (`.staging`) are not
    /// listed; unparsable staged names are skipped with a warning.
    pub fn staged(&self) -> Result<Vec<StagedBatch>, TransportError> {
        let list_error = TransportError::io("list site directory", &self.site_dir);
        let mut staged = Vec::new();
        for entry in fs::read_dir(&self.site_dir).map_err(list_error)? {
            let entry = entry.map_err(TransportError::io("list site directory", &self.site_dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !is_hidden(&name) || !name.ends_with(".staged") {
                continue;
            }
            match BatchName::parse_staged(&name) {
                Ok(parsed) => staged.push(StagedBatch::new(parsed.epoch, parsed.sequence)),
                Err(error) => tracing::warn!(
                    file = %entry.path().display(),
                    %error,
                    "ignoring staged file with an unparsable name"
                ),
            }
        }
        staged.sort();
        Ok(staged)
    }

    /// Deletes a staged batch (and fsyncs the directory). Missing is fine.
    pub fn discard(&self, staged: &StagedBatch) -> Result<(), TransportError> {
        let staged_path = self.staged_path(staged);
        match fs::remove_file(&staged_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(TransportError::io("delete staged batch", &staged_path)(e)),
        }
        sync_dir(&self.site_dir)
    }

    /// Where a staged batch's file lives.
    pub fn staged_path(&self, staged: &StagedBatch) -> PathBuf {
        self.site_dir.join(staged.file_name())
    }

    /// Where a staged batch's file lives once committed.
    pub fn committed_path(&self, staged: &StagedBatch) -> PathBuf {
        self.site_dir.join(staged.committed_file_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn open_creates_root_and_site_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("share");
        let outbox = DirectoryOutbox::open(&root, "clinic-1").unwrap();
        assert!(root.join("clinic-1").is_dir());
        assert_eq!(outbox.site_id(), "clinic-1");
        assert!(matches!(
            DirectoryOutbox::open(&root, "../escape"),
            Err(TransportError::InvalidSiteId(_))
        ));
    }

    #[test]
    fn stage_writes_only_a_complete_hidden_file() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = DirectoryOutbox::open(tmp.path(), "clinic-1").unwrap();
        let staged = outbox.stage(1, 7, b"sealed bytes").unwrap();
        assert_eq!(staged, StagedBatch::new(1, 7));
        let site = tmp.path().join("clinic-1");
        assert_eq!(names_in(&site), vec![staged.file_name()]);
        assert_eq!(
            fs::read(outbox.staged_path(&staged)).unwrap(),
            b"sealed bytes"
        );
    }

    #[test]
    fn commit_publishes_and_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = DirectoryOutbox::open(tmp.path(), "clinic-1").unwrap();
        let staged = outbox.stage(1, 7, b"sealed bytes").unwrap();
        let path = outbox.commit(&staged).unwrap();
        assert_eq!(
            path,
            tmp.path()
                .join("clinic-1/0000000001-00000000000000000007.batch")
        );
        assert_eq!(fs::read(&path).unwrap(), b"sealed bytes");
        assert_eq!(
            names_in(&tmp.path().join("clinic-1")),
            vec![staged.committed_file_name()]
        );
        assert_eq!(outbox.commit(&staged).unwrap(), path);
    }

    #[test]
    fn commit_of_a_discarded_batch_fails_definitely() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = DirectoryOutbox::open(tmp.path(), "clinic-1").unwrap();
        let staged = outbox.stage(1, 7, b"x").unwrap();
        outbox.discard(&staged).unwrap();
        outbox.discard(&staged).unwrap();
        let err = outbox.commit(&staged).unwrap_err();
        assert!(matches!(err, TransportError::StagedBatchMissing { .. }));
        assert!(!err.is_transient());
    }

    #[test]
    fn restaging_replaces_the_previous_staged_file() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = DirectoryOutbox::open(tmp.path(), "clinic-1").unwrap();
        outbox.stage(1, 7, b"first attempt, longer").unwrap();
        let staged = outbox.stage(1, 7, b"second").unwrap();
        assert_eq!(fs::read(outbox.staged_path(&staged)).unwrap(), b"second");
        assert_eq!(outbox.staged().unwrap(), vec![staged]);
    }

    #[test]
    fn staged_lists_leftovers_in_stream_order() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = DirectoryOutbox::open(tmp.path(), "clinic-1").unwrap();
        for (epoch, sequence) in [(2, 1), (1, 10), (1, 9)] {
            outbox.stage(epoch, sequence, b"x").unwrap();
        }
        let committed = outbox.stage(1, 11, b"x").unwrap();
        outbox.commit(&committed).unwrap();
        let site = tmp.path().join("clinic-1");
        fs::write(site.join(".garbage.staged"), b"x").unwrap();
        fs::write(
            site.join(StagedBatch::new(5, 5).name().staging_file_name()),
            b"partial",
        )
        .unwrap();
        assert_eq!(
            outbox.staged().unwrap(),
            vec![
                StagedBatch::new(1, 9),
                StagedBatch::new(1, 10),
                StagedBatch::new(2, 1)
            ]
        );
    }

    #[test]
    fn commit_into_a_vanished_site_directory_is_transient() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = DirectoryOutbox::open(tmp.path(), "clinic-1").unwrap();
        let staged = outbox.stage(1, 7, b"x").unwrap();
        fs::remove_dir_all(tmp.path().join("clinic-1")).unwrap();
        let err = outbox.commit(&staged).unwrap_err();
        assert!(
            matches!(err, TransportError::Io { .. }) && err.is_transient(),
            "{err}"
        );
    }

    #[test]
    fn stage_fails_when_the_site_directory_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let outbox = DirectoryOutbox::open(tmp.path(), "clinic-1").unwrap();
        fs::remove_dir(tmp.path().join("clinic-1")).unwrap();
        let err = outbox.stage(1, 1, b"x").unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("clinic-1"));
    }
}
