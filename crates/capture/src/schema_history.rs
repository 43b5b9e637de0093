//! Schema history: the catalog (tables, keys, foreign keys) as it was at the checkpoint.
//!
//! Rows are decoded with the column names and types of their own TABLE_MAP event
//! (`binlog_row_metadata=FULL`), so column changes never mis-decode a row. What the binlog does
//! not carry (primary keys, foreign keys, which tables exist at all) comes from the catalog,
//! and that must be the catalog of the row's position, not of today: a table dropped while
//! capture was offline still has rows in the binlog before its DROP. So the catalog is saved
//! as a numbered version under `state_dir/schema/` whenever a DDL statement commits, and the
//! checkpoint names the version valid at its position. A restart reads that version instead of
//! asking `information_schema`.
//!
//! Write order keeps the pair consistent: the new version's file is written durably before
//! the checkpoint that names it; versions older than the checkpoint's are removed after.

use crate::error::CaptureError;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use tributary_schema::Catalog;

pub struct SchemaHistory {
    dir: PathBuf,
}

impl SchemaHistory {
    pub fn new(state_dir: &Path) -> SchemaHistory {
        SchemaHistory {
            dir: state_dir.join("schema"),
        }
    }

    fn path(&self, version: u64) -> PathBuf {
        self.dir.join(format!("{version:010}.json"))
    }

    pub fn load(&self, version: u64) -> Result<Catalog, CaptureError> {
        let path = self.path(version);
        let bytes = std::fs::read(&path).map_err(|e| error(&path, &e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            error(
                &path,
                &format!("unreadable ({e}); restore it from backup or reset and re-seed the site"),
            )
        })
    }

    /// Writes a version durably (temp file, fsync, rename, directory fsync).
    pub fn save(&self, version: u64, catalog: &Catalog) -> Result<(), CaptureError> {
        let path = self.path(version);
        let tmp = self.dir.join(format!(".{version:010}.json.tmp"));
        let bytes = serde_json::to_vec(catalog).map_err(|e| error(&path, &e.to_string()))?;
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let mut file = File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| error(&path, &e.to_string()))
    }

    /// Removes versions older than `current` (the checkpoint no longer needs them).
    pub fn prune(&self, current: u64) -> Result<(), CaptureError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(error(&self.dir, &e.to_string())),
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(version) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if version < current {
                std::fs::remove_file(entry.path())
                    .map_err(|e| error(&entry.path(), &e.to_string()))?;
            }
        }
        Ok(())
    }
}

fn error(path: &Path, detail: &str) -> CaptureError {
    CaptureError::State {
        path: path.display().to_string(),
        detail: detail.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_round_trip_and_old_ones_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let history = SchemaHistory::new(dir.path());
        let mut catalog = Catalog {
            database: "openmrs".into(),
            ..Catalog::default()
        };
        history.save(1, &catalog).unwrap();
        catalog.database = "openmrs-2".into();
        history.save(2, &catalog).unwrap();
        assert_eq!(history.load(1).unwrap().database, "openmrs");
        history.prune(2).unwrap();
        assert!(history.load(1).is_err(), "version 1 is gone");
        assert_eq!(history.load(2).unwrap().database, "openmrs-2");
    }

    #[test]
    fn a_missing_version_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = SchemaHistory::new(dir.path())
            .load(7)
            .unwrap_err()
            .to_string();
        assert!(err.contains("0000000007.json"), "{err}");
    }
}
