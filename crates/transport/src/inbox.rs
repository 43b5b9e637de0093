//! [`DirectoryInbox`]: the applier's reader over every site's directory in
//! the shared transport root.
//!
//! Invariants: only committed, canonically named regular files are offered
//! (hidden, staged, temporary and rejected files never are), in (epoch,
//! sequence) order; operations on an entry act only on the path its site,
//! epoch and sequence map to in this inbox, so a forged entry cannot make the
//! inbox read or delete anything else; reads are size-bounded; deletions are
//! made durable and are idempotent.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use tributary_batch::validate_site_id;

use crate::batch_name::BatchName;
use crate::durability::{ensure_dir, sync_dir};
use crate::error::TransportError;
use crate::layout::{MAX_BATCH_FILE_BYTES, REJECTED_DIR, is_hidden, site_dir};

/// A committed batch waiting in a site's directory.
///
/// The fields come from directory and file names, which anyone with write
/// access to the share controls: the applier must check them against the
/// authenticated header returned by `tributary_batch::open` before applying.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InboxEntry {
    /// The site whose directory holds the batch.
    pub site_id: String,
    /// The batch's epoch (from its file name).
    pub epoch: u64,
    /// The batch's sequence (from its file name).
    pub sequence: u64,
    /// The batch file.
    pub path: PathBuf,
}

impl InboxEntry {
    /// The batch's file name, `<epoch:010>-<sequence:020>.batch`.
    pub fn file_name(&self) -> String {
        self.name().file_name()
    }

    pub(crate) fn name(&self) -> BatchName {
        BatchName {
            epoch: self.epoch,
            sequence: self.sequence,
        }
    }
}

/// The applier's view of the transport root.
#[derive(Debug, Clone)]
pub struct DirectoryInbox {
    root: PathBuf,
}

impl DirectoryInbox {
    /// Opens the inbox at `root`, creating the directory if missing.
    pub fn open(root: &Path) -> Result<Self, TransportError> {
        ensure_dir(root)?;
        Ok(DirectoryInbox {
            root: root.to_owned(),
        })
    }

