//! Segment files on disk: their names, listing, and walking their records.
//!
//! A site's spool directory holds `<number:020>.segment` files, numbered from 1; only the
//! highest-numbered one is ever written to (it is the *active* segment), the others are
//! closed and change only by being deleted whole.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{self, HEADER_BYTES, RecordHeader, Unreadable};
use crate::error::TransportError;

const SUFFIX: &str = ".segment";

/// How much of a file's tail is read to tell a zero-filled torn tail from damage.
const TAIL_PROBE_BYTES: u64 = 1 << 20;

/// The file name of segment `number`.
pub(crate) fn segment_name(number: u64) -> String {
    format!("{number:020}{SUFFIX}")
}

/// The segment numbers present in `dir`, ascending. Other files are ignored.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u64>, TransportError> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir).map_err(TransportError::io("list spool directory", dir))? {
        let entry = entry.map_err(TransportError::io("list spool directory", dir))?;
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_suffix(SUFFIX))
            .filter(|n| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        numbers.push(number);
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// One step of a walk through a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// A record whose header is intact and whose bytes are all in the file.
    Record { header: RecordHeader, offset: u64 },
    /// The file ends here, exactly at a record boundary.
    End,
    /// The file ends inside an unfinished record starting here.
    Torn { offset: u64 },
}

/// An open segment file, read with positioned reads.
#[derive(Debug)]
pub(crate) struct SegmentFile {
    pub file: File,
    pub path: PathBuf,
}

impl SegmentFile {
    /// Opens segment `number` in `dir` for reading.
    pub fn open(dir: &Path, number: u64) -> Result<SegmentFile, std::io::Error> {
        let path = dir.join(segment_name(number));
        Ok(SegmentFile {
            file: File::open(&path)?,
            path,
        })
    }

    /// The file's current length.
    pub fn len(&self) -> Result<u64, TransportError> {
        Ok(self
            .file
            .metadata()
            .map_err(TransportError::io("inspect spool segment", &self.path))?
            .len())
    }

    /// What starts at `offset` in a file of `len` bytes.
    pub fn step(&self, offset: u64, len: u64) -> Result<Step, TransportError> {
        if offset >= len {
            return Ok(Step::End);
        }
        let remaining = len - offset;
        if remaining < HEADER_BYTES as u64 {
            return Ok(Step::Torn { offset });
        }
        // The file can shrink under a reader: the writer cuts back a batch it discarded.
        let mut bytes = [0u8; HEADER_BYTES];
        if !self.read_exact_at_or_eof(&mut bytes, offset)? {
            return Ok(Step::Torn { offset });
        }
        if let Some(header) = record::decode_header(&bytes)
            && header.record_len() <= remaining
        {
            return Ok(Step::Record { header, offset });
        }
        let record_end = record::decode_header(&bytes).map(|h| h.record_len());
        let mut probe = vec![0u8; remaining.min(TAIL_PROBE_BYTES) as usize];
        if !self.read_exact_at_or_eof(&mut probe, offset)? {
            return Ok(Step::Torn { offset });
        }
        match record::classify(&probe, remaining, record_end) {
            Unreadable::TornTail => Ok(Step::Torn { offset }),
            Unreadable::Damaged => Err(TransportError::SpoolDamaged {
                path: self.path.clone(),
                offset,
            }),
        }
    }

    /// The payload of the record `header` at `offset`, checked against its checksum.
    pub fn payload(&self, header: &RecordHeader, offset: u64) -> Result<Vec<u8>, TransportError> {
        let mut payload = vec![0u8; header.payload_len as usize];
        self.read_exact_at(&mut payload, offset + HEADER_BYTES as u64)?;
        if !record::payload_matches(header, &payload) {
            return Err(TransportError::SpoolDamaged {
                path: self.path.clone(),
                offset,
            });
        }
        Ok(payload)
    }

    /// Fills `buf` from `offset`; `false` when the file ends first.
    fn read_exact_at_or_eof(&self, buf: &mut [u8], offset: u64) -> Result<bool, TransportError> {
        match self.file.read_exact_at(buf, offset) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(TransportError::io("read spool segment", &self.path)(e)),
        }
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), TransportError> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(TransportError::io("read spool segment", &self.path))
    }
}
