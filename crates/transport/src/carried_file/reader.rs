//! [`CarriedFileReader`]: reads a carried file one batch at a time.
//!
//! Invariants: at most one batch is in memory; a buffer grows only with bytes actually read,
//! and only up to a length that passed its frame CRC and the batch limit; a batch is handed
//! out only when its bytes match their CRC and its own header names the site, epoch and
//! sequence the file puts it at. Damage inside a batch is an item ([`CarriedItem::Damaged`])
//! and reading goes on; anything that loses the position of the next record ends the
//! iteration with an error naming the offset and the first sequence not read.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use tributary_batch::read_header;

use super::error::{BatchDamage, CarriedFileError};
use super::header::{CarriedFileHeader, fill};
use super::{
    MAX_CARRIED_BATCH_BYTES, RECORD_FRAME_BYTES, RECORD_TRAILER_BYTES, crc32, encode_frame,
};

/// The largest buffer reserved ahead of reading a batch; it grows past this only as bytes
/// arrive, so a length that lies costs no memory the file does not back.
const RESERVE_BYTES: u64 = 1024 * 1024;

/// One record of a carried file.
#[derive(Debug)]
pub enum CarriedItem {
    /// An intact sealed batch (still sealed: it is authenticated when it is opened).
    Batch {
        /// Its sequence, as its frame and its own header say.
        sequence: u64,
        /// The sealed batch.
        bytes: Vec<u8>,
    },
    /// A batch that was damaged in the file; the next record is read as usual.
    Damaged {
        /// Its sequence (from the record's frame, which passed its CRC).
        sequence: u64,
        /// What is wrong with it.
        damage: BatchDamage,
    },
}

/// Reads a carried file; an iterator of [`CarriedItem`]s that ends after the first error.
#[derive(Debug)]
pub struct CarriedFileReader<R = BufReader<File>> {
    path: PathBuf,
    input: R,
    header: CarriedFileHeader,
    /// Bytes consumed so far.
    offset: u64,
    /// Records read so far.
    read: u32,
    /// The sequence of the last record read.
    previous: Option<u64>,
    done: bool,
}

impl CarriedFileReader {
    /// Opens `path` and reads its header.
    pub fn open(path: &Path) -> Result<Self, CarriedFileError> {
        let file = File::open(path).map_err(CarriedFileError::io("open carried file", path))?;
        CarriedFileReader::from_reader(BufReader::new(file), path)
    }
}

impl<R: Read> CarriedFileReader<R> {
    /// Reads the header from `input`; `path` names it in errors.
    pub fn from_reader(mut input: R, path: &Path) -> Result<Self, CarriedFileError> {
        let (header, offset) = CarriedFileHeader::decode(&mut input, path)?;
        Ok(CarriedFileReader {
            path: path.to_owned(),
            input,
            header,
            offset,
            read: 0,
            previous: None,
            done: false,
        })
    }

    /// The file's header (what it says it holds).
    pub fn header(&self) -> &CarriedFileHeader {
        &self.header
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The first sequence not read yet.
    fn resume_from(&self) -> u64 {
        self.previous
            .map_or(self.header.first_sequence, |p| p.saturating_add(1))
    }

    fn next_item(&mut self) -> Result<Option<CarriedItem>, CarriedFileError> {
        let count = self.header.batch_count;
        if self.read == count {
            let mut probe = [0u8; 1];
            if fill(&mut self.input, &mut probe).map_err(self.io())? > 0 {
                return Err(CarriedFileError::TrailingBytes {
                    path: self.path.clone(),
                    offset: self.offset,
                });
            }
            return Ok(None);
        }
        let index = self.read + 1;
        let frame_at = self.offset;
        let truncated = |reader: &Self, offset: u64, inside: &'static str, resume_from: u64| {
            CarriedFileError::Truncated {
                path: reader.path.clone(),
                offset,
                inside,
                index,
                count,
                resume_from,
            }
        };

        let mut frame = [0u8; RECORD_FRAME_BYTES];
        let got = fill(&mut self.input, &mut frame).map_err(self.io())?;
        if got < frame.len() {
            let offset = frame_at + got as u64;
            return Err(truncated(self, offset, "a frame", self.resume_from()));
        }
        let sequence = u64::from_be_bytes(frame[..8].try_into().unwrap_or_default());
        let length = u32::from_be_bytes(frame[8..12].try_into().unwrap_or_default());
        if encode_frame(sequence, length) != frame {
            return Err(CarriedFileError::FrameDamaged {
                path: self.path.clone(),
                offset: frame_at,
                index,
                count,
                resume_from: self.resume_from(),
            });
        }
        self.check_place(index, sequence, length, frame_at)?;
        self.offset += RECORD_FRAME_BYTES as u64;

        let length = u64::from(length);
        let mut bytes = Vec::with_capacity(length.min(RESERVE_BYTES) as usize);
        let got = (&mut self.input)
            .take(length)
            .read_to_end(&mut bytes)
            .map_err(self.io())?;
        self.offset += got as u64;
        if (got as u64) < length {
            return Err(truncated(self, self.offset, "a batch", sequence));
        }
        let mut trailer = [0u8; RECORD_TRAILER_BYTES];
        let got = fill(&mut self.input, &mut trailer).map_err(self.io())?;
        self.offset += got as u64;
        if got < trailer.len() {
            return Err(truncated(self, self.offset, "a batch's checksum", sequence));
        }
        self.read = index;
        self.previous = Some(sequence);

        let expected = u32::from_be_bytes(trailer);
        let actual = crc32(&bytes);
        if expected != actual {
            let damage = BatchDamage::Checksum { expected, actual };
            return Ok(Some(CarriedItem::Damaged { sequence, damage }));
        }
        let damage = match read_header(&bytes) {
            Err(e) => BatchDamage::Unframed(e),
            Ok(h)
                if h.site_id == self.header.site_id
                    && h.epoch == self.header.epoch
                    && h.sequence == sequence =>
            {
                return Ok(Some(CarriedItem::Batch { sequence, bytes }));
            }
            Ok(h) => BatchDamage::Misplaced {
                site_id: h.site_id,
                epoch: h.epoch,
                sequence: h.sequence,
            },
        };
        Ok(Some(CarriedItem::Damaged { sequence, damage }))
    }

