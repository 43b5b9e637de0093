//! [`CarriedFileWriter`]: writes one site's batches of one epoch into a carried file, one
//! batch at a time, and publishes the file atomically.
//!
//! Invariants: the file is written under a hidden temporary name in the destination's
//! directory and only renamed to its name once complete, its header rewritten with the real
//! range and count, and fsynced (the directory too), so a crash or a pulled stick leaves the
//! old file or none, never a partial one; a writer dropped before `finish` removes its
//! temporary file; every batch added is checked (well framed, this site and epoch, the
//! sequence its caller says, after the previous one) before a byte of it is written.

use std::fs::{self, File};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tributary_batch::{read_header, validate_site_id};

use super::error::CarriedFileError;
use super::header::CarriedFileHeader;
use super::{MAX_CARRIED_BATCH_BYTES, crc32, encode_frame};

/// What a finished carried file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedFileSummary {
    /// The file written.
    pub path: PathBuf,
    /// Its header.
    pub header: CarriedFileHeader,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Writes a carried file; see the module documentation.
#[derive(Debug)]
pub struct CarriedFileWriter {
    path: PathBuf,
    temp_path: PathBuf,
    /// `None` once finished (or failed past repair).
    file: Option<BufWriter<File>>,
    header: CarriedFileHeader,
    /// The sequence of the last batch added.
    last: Option<u64>,
    bytes: u64,
}

