//! [`CarriedFileHeader`]: what a carried file holds (site, epoch, sequence range, count, when
//! it was written), encoded at the head of the file with its own CRC.
//!
//! Invariant: a header that decodes has a valid site id, at least one batch, `first <= last`
//! and no more batches than the range has sequences; its bytes passed their CRC.

use std::io::{self, Read};
use std::path::Path;

use tributary_batch::validate_site_id;

use super::crc32;
use super::error::CarriedFileError;

/// The first bytes of every carried file.
pub const CARRIED_FILE_MAGIC: [u8; 8] = *b"TRBCARRY";
/// The carried-file format version this build writes and reads.
pub const CARRIED_FILE_VERSION: u8 = 1;

/// Magic, version and site id length: what is read before the header's length is known.
const LEAD_BYTES: usize = 10;
/// Epoch, first and last sequence, batch count, created-at and the CRC, after the site id.
const TAIL_BYTES: usize = 8 + 8 + 8 + 4 + 8 + 4;

/// The header of a carried file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedFileHeader {
    /// The site whose batches the file holds.
    pub site_id: String,
    /// The capture epoch of every batch in the file.
    pub epoch: u64,
    /// The sequence of the first batch.
    pub first_sequence: u64,
    /// The sequence of the last batch.
    pub last_sequence: u64,
    /// How many batches follow the header (sequences may skip where the outbox had none).
    pub batch_count: u32,
    /// When the file was written, Unix time in milliseconds.
    pub created_at_unix_ms: u64,
}

impl CarriedFileHeader {
    /// The header's bytes, CRC included. The site id must be valid (the writer checks it).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let site = self.site_id.as_bytes();
        let mut bytes = Vec::with_capacity(LEAD_BYTES + site.len() + TAIL_BYTES);
        bytes.extend_from_slice(&CARRIED_FILE_MAGIC);
        bytes.push(CARRIED_FILE_VERSION);
        // A valid site id is at most 64 bytes.
        bytes.push(u8::try_from(site.len()).unwrap_or(u8::MAX));
        bytes.extend_from_slice(site);
        bytes.extend_from_slice(&self.epoch.to_be_bytes());
        bytes.extend_from_slice(&self.first_sequence.to_be_bytes());
        bytes.extend_from_slice(&self.last_sequence.to_be_bytes());
        bytes.extend_from_slice(&self.batch_count.to_be_bytes());
        bytes.extend_from_slice(&self.created_at_unix_ms.to_be_bytes());
        let crc = crc32(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        bytes
    }

    /// Reads and checks a header from the start of `input`; returns it with its length.
    pub(crate) fn decode(
        input: &mut impl Read,
        path: &Path,
    ) -> Result<(CarriedFileHeader, u64), CarriedFileError> {
        let damaged = |problem: &str| CarriedFileError::HeaderDamaged {
            path: path.to_owned(),
            problem: problem.to_owned(),
        };
        let mut lead = [0u8; LEAD_BYTES];
        let got = fill(input, &mut lead).map_err(CarriedFileError::io("read", path))?;
        let magic_seen = got.min(CARRIED_FILE_MAGIC.len());
        if lead[..magic_seen] != CARRIED_FILE_MAGIC[..magic_seen] || got == 0 {
            return Err(CarriedFileError::NotACarriedFile {
                path: path.to_owned(),
            });
        }
        if got < LEAD_BYTES {
            return Err(damaged("the file ends inside the header"));
        }
        let version = lead[8];
        if version != CARRIED_FILE_VERSION {
            return Err(CarriedFileError::UnsupportedVersion {
                path: path.to_owned(),
                version,
                supported: CARRIED_FILE_VERSION,
            });
        }
        let site_len = usize::from(lead[9]);
        // At most 255 + 40 bytes: the length is a u8.
        let mut rest = vec![0u8; site_len + TAIL_BYTES];
        let got = fill(input, &mut rest).map_err(CarriedFileError::io("read", path))?;
        if got < rest.len() {
            return Err(damaged("the file ends inside the header"));
        }
        let (body, crc) = rest.split_at(rest.len() - 4);
        let mut covered = lead.to_vec();
        covered.extend_from_slice(body);
        let expected = u32::from_be_bytes(crc.try_into().unwrap_or_default());
        if crc32(&covered) != expected {
            return Err(damaged("its checksum does not match"));
        }
        let site_id = std::str::from_utf8(&body[..site_len])
            .map_err(|_| damaged("the site id is not UTF-8"))?
            .to_owned();
        validate_site_id(&site_id).map_err(|e| damaged(&e.to_string()))?;
        let number = |at: usize| {
            let end = site_len + at;
            u64::from_be_bytes(body[end..end + 8].try_into().unwrap_or_default())
        };
        let count_at = site_len + 24;
        let header = CarriedFileHeader {
            site_id,
            epoch: number(0),
            first_sequence: number(8),
            last_sequence: number(16),
            batch_count: u32::from_be_bytes(
                body[count_at..count_at + 4].try_into().unwrap_or_default(),
            ),
            created_at_unix_ms: number(28),
        };
        header.check().map_err(|problem| damaged(&problem))?;
        Ok((header, (LEAD_BYTES + rest.len()) as u64))
    }