    /// The transport root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Site ids that have a directory under the root, sorted. Entries that
    /// are not directories or not valid site ids are skipped.
    pub fn sites(&self) -> Result<Vec<String>, TransportError> {
        let mut sites = Vec::new();
        for entry in fs::read_dir(&self.root)
            .map_err(TransportError::io("list transport root", &self.root))?
        {
            let entry = entry.map_err(TransportError::io("list transport root", &self.root))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if is_hidden(&name) || validate_site_id(&name).is_err() {
                continue;
            }
            if fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()) {
                sites.push(name);
            }
        }
        sites.sort();
        Ok(sites)
    }

    /// Committed batches of `site_id`, sorted by (epoch, sequence). A site
    /// without a directory has none. Hidden, staged and `.tmp` files and the
    /// `rejected/` directory are skipped; anything else that is not a
    /// canonically named regular batch file is skipped with a warning.
    pub fn pending(&self, site_id: &str) -> Result<Vec<InboxEntry>, TransportError> {
        let dir = site_dir(&self.root, site_id)?;
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(TransportError::io("list site directory", &dir)(e)),
        };
        let mut pending = Vec::new();
        for entry in entries {
            let entry = entry.map_err(TransportError::io("list site directory", &dir))?;
            let path = entry.path();
            let Ok(name) = entry.file_name().into_string() else {
                tracing::warn!(file = %path.display(), "ignoring file whose name is not UTF-8 in the transport directory");
                continue;
            };
            if is_hidden(&name) || name == REJECTED_DIR || name.ends_with(".tmp") {
                continue;
            }
            let parsed = match BatchName::parse(&name) {
                Ok(parsed) => parsed,
                Err(error) => {
                    tracing::warn!(file = %path.display(), %error, "ignoring file with an unparsable name in the transport directory");
                    continue;
                }
            };
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                tracing::warn!(file = %path.display(), "ignoring batch name that is not a regular file");
                continue;
            }
            pending.push(InboxEntry {
                site_id: site_id.to_owned(),
                epoch: parsed.epoch,
                sequence: parsed.sequence,
                path,
            });
        }
        pending.sort_by_key(|entry| (entry.epoch, entry.sequence));
        Ok(pending)
    }

    /// Reads a pending batch, refusing files over [`MAX_BATCH_FILE_BYTES`].
    pub fn read(&self, entry: &InboxEntry) -> Result<Vec<u8>, TransportError> {
        self.read_bounded(entry, MAX_BATCH_FILE_BYTES)
    }

    fn read_bounded(&self, entry: &InboxEntry, limit: u64) -> Result<Vec<u8>, TransportError> {
        let path = self.pending_path(entry)?;
        let file = File::open(&path).map_err(TransportError::io("open batch file", &path))?;
        let size = file
            .metadata()
            .map_err(TransportError::io("inspect batch file", &path))?
            .len();
        let too_large = |size| TransportError::BatchTooLarge {
            path: path.clone(),
            size,
            limit,
        };
        if size > limit {
            return Err(too_large(size));
        }
        let mut bytes = Vec::new();
        file.take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(TransportError::io("read batch file", &path))?;
        if bytes.len() as u64 > limit {
            return Err(too_large(bytes.len() as u64));
        }
        Ok(bytes)
    }

    /// Deletes an applied batch and fsyncs its directory. Already gone is fine.
    pub fn acknowledge(&self, entry: &InboxEntry) -> Result<(), TransportError> {
        let path = self.pending_path(entry)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(TransportError::io("delete acknowledged batch", &path)(e)),
        }
        sync_dir(&site_dir(&self.root, &entry.site_id)?)
    }

    /// The path `entry` must have: its site directory plus its canonical name.
    pub(crate) fn pending_path(&self, entry: &InboxEntry) -> Result<PathBuf, TransportError> {
        let expected = site_dir(&self.root, &entry.site_id)?.join(entry.file_name());
        if entry.path != expected {
            return Err(TransportError::ForeignEntry {
                path: entry.path.clone(),
                expected,
            });
        }
        Ok(expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::DirectoryOutbox;

    fn publish(root: &Path, site: &str, epoch: u64, sequence: u64, bytes: &[u8]) -> PathBuf {
        let outbox = DirectoryOutbox::open(root, site).unwrap();
        let staged = outbox.stage(epoch, sequence, bytes).unwrap();
        outbox.commit(&staged).unwrap()
    }

    fn positions(entries: &[InboxEntry]) -> Vec<(u64, u64)> {
        entries.iter().map(|e| (e.epoch, e.sequence)).collect()
    }

    #[test]
    fn open_creates_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = DirectoryInbox::open(&tmp.path().join("share")).unwrap();
        assert!(inbox.root().is_dir());
        assert_eq!(inbox.sites().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn sites_lists_only_valid_site_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = DirectoryInbox::open(tmp.path()).unwrap();
        for dir in ["clinic-b", "clinic-a", ".hidden", "bad name"] {
            fs::create_dir(tmp.path().join(dir)).unwrap();
        }
        fs::write(tmp.path().join("clinic-file"), b"x").unwrap();
        assert_eq!(inbox.sites().unwrap(), vec!["clinic-a", "clinic-b"]);
    }

    #[test]
    fn staged_batches_are_invisible_until_committed() {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = DirectoryInbox::open(tmp.path()).unwrap();
        let outbox = DirectoryOutbox::open(tmp.path(), "clinic-1").unwrap();
        let staged = outbox.stage(1, 1, b"sealed").unwrap();
        assert!(inbox.pending("clinic-1").unwrap().is_empty());
        let path = outbox.commit(&staged).unwrap();
        let pending = inbox.pending("clinic-1").unwrap();
        assert_eq!(
            pending,
            vec![InboxEntry {
                site_id: "clinic-1".into(),
                epoch: 1,
                sequence: 1,
                path,
            }]
        );
        assert_eq!(inbox.read(&pending[0]).unwrap(), b"sealed");
    }

    #[test]
    fn pending_orders_by_epoch_then_sequence_numerically() {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = DirectoryInbox::open(tmp.path()).unwrap();
        for (epoch, sequence) in [
            (10_000_000_000, 0),
            (2, 1),
            (1, 10),
            (9_999_999_999, 5),
            (1, 9),
        ] {
            publish(tmp.path(), "clinic-1", epoch, sequence, b"x");
        }
        assert_eq!(
            positions(&inbox.pending("clinic-1").unwrap()),
            vec![
                (1, 9),
                (1, 10),
                (2, 1),
                (9_999_999_999, 5),
                (10_000_000_000, 0)
            ]
        );
    }

    #[test]
    fn pending_ignores_everything_but_committed_batches() {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = DirectoryInbox::open(tmp.path()).unwrap();
        publish(tmp.path(), "clinic-1", 1, 2, b"x");
        let site = tmp.path().join("clinic-1");
        for junk in [
            "notes.txt",
            "1-2.batch",
            "0000000001-00000000000000000003.batch.tmp",
            ".0000000001-00000000000000000004.batch",
            ".0000000001-00000000000000000005.batch.staged",
        ] {
            fs::write(site.join(junk), b"x").unwrap();
        }
        fs::create_dir(site.join("0000000001-00000000000000000006.batch")).unwrap();
        fs::create_dir(site.join(REJECTED_DIR)).unwrap();
        fs::write(
            site.join(REJECTED_DIR)
                .join("0000000001-00000000000000000007.batch"),
            b"x",
        )
        .unwrap();
        assert_eq!(positions(&inbox.pending("clinic-1").unwrap()), vec![(1, 2)]);
        assert!(inbox.pending("clinic-unknown").unwrap().is_empty());
        assert!(matches!(
            inbox.pending(".."),
            Err(TransportError::InvalidSiteId(_))
        ));
    }

    #[test]
    fn unparsable_names_are_warned_about_by_file_name() {
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Captured {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0
                    .lock()
                    .map_err(|_| io::Error::other("poisoned"))?
                    .extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }

        let tmp = tempfile::tempdir().unwrap();
        let inbox = DirectoryInbox::open(tmp.path()).unwrap();
        publish(tmp.path(), "clinic-1", 1, 1, b"x");
        fs::write(tmp.path().join("clinic-1/stray-42.batch"), b"x").unwrap();
        fs::write(tmp.path().join("clinic-1/.quiet.staged"), b"x").unwrap();
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let pending =
            tracing::subscriber::with_default(subscriber, || inbox.pending("clinic-1").unwrap());
        assert_eq!(positions(&pending), vec![(1, 1)]);
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(
            log.contains("WARN") && log.contains("stray-42.batch"),
            "{log}"
        );
        assert!(
            !log.contains("quiet"),
            "hidden files must be skipped silently: {log}"
        );
    }

    #[test]
    fn acknowledge_deletes_and_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = DirectoryInbox::open(tmp.path()).unwrap();
        let path = publish(tmp.path(), "clinic-1", 1, 1, b"x");
        let entry = inbox.pending("clinic-1").unwrap().remove(0);
        inbox.acknowledge(&entry).unwrap();
        assert!(!path.exists());
        inbox.acknowledge(&entry).unwrap();
        assert!(inbox.pending("clinic-1").unwrap().is_empty());
    }

    #[test]
    fn forged_entries_cannot_touch_other_files() {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = DirectoryInbox::open(tmp.path()).unwrap();
        publish(tmp.path(), "clinic-1", 1, 1, b"x");
        let victim = tmp.path().join("precious");
        fs::write(&victim, b"keep me").unwrap();
        let mut entry = inbox.pending("clinic-1").unwrap().remove(0);
        entry.path = victim.clone();
        assert!(matches!(
            inbox.acknowledge(&entry),
            Err(TransportError::ForeignEntry { .. })
        ));
        assert!(matches!(
            inbox.read(&entry),
            Err(TransportError::ForeignEntry { .. })
        ));
        assert!(victim.exists());
    }

    #[test]
    fn read_refuses_oversized_files() {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = DirectoryInbox::open(tmp.path()).unwrap();
        publish(tmp.path(), "clinic-1", 1, 1, b"0123456789");
        let entry = inbox.pending("clinic-1").unwrap().remove(0);
        assert_eq!(inbox.read_bounded(&entry, 10).unwrap(), b"0123456789");
        let err = inbox.read_bounded(&entry, 9).unwrap_err();
        assert!(matches!(
            err,
            TransportError::BatchTooLarge {
                size: 10,
                limit: 9,
                ..
            }
        ));
        assert!(!err.is_transient());
    }

    #[test]
    fn read_of_a_vanished_file_is_an_io_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = DirectoryInbox::open(tmp.path()).unwrap();
        let path = publish(tmp.path(), "clinic-1", 1, 1, b"x");
        let entry = inbox.pending("clinic-1").unwrap().remove(0);
        fs::remove_file(&path).unwrap();
        let err = inbox.read(&entry).unwrap_err();
        assert!(matches!(
            err,
            TransportError::Io {
                operation: "open batch file",
                ..
            }
        ));
        assert!(err.to_string().contains(&entry.file_name()));
    }
}
