//! The capture checkpoint: where the binlog stream resumes, and which sequence number the
//! next batch takes.
//!
//! Invariant 1 (nothing acknowledged is lost) and invariant 2 (sequences are never reused for
//! different content) meet here. Publishing a batch is a three-step protocol:
//! 1. the sealed batch is *staged* (written and fsynced, not yet visible to the applier);
//! 2. the checkpoint is saved (atomically: temp file, fsync, rename, directory fsync) with the
//!    position after the batch, the next sequence, and the name of the staged batch;
//! 3. the staged batch is committed (renamed into view).
//!
//! A crash before 2 leaves a staged file that no checkpoint names: it is discarded and the same
//! events are read again into the same sequence number. A crash between 2 and 3 leaves a
//! staged file the checkpoint names: recovery commits it. So a sequence number, once it
//! reaches the applier, always carries the same transactions.
//!
//! The position is kept under two keys, taken together at the end of the same transaction:
//! `gtid_position` and `binlog_position` (the binlog file and the end of that transaction's
//! commit event). Which one a session resumes from is decided in `resume`. Fields added over
//! time are optional, so checkpoints written by older versions still load.

use crate::error::CaptureError;
use crate::position::BinlogFilePosition;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

const STATE_FILE: &str = "capture-state.json";
const LOCK_FILE: &str = "capture.lock";

/// The durable capture state of one site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub site_id: String,
    /// A new epoch starts a new sequence lineage (after the capture state is reset).
    pub epoch: u64,
    /// The sequence number the next batch takes.
    pub next_sequence: u64,
    /// GTID position after the last transaction covered by a durable batch (MariaDB
    /// `domain-server-seq` list, or `mysql-gtid:<set>`; see `position`).
    pub gtid_position: String,
    /// Binlog file and offset after the same transaction (the end of its commit event).
    /// `None` in checkpoints written before it was recorded, before a GTID-resumed capture
    /// saw its first transaction end, and after a commit event that carried no position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog_position: Option<BinlogFilePosition>,
    /// The batch staged but perhaps not yet committed when this checkpoint was written.
    #[serde(default)]
    pub staged_sequence: Option<u64>,
    /// Set while the first seed of a site runs: the stream must not start from the snapshot
    /// position before every snapshot row is durable.
    #[serde(default)]
    pub seeding: bool,
    /// The schema-history version valid at `gtid_position` (see `schema_history`).
    #[serde(default)]
    pub schema_version: Option<u64>,
    /// Set while a transaction too large for one batch is being published in parts: the
    /// position is still before it, and this many of its rows are already durable.
    #[serde(default)]
    pub partial: Option<PartialTransaction>,
    /// Set while a seed runs: how far its durable batches reach, so an interrupted seed goes
    /// on from its last finished chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<SeedProgress>,
}

/// How far a seed's published batches reach: every table before `table_index` is sent whole,
/// and the one at `table_index` up to `after_key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedProgress {
    /// The tables the seed sends, in the order it sends them.
    pub tables: Vec<String>,
    pub table_index: usize,
    /// The last primary-key value sent of the table at `table_index` (None: none of it yet).
    pub after_key: Option<i64>,
    /// Rows in published batches so far.
    pub rows: u64,
}

/// How far into a chunked source transaction the published batches reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialTransaction {
    pub gtid: String,
    /// Synced rows of the transaction already in published batches.
    pub rows: u64,
    /// Parts already published.
    pub parts: u32,
}

impl Checkpoint {
    /// A new sequence lineage. Its epoch is the current Unix time, so a site whose capture
    /// state is reset (after a purged binlog, a lost state directory) starts an epoch HQ has
    /// not seen, instead of reusing sequence numbers HQ would skip as duplicates.
    /// (A clock set far behind could give an epoch below one HQ has seen; HQ rejects such
    /// batches visibly rather than taking them for duplicates.)
    pub fn new(site_id: &str, gtid_position: String) -> Checkpoint {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1);
        let epoch = now.max(1);
        Checkpoint {
            site_id: site_id.to_owned(),
            epoch,
            next_sequence: 1,
            gtid_position,
            binlog_position: None,
            staged_sequence: None,
            seeding: false,
            schema_version: None,
            partial: None,
            seed: None,
        }
    }
}

