//! Rejected batches: the `rejected/` directory of each site, where batches
//! that must never be applied are kept for an operator together with a
//! `<name>.reason` file explaining why.
//!
//! Invariants: the reason file is made durable before the batch moves, so a
//! rejected batch never lacks its reason after a crash; rejecting is
//! idempotent; reasons are capped at [`MAX_REASON_BYTES`] and must describe
//! the failure only (callers never put row data in them).

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::batch_name::BatchName;
use crate::durability::{ensure_dir, sync_dir, write_file};
use crate::error::TransportError;
use crate::inbox::{DirectoryInbox, InboxEntry};
use crate::layout::{REJECTED_DIR, is_hidden, site_dir};

/// Longest reason kept, in bytes; longer reasons are cut at a character boundary.
pub const MAX_REASON_BYTES: usize = 4096;
/// Suffix of reason files.
const REASON_SUFFIX: &str = ".reason";
/// Shown when a rejected batch has no readable reason file.
const NO_REASON: &str = "(no reason recorded)";

impl DirectoryInbox {
    /// Moves a pending batch into `<root>/<site>/rejected/`, writing
    /// `<name>.reason` beside it, and returns the batch's new path.
    ///
    /// `reason` must not contain row data. Rejecting an already rejected
    /// batch returns its rejected path again (the reason is rewritten).
    pub fn reject(&self, entry: &InboxEntry, reason: &str) -> Result<PathBuf, TransportError> {
        let source = self.pending_path(entry)?;
        let site = site_dir(self.root(), &entry.site_id)?;
        let rejected_dir = site.join(REJECTED_DIR);
        ensure_dir(&rejected_dir)?;
        let name = entry.file_name();
        let destination = rejected_dir.join(&name);
        if !destination.is_file() {
            // Fail before writing a reason for a batch that does not exist.
            fs::symlink_metadata(&source)
                .map_err(TransportError::io("find batch to reject", &source))?;
        }

        let reason_path = rejected_dir.join(format!("{name}{REASON_SUFFIX}"));
        let reason_temp = rejected_dir.join(format!(".{name}{REASON_SUFFIX}.tmp"));
        write_file(&reason_temp, reason_text(reason).as_bytes())?;
        fs::rename(&reason_temp, &reason_path)
            .map_err(TransportError::io("write rejection reason", &reason_path))?;
        sync_dir(&rejected_dir)?;

        match fs::rename(&source, &destination) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound && destination.is_file() => {}
            Err(e) => {
                return Err(TransportError::io("move rejected batch to", &destination)(
                    e,
                ));
            }
        }
        sync_dir(&rejected_dir)?;
        sync_dir(&site)?;
        Ok(destination)
    }

    /// Keeps a rejected batch that arrived by another transport (Kafka) and so has no pending
    /// file: writes its bytes into `<root>/<site>/rejected/<name>` with the reason beside it,
    /// as [`DirectoryInbox::reject`] would have. Returns the batch's path. Idempotent.
    ///
    /// `site_id` must be a valid site id (it names a directory); `reason` must not contain
    /// row data.
    pub fn keep_rejected(
        &self,
        site_id: &str,
        epoch: u64,
        sequence: u64,
        sealed: &[u8],
        reason: &str,
    ) -> Result<PathBuf, TransportError> {
        let site = site_dir(self.root(), site_id)?;
        let rejected_dir = site.join(REJECTED_DIR);
        ensure_dir(&rejected_dir)?;
        let name = BatchName { epoch, sequence }.file_name();
        let reason_path = rejected_dir.join(format!("{name}{REASON_SUFFIX}"));
        let reason_temp = rejected_dir.join(format!(".{name}{REASON_SUFFIX}.tmp"));
        write_file(&reason_temp, reason_text(reason).as_bytes())?;
        fs::rename(&reason_temp, &reason_path)
            .map_err(TransportError::io("write rejection reason", &reason_path))?;
        let destination = rejected_dir.join(&name);
        let batch_temp = rejected_dir.join(format!(".{name}.tmp"));
        write_file(&batch_temp, sealed)?;
        fs::rename(&batch_temp, &destination)
            .map_err(TransportError::io("keep rejected batch as", &destination))?;
        sync_dir(&rejected_dir)?;
        Ok(destination)
    }

    /// Rejected batches of `site_id` with their reasons, sorted by (epoch,
    /// sequence). Entries' paths point into `rejected/`.
    pub fn rejected(&self, site_id: &str) -> Result<Vec<(InboxEntry, String)>, TransportError> {
        let rejected_dir = site_dir(self.root(), site_id)?.join(REJECTED_DIR);
        let entries = match fs::read_dir(&rejected_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(TransportError::io("list rejected directory", &rejected_dir)(e)),
        };
        let mut rejected = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(TransportError::io("list rejected directory", &rejected_dir))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if is_hidden(&name) || name.ends_with(REASON_SUFFIX) {
                continue;
            }
            let Ok(parsed) = BatchName::parse(&name) else {
                continue;
            };
            let reason = read_reason(&rejected_dir.join(format!("{name}{REASON_SUFFIX}")));
            rejected.push((
                InboxEntry {
                    site_id: site_id.to_owned(),
                    epoch: parsed.epoch,
                    sequence: parsed.sequence,
                    path: entry.path(),
                },
                reason,
            ));
        }
        rejected.sort_by_key(|(entry, _)| (entry.epoch, entry.sequence));
        Ok(rejected)
    }
}