    /// A record whose frame is intact must still be where the header and the order say.
    fn check_place(
        &self,
        index: u32,
        sequence: u64,
        length: u32,
        offset: u64,
    ) -> Result<(), CarriedFileError> {
        let header = &self.header;
        let problem = if length == 0 || u64::from(length) > MAX_CARRIED_BATCH_BYTES {
            format!("a batch of {length} bytes (1 to {MAX_CARRIED_BATCH_BYTES} allowed)")
        } else if self.previous.is_some_and(|p| sequence <= p) {
            format!(
                "sequence {sequence} does not follow {}",
                self.previous.unwrap_or_default()
            )
        } else if index == 1 && sequence != header.first_sequence {
            format!(
                "the first batch is sequence {sequence}, the header says {}",
                header.first_sequence
            )
        } else if index == header.batch_count && sequence != header.last_sequence {
            format!(
                "the last batch is sequence {sequence}, the header says {}",
                header.last_sequence
            )
        } else if sequence > header.last_sequence {
            format!(
                "sequence {sequence} is past the header's last {}",
                header.last_sequence
            )
        } else {
            return Ok(());
        };
        Err(CarriedFileError::Malformed {
            path: self.path.clone(),
            offset,
            index,
            count: header.batch_count,
            problem,
        })
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> CarriedFileError + '_ {
        CarriedFileError::io("read carried file", &self.path)
    }
}