/// The state directory of one site's capture, held under an exclusive lock for as long as
/// this value lives (capture and seed never write one site's stream at the same time).
pub struct StateDir {
    dir: PathBuf,
    _lock: File,
}

impl StateDir {
    pub fn open(dir: &Path) -> Result<StateDir, CaptureError> {
        std::fs::create_dir_all(dir).map_err(|e| state_error(dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| state_error(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(CaptureError::Locked {
                    path: dir.display().to_string(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(state_error(&lock_path, e)),
        }
        Ok(StateDir {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    pub fn load(&self) -> Result<Option<Checkpoint>, CaptureError> {
        Self::peek(&self.dir)
    }

    /// Reads the checkpoint without taking the lock (for status and tests; the file is always
    /// replaced atomically, so a reader sees the old or the new checkpoint, never a mix).
    pub fn peek(dir: &Path) -> Result<Option<Checkpoint>, CaptureError> {
        let path = dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| CaptureError::State {
                        path: path.display().to_string(),
                        detail: format!(
                            "unreadable ({e}); restore it from backup or reset the site"
                        ),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(state_error(&path, e)),
        }
    }

    /// Replaces the checkpoint atomically and durably.
    pub fn save(&self, checkpoint: &Checkpoint) -> Result<(), CaptureError> {
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(format!(".{STATE_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(checkpoint).map_err(|e| CaptureError::State {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| state_error(&path, e))
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

fn state_error(path: &Path, e: std::io::Error) -> CaptureError {
    CaptureError::State {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut cp = Checkpoint::new("site-a", "0-1-5".into());
        {
            let state = StateDir::open(dir.path()).unwrap();
            assert_eq!(state.load().unwrap(), None);
            cp.next_sequence = 7;
            cp.staged_sequence = Some(6);
            state.save(&cp).unwrap();
        }
        let state = StateDir::open(dir.path()).unwrap();
        assert_eq!(state.load().unwrap(), Some(cp));
    }

    #[test]
    fn the_binlog_position_round_trips_and_older_checkpoints_still_load() {
        let dir = tempfile::tempdir().unwrap();
        // As an earlier version wrote it: no binlog_position.
        let old = r#"{
          "site_id": "clinic-a",
          "epoch": 1700000000,
          "next_sequence": 12,
          "gtid_position": "0-1-42",
          "staged_sequence": 11,
          "seeding": false,
          "schema_version": 3,
          "partial": null
        }"#;
        std::fs::write(dir.path().join(STATE_FILE), old).unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let mut cp = state.load().unwrap().unwrap();
        assert_eq!(cp.binlog_position, None);
        assert_eq!(
            (cp.next_sequence, cp.gtid_position.as_str()),
            (12, "0-1-42")
        );

        cp.binlog_position = Some(BinlogFilePosition {
            file: "mariadb-bin.000007".into(),
            offset: 8_812,
        });
        state.save(&cp).unwrap();
        let text = std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        assert!(
            text.contains(r#""binlog_position": {"#) && text.contains(r#""offset": 8812"#),
            "{text}"
        );
        assert_eq!(state.load().unwrap(), Some(cp));
    }

    #[test]
    fn a_second_writer_is_refused_while_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _first = StateDir::open(dir.path()).unwrap();
        let second = StateDir::open(dir.path());
        assert!(matches!(second, Err(CaptureError::Locked { .. })));
    }

    #[test]
    fn corrupt_state_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let err = state.load().unwrap_err().to_string();
        assert!(err.contains(STATE_FILE), "{err}");
    }
}