/// The reason as stored: capped, newline-terminated.
fn reason_text(reason: &str) -> String {
    let mut end = reason.len().min(MAX_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut text = reason[..end].trim_end().to_owned();
    text.push('\n');
    text
}

/// A reason file's text, or a placeholder if it is missing or unreadable.
fn read_reason(path: &Path) -> String {
    let mut bytes = Vec::new();
    let read =
        File::open(path).and_then(|f| f.take(MAX_REASON_BYTES as u64 + 1).read_to_end(&mut bytes));
    match read {
        Ok(_) => {
            let text = String::from_utf8_lossy(&bytes).trim_end().to_owned();
            if text.is_empty() {
                NO_REASON.to_owned()
            } else {
                text
            }
        }
        Err(_) => NO_REASON.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::DirectoryOutbox;

    fn setup() -> (tempfile::TempDir, DirectoryInbox, InboxEntry) {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = DirectoryInbox::open(tmp.path()).unwrap();
        let outbox = DirectoryOutbox::open(tmp.path(), "clinic-1").unwrap();
        for sequence in [1, 2] {
            let staged = outbox.stage(4, sequence, b"sealed").unwrap();
            outbox.commit(&staged).unwrap();
        }
        let entry = inbox.pending("clinic-1").unwrap().remove(0);
        (tmp, inbox, entry)
    }

    #[test]
    fn reject_moves_the_batch_and_records_the_reason() {
        let (tmp, inbox, entry) = setup();
        let moved = inbox.reject(&entry, "batch failed authentication").unwrap();
        let rejected_dir = tmp.path().join("clinic-1").join(REJECTED_DIR);
        assert_eq!(moved, rejected_dir.join(entry.file_name()));
        assert_eq!(fs::read(&moved).unwrap(), b"sealed");
        assert!(!entry.path.exists());
        let reason_file = rejected_dir.join(format!("{}.reason", entry.file_name()));
        assert_eq!(
            fs::read_to_string(reason_file).unwrap(),
            "batch failed authentication\n"
        );
        assert_eq!(
            inbox
                .pending("clinic-1")
                .unwrap()
                .iter()
                .map(|e| e.sequence)
                .collect::<Vec<_>>(),
            vec![2]
        );
        let rejected = inbox.rejected("clinic-1").unwrap();
        assert_eq!(rejected.len(), 1);
        assert_eq!((rejected[0].0.epoch, rejected[0].0.sequence), (4, 1));
        assert_eq!(rejected[0].0.path, moved);
        assert_eq!(rejected[0].1, "batch failed authentication");
    }

    #[test]
    fn keep_rejected_stores_bytes_and_reason_where_reject_would() {
        let (_tmp, inbox, _entry) = setup();
        let kept = inbox
            .keep_rejected("clinic-1", 4, 9, b"from kafka", "older epoch")
            .unwrap();
        assert_eq!(fs::read(&kept).unwrap(), b"from kafka");
        let again = inbox
            .keep_rejected("clinic-1", 4, 9, b"from kafka", "older epoch")
            .unwrap();
        assert_eq!(kept, again);
        let rejected = inbox.rejected("clinic-1").unwrap();
        assert_eq!(rejected.len(), 1);
        assert_eq!((rejected[0].0.epoch, rejected[0].0.sequence), (4, 9));
        assert_eq!(rejected[0].1, "older epoch");
        assert!(matches!(
            inbox.keep_rejected("../x", 1, 1, b"x", "r"),
            Err(TransportError::InvalidSiteId(_))
        ));
    }

    #[test]
    fn reject_is_idempotent() {
        let (_tmp, inbox, entry) = setup();
        let first = inbox.reject(&entry, "bad").unwrap();
        assert_eq!(inbox.reject(&entry, "bad").unwrap(), first);
        assert_eq!(inbox.rejected("clinic-1").unwrap().len(), 1);
    }

    #[test]
    fn rejecting_a_batch_that_never_existed_fails() {
        let (_tmp, inbox, mut entry) = setup();
        entry.sequence = 99;
        entry.path = entry.path.with_file_name(entry.file_name());
        let err = inbox.reject(&entry, "bad").unwrap_err();
        assert!(
            matches!(
                err,
                TransportError::Io {
                    operation: "find batch to reject",
                    ..
                }
            ),
            "{err}"
        );
        let rejected_dir = entry.path.parent().unwrap().join(REJECTED_DIR);
        let leftovers: Vec<_> = fs::read_dir(rejected_dir).unwrap().collect();
        assert!(leftovers.is_empty(), "orphan reason file written");
    }

    #[test]
    fn missing_reason_gets_a_placeholder_and_long_reasons_are_capped() {
        let (tmp, inbox, entry) = setup();
        let long = "é".repeat(MAX_REASON_BYTES);
        inbox.reject(&entry, &long).unwrap();
        let stored = inbox.rejected("clinic-1").unwrap().remove(0).1;
        assert!(stored.len() <= MAX_REASON_BYTES && stored.chars().all(|c| c == 'é'));
        let reason_file = tmp
            .path()
            .join("clinic-1")
            .join(REJECTED_DIR)
            .join(format!("{}.reason", entry.file_name()));
        fs::remove_file(reason_file).unwrap();
        assert_eq!(inbox.rejected("clinic-1").unwrap().remove(0).1, NO_REASON);
        assert!(inbox.rejected("clinic-9").unwrap().is_empty());
    }
}