    /// The fields agree with each other.
    fn check(&self) -> Result<(), String> {
        if self.batch_count == 0 {
            return Err("it announces no batch".into());
        }
        if self.first_sequence > self.last_sequence {
            return Err(format!(
                "its first sequence {} is after its last {}",
                self.first_sequence, self.last_sequence
            ));
        }
        if u64::from(self.batch_count - 1) > self.last_sequence - self.first_sequence {
            return Err(format!(
                "it announces {} batches in sequences {}..={}",
                self.batch_count, self.first_sequence, self.last_sequence
            ));
        }
        Ok(())
    }
}

/// Reads until `buf` is full or the input ends; how many bytes were read.
pub(super) fn fill(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> CarriedFileHeader {
        CarriedFileHeader {
            site_id: "clinic-1".into(),
            epoch: 1_700_000_000,
            first_sequence: 10,
            last_sequence: 12,
            batch_count: 3,
            created_at_unix_ms: 1_700_000_123_456,
        }
    }

    fn decode(bytes: &[u8]) -> Result<(CarriedFileHeader, u64), CarriedFileError> {
        CarriedFileHeader::decode(&mut &bytes[..], Path::new("/stick/a.carried"))
    }

    #[test]
    fn header_round_trips_and_has_the_documented_length() {
        let bytes = header().encode();
        assert_eq!(bytes.len(), 50 + "clinic-1".len());
        assert_eq!(&bytes[..8], b"TRBCARRY");
        assert_eq!(decode(&bytes).unwrap(), (header(), bytes.len() as u64));
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let bytes = header().encode();
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[at] ^= 1 << bit;
                assert!(
                    decode(&flipped).is_err(),
                    "flip of bit {bit} at {at} accepted"
                );
            }
        }
    }

    #[test]
    fn truncation_and_foreign_files_are_named() {
        let bytes = header().encode();
        for len in 0..bytes.len() {
            let err = decode(&bytes[..len]).unwrap_err();
            assert!(
                matches!(
                    err,
                    CarriedFileError::NotACarriedFile { .. }
                        | CarriedFileError::HeaderDamaged { .. }
                ),
                "{len}: {err}"
            );
        }
        let err = decode(b"TRBT\x01 a sealed batch").unwrap_err();
        assert!(
            matches!(err, CarriedFileError::NotACarriedFile { .. }),
            "{err}"
        );
        let mut future = bytes.clone();
        future[8] = 2;
        let err = decode(&future).unwrap_err();
        assert!(
            matches!(err, CarriedFileError::UnsupportedVersion { version: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn contradictory_fields_are_refused_even_with_a_good_crc() {
        for edit in [
            |h: &mut CarriedFileHeader| h.batch_count = 0,
            |h: &mut CarriedFileHeader| h.first_sequence = 13,
            |h: &mut CarriedFileHeader| h.batch_count = 4,
        ] {
            let mut bad = header();
            edit(&mut bad);
            let err = decode(&bad.encode()).unwrap_err();
            assert!(
                matches!(err, CarriedFileError::HeaderDamaged { .. }),
                "{err}"
            );
            assert!(!err.is_transient());
        }
    }
}