impl<R: Read> Iterator for CarriedFileReader<R> {
    type Item = Result<CarriedItem, CarriedFileError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_item() {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{key, sealed};
    use super::super::writer::CarriedFileWriter;
    use super::*;

    /// A carried file of clinic-1 epoch 7 with batches 1, 2, 3; its bytes and the offsets
    /// where each record starts.
    fn carried(dir: &Path) -> (PathBuf, Vec<u8>, Vec<usize>) {
        let key = key("clinic-1");
        let path = dir.join("f.carried");
        let mut writer = CarriedFileWriter::create(&path, "clinic-1", 7).unwrap();
        let mut starts = Vec::new();
        for sequence in 1..=3 {
            starts.push(writer.bytes_written() as usize);
            writer
                .append(sequence, &sealed(&key, "clinic-1", 7, sequence))
                .unwrap();
        }
        writer.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        (path, bytes, starts)
    }

    fn read_all(bytes: &[u8]) -> (Vec<String>, Option<CarriedFileError>) {
        let reader = match CarriedFileReader::from_reader(bytes, Path::new("f.carried")) {
            Ok(reader) => reader,
            Err(e) => return (Vec::new(), Some(e)),
        };
        let mut items = Vec::new();
        for item in reader {
            match item {
                Ok(CarriedItem::Batch { sequence, .. }) => items.push(format!("ok {sequence}")),
                Ok(CarriedItem::Damaged { sequence, .. }) => {
                    items.push(format!("damaged {sequence}"))
                }
                Err(e) => return (items, Some(e)),
            }
        }
        (items, None)
    }

    #[test]
    fn reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _, _) = carried(dir.path());
        let mut reader = CarriedFileReader::open(&path).unwrap();
        assert_eq!(reader.header().batch_count, 3);
        let (sequence, header) = match reader.next().unwrap().unwrap() {
            CarriedItem::Batch { sequence, bytes } => (sequence, read_header(&bytes).unwrap()),
            other => panic!("{other:?}"),
        };
        assert_eq!((sequence, header.sequence, header.epoch), (1, 1, 7));
        assert_eq!(header.site_id, "clinic-1");
        assert_eq!(reader.count(), 2);
    }

    #[test]
    fn a_flipped_byte_inside_a_batch_costs_that_batch_only() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut bytes, starts) = carried(dir.path());
        bytes[starts[1] + RECORD_FRAME_BYTES + 40] ^= 0x10;
        let (items, error) = read_all(&bytes);
        assert_eq!(items, ["ok 1", "damaged 2", "ok 3"]);
        assert!(error.is_none(), "{error:?}");
    }

    #[test]
    fn a_damaged_frame_ends_the_reading_and_says_where_to_resume() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut bytes, starts) = carried(dir.path());
        bytes[starts[1] + 9] ^= 0x01;
        let (items, error) = read_all(&bytes);
        assert_eq!(items, ["ok 1"]);
        let error = error.unwrap();
        assert!(
            matches!(
                error,
                CarriedFileError::FrameDamaged {
                    index: 2,
                    count: 3,
                    resume_from: 2,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains(&format!("byte {}", starts[1])));
    }

    #[test]
    fn truncation_anywhere_is_reported_with_the_batch_it_cuts() {
        let dir = tempfile::tempdir().unwrap();
        let (_, bytes, starts) = carried(dir.path());
        for len in starts[0]..bytes.len() {
            let (items, error) = read_all(&bytes[..len]);
            let error = error.unwrap_or_else(|| panic!("{len}: truncation not reported"));
            let expected_resume = match len {
                l if l < starts[1] => 1,
                l if l < starts[2] => 2,
                _ => 3,
            };
            match error {
                CarriedFileError::Truncated {
                    resume_from,
                    offset,
                    ..
                } => {
                    assert_eq!(resume_from, expected_resume, "{len}");
                    assert_eq!(offset, len as u64, "{len}");
                }
                other => panic!("{len}: {other}"),
            }
            assert_eq!(items.len() as u64, expected_resume - 1, "{len}");
        }
    }

    #[test]
    fn trailing_bytes_are_reported_after_every_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut bytes, _) = carried(dir.path());
        let end = bytes.len();
        bytes.extend_from_slice(b"junk");
        let (items, error) = read_all(&bytes);
        assert_eq!(items.len(), 3);
        assert!(
            matches!(error, Some(CarriedFileError::TrailingBytes { offset, .. }) if offset == end as u64),
            "{error:?}"
        );
    }

    #[test]
    fn an_intact_frame_with_an_absurd_length_is_refused_without_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let (_, bytes, starts) = carried(dir.path());
        let mut forged = bytes[..starts[0]].to_vec();
        forged.extend_from_slice(&encode_frame(1, u32::MAX));
        let (_, error) = read_all(&forged);
        assert!(
            matches!(error, Some(CarriedFileError::Malformed { .. })),
            "{error:?}"
        );
        // Within the limit but backed by nothing: truncated, not a 1 GiB allocation.
        let mut forged = bytes[..starts[0]].to_vec();
        forged.extend_from_slice(&encode_frame(1, 1 << 30));
        let (_, error) = read_all(&forged);
        assert!(
            matches!(error, Some(CarriedFileError::Truncated { .. })),
            "{error:?}"
        );
    }

    #[test]
    fn a_batch_moved_to_another_position_is_damaged_not_applied_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let (_, bytes, starts) = carried(dir.path());
        // Re-frame batch 2's bytes as sequence 2 of another file whose records say 1, 2, 3
        // but whose second record holds batch 3's bytes.
        let record =
            |i: usize| bytes[starts[i]..*starts.get(i + 1).unwrap_or(&bytes.len())].to_vec();
        let batch3 = &record(2)[RECORD_FRAME_BYTES..record(2).len() - RECORD_TRAILER_BYTES];
        let mut forged = bytes[..starts[0]].to_vec();
        forged.extend(record(0));
        forged.extend_from_slice(&encode_frame(2, batch3.len() as u32));
        forged.extend_from_slice(batch3);
        forged.extend_from_slice(&crc32(batch3).to_be_bytes());
        forged.extend(record(2));
        let (items, error) = read_all(&forged);
        assert_eq!(items, ["ok 1", "damaged 2", "ok 3"]);
        assert!(error.is_none(), "{error:?}");
    }
}