impl CarriedFileWriter {
    /// Starts a carried file for `site_id`'s batches of `epoch`, to appear at `path` when
    /// finished (replacing a file already there).
    pub fn create(path: &Path, site_id: &str, epoch: u64) -> Result<Self, CarriedFileError> {
        let refused = |problem: String| CarriedFileError::Refused {
            path: path.to_owned(),
            problem,
        };
        validate_site_id(site_id).map_err(|e| refused(e.to_string()))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| refused("the path names no file".into()))?;
        let temp_path = path.with_file_name(format!(".{name}.partial"));
        let created_at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let header = CarriedFileHeader {
            site_id: site_id.to_owned(),
            epoch,
            first_sequence: 0,
            last_sequence: 0,
            batch_count: 0,
            created_at_unix_ms,
        };
        let file = File::create(&temp_path)
            .map_err(CarriedFileError::io("create carried file", &temp_path))?;
        let mut writer = CarriedFileWriter {
            path: path.to_owned(),
            temp_path,
            file: Some(BufWriter::new(file)),
            bytes: 0,
            header,
            last: None,
        };
        // A placeholder of the final length; `finish` rewrites it.
        let placeholder = writer.header.encode();
        writer.write(&placeholder)?;
        Ok(writer)
    }

    /// Adds the sealed batch `sealed`, which must be this site's batch `sequence` of this
    /// epoch, after every batch added so far.
    pub fn append(&mut self, sequence: u64, sealed: &[u8]) -> Result<(), CarriedFileError> {
        let refused = |problem: String| CarriedFileError::Refused {
            path: self.path.clone(),
            problem,
        };
        if self.last.is_some_and(|last| sequence <= last) {
            return Err(refused(format!(
                "sequence {sequence} does not follow sequence {}",
                self.last.unwrap_or_default()
            )));
        }
        if self.header.batch_count == u32::MAX {
            return Err(refused(
                "a carried file holds at most 2^32-1 batches".into(),
            ));
        }
        let length = u32::try_from(sealed.len())
            .ok()
            .filter(|&l| u64::from(l) <= MAX_CARRIED_BATCH_BYTES && l > 0)
            .ok_or_else(|| {
                refused(format!(
                    "batch {sequence} is {} bytes; a carried batch holds 1 to {MAX_CARRIED_BATCH_BYTES}",
                    sealed.len()
                ))
            })?;
        let header = read_header(sealed)
            .map_err(|e| refused(format!("batch {sequence} is not a well-framed batch: {e}")))?;
        if header.site_id != self.header.site_id
            || header.epoch != self.header.epoch
            || header.sequence != sequence
        {
            return Err(refused(format!(
                "the batch given as site '{}' epoch {} sequence {sequence} says site '{}' epoch {} \
                 sequence {} in its header",
                self.header.site_id,
                self.header.epoch,
                header.site_id,
                header.epoch,
                header.sequence
            )));
        }
        self.write(&encode_frame(sequence, length))?;
        self.write(sealed)?;
        self.write(&crc32(sealed).to_be_bytes())?;
        if self.last.is_none() {
            self.header.first_sequence = sequence;
        }
        self.header.last_sequence = sequence;
        self.header.batch_count += 1;
        self.last = Some(sequence);
        Ok(())
    }

    /// Batches added so far.
    pub fn batch_count(&self) -> u32 {
        self.header.batch_count
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// Writes the final header, makes the file durable and gives it its name. A file without
    /// a batch is refused (and removed): it would carry nothing.
    pub fn finish(mut self) -> Result<CarriedFileSummary, CarriedFileError> {
        if self.header.batch_count == 0 {
            return Err(CarriedFileError::Refused {
                path: self.path.clone(),
                problem: "no batch was added".into(),
            });
        }
        let Some(buffered) = self.file.take() else {
            return Err(self.broken());
        };
        let temp = self.temp_path.clone();
        let mut file = buffered
            .into_inner()
            .map_err(|e| CarriedFileError::io("write carried file", &temp)(e.into_error()))?;
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(&self.header.encode()))
            .map_err(CarriedFileError::io("write carried file header", &temp))?;
        file.sync_all()
            .map_err(CarriedFileError::io("fsync carried file", &temp))?;
        drop(file);
        fs::rename(&temp, &self.path)
            .map_err(CarriedFileError::io("rename carried file into", &self.path))?;
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(CarriedFileError::io("fsync directory", dir))?;
        Ok(CarriedFileSummary {
            path: self.path.clone(),
            header: self.header.clone(),
            bytes: self.bytes,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), CarriedFileError> {
        let Some(file) = self.file.as_mut() else {
            return Err(self.broken());
        };
        if let Err(e) = file.write_all(bytes) {
            // A partial record may be in the file: nothing more may be appended.
            self.file = None;
            return Err(CarriedFileError::io("write carried file", &self.temp_path)(
                e,
            ));
        }
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    fn broken(&self) -> CarriedFileError {
        CarriedFileError::Refused {
            path: self.path.clone(),
            problem: "an earlier write failed; start the file again".into(),
        }
    }
}

impl Drop for CarriedFileWriter {
    fn drop(&mut self) {
        // Finished writers renamed the file away; anything else is an abandoned partial file.
        if fs::symlink_metadata(&self.temp_path).is_ok() {
            let _ = fs::remove_file(&self.temp_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{key, sealed};
    use super::*;

    #[test]
    fn a_finished_file_appears_complete_and_nothing_else_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clinic-1.carried");
        let key = key("clinic-1");
        let mut writer = CarriedFileWriter::create(&path, "clinic-1", 7).unwrap();
        assert!(!path.exists(), "no file under its name before finish");
        for sequence in [3, 4, 9] {
            writer
                .append(sequence, &sealed(&key, "clinic-1", 7, sequence))
                .unwrap();
        }
        let summary = writer.finish().unwrap();
        assert_eq!(
            (
                summary.header.first_sequence,
                summary.header.last_sequence,
                summary.header.batch_count
            ),
            (3, 9, 3)
        );
        assert_eq!(fs::metadata(&path).unwrap().len(), summary.bytes);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }

    #[test]
    fn batches_that_do_not_belong_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.carried");
        let key = key("clinic-1");
        let mut writer = CarriedFileWriter::create(&path, "clinic-1", 7).unwrap();
        writer.append(5, &sealed(&key, "clinic-1", 7, 5)).unwrap();
        let before = writer.bytes_written();
        for (sequence, batch) in [
            (5, sealed(&key, "clinic-1", 7, 5)),
            (4, sealed(&key, "clinic-1", 7, 4)),
            (6, sealed(&key, "clinic-1", 8, 6)),
            (6, sealed(&key, "clinic-1", 7, 7)),
            (6, b"not a batch".to_vec()),
            (6, Vec::new()),
        ] {
            let err = writer.append(sequence, &batch).unwrap_err();
            assert!(matches!(err, CarriedFileError::Refused { .. }), "{err}");
        }
        let other = key_for_other_site();
        let err = writer.append(6, &other).unwrap_err();
        assert!(err.to_string().contains("clinic-2"), "{err}");
        assert_eq!(writer.bytes_written(), before);
        assert_eq!(writer.finish().unwrap().header.batch_count, 1);
    }

    fn key_for_other_site() -> Vec<u8> {
        sealed(&key("clinic-2"), "clinic-2", 7, 6)
    }

    #[test]
    fn an_abandoned_or_empty_file_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.carried");
        let key = key("clinic-1");
        let mut writer = CarriedFileWriter::create(&path, "clinic-1", 7).unwrap();
        writer.append(1, &sealed(&key, "clinic-1", 7, 1)).unwrap();
        drop(writer);
        let writer = CarriedFileWriter::create(&path, "clinic-1", 7).unwrap();
        assert!(matches!(
            writer.finish(),
            Err(CarriedFileError::Refused { .. })
        ));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(CarriedFileWriter::create(&path, "../x", 7).is_err());
    }
}
