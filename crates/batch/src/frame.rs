//! The wire layout of a sealed batch, version 1:
//!
//! ```text
//! "TRBT" | u8 format_version | u8 len + site_id | u8 len + key_id
//!        | u64 BE epoch | u64 BE sequence | u32 BE row_count | 24-byte nonce   <- associated data
//! u64 BE ciphertext length | ciphertext (zstd payload + 16-byte Poly1305 tag)
//! ```
//!
//! Invariants: parsing never panics and never allocates based on a length
//! field; it consumes exactly the whole buffer (truncation and trailing bytes
//! are errors); a parsed header always satisfies the identifier rules. The
//! associated data handed to the AEAD is the exact byte range that was parsed,
//! so every header field and the nonce are authenticated.

use crate::error::BatchError;
use crate::header::{BatchHeader, FORMAT_VERSION};
use crate::identifier::{validate_key_id, validate_site_id};

/// The first four bytes of every batch.
pub(crate) const MAGIC: [u8; 4] = *b"TRBT";
/// XChaCha20-Poly1305 nonce length.
pub(crate) const NONCE_LEN: usize = 24;
/// Poly1305 tag length: the shortest possible ciphertext.
const TAG_LEN: usize = 16;

/// A parsed batch, borrowing from the wire bytes.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    pub(crate) header: BatchHeader,
    pub(crate) nonce: [u8; NONCE_LEN],
    pub(crate) associated_data: &'a [u8],
    pub(crate) ciphertext: &'a [u8],
}

/// Encodes the authenticated part of a batch. The header must be validated.
pub(crate) fn encode_associated_data(header: &BatchHeader, nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + header.site_id.len() + header.key_id.len());
    out.extend_from_slice(&MAGIC);
    out.push(header.format_version);
    push_short_string(&mut out, &header.site_id);
    push_short_string(&mut out, &header.key_id);
    out.extend_from_slice(&header.epoch.to_be_bytes());
    out.extend_from_slice(&header.sequence.to_be_bytes());
    out.extend_from_slice(&header.row_count.to_be_bytes());
    out.extend_from_slice(nonce);
    out
}

/// Appends the ciphertext section to the associated data, giving the batch.
pub(crate) fn assemble(mut associated_data: Vec<u8>, ciphertext: &[u8]) -> Vec<u8> {
    associated_data.reserve(8 + ciphertext.len());
    associated_data.extend_from_slice(&(ciphertext.len() as u64).to_be_bytes());
    associated_data.extend_from_slice(ciphertext);
    associated_data
}

fn push_short_string(out: &mut Vec<u8>, value: &str) {
    // Validated ids are at most 64 bytes, so the length always fits.
    let len = u8::try_from(value.len()).unwrap_or(u8::MAX);
    out.push(len);
    out.extend_from_slice(&value.as_bytes()[..usize::from(len)]);
}

/// Parses a whole batch without decrypting it.
pub(crate) fn parse(bytes: &[u8]) -> Result<Frame<'_>, BatchError> {
    if bytes.len() < MAGIC.len() {
        return Err(if MAGIC.starts_with(bytes) {
            BatchError::Truncated { field: "magic" }
        } else {
            BatchError::BadMagic
        });
    }
    let mut reader = WireReader { bytes, position: 0 };
    if reader.take(MAGIC.len(), "magic")? != MAGIC {
        return Err(BatchError::BadMagic);
    }
    let version = reader.u8("format version")?;
    if version != FORMAT_VERSION {
        return Err(BatchError::UnsupportedVersion(version));
    }
    let site_id = reader.short_string("site id")?;
    validate_site_id(&site_id).map_err(|e| BatchError::Malformed {
        field: "site id",
        problem: e.to_string(),
    })?;
    let key_id = reader.short_string("key id")?;
    validate_key_id(&key_id).map_err(|e| BatchError::Malformed {
        field: "key id",
        problem: e.to_string(),
    })?;
    let epoch = u64::from_be_bytes(reader.array("epoch")?);
    let sequence = u64::from_be_bytes(reader.array("sequence")?);
    let row_count = u32::from_be_bytes(reader.array("row count")?);
    let nonce = reader.array::<NONCE_LEN>("nonce")?;
    let associated_data = &bytes[..reader.position];

    let declared = u64::from_be_bytes(reader.array("ciphertext length")?);
    if declared < TAG_LEN as u64 {
        return Err(BatchError::Malformed {
            field: "ciphertext length",
            problem: format!("is {declared}, shorter than the {TAG_LEN}-byte authentication tag"),
        });
    }
    let ciphertext = match usize::try_from(declared) {
        Ok(len) => reader.take(len, "ciphertext")?,
        Err(_) => {
            return Err(BatchError::Truncated {
                field: "ciphertext",
            });
        }
    };
    let trailing = bytes.len() - reader.position;
    if trailing != 0 {
        return Err(BatchError::Malformed {
            field: "end of batch",
            problem: format!("is followed by {trailing} unexpected bytes"),
        });
    }
    Ok(Frame {
        header: BatchHeader {
            format_version: version,
            site_id,
            key_id,
            epoch,
            sequence,
            row_count,
        },
        nonce,
        associated_data,
        ciphertext,
    })
}

/// A bounds-checked cursor over the wire bytes.
struct WireReader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> WireReader<'a> {
    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], BatchError> {
        let end = self
            .position
            .checked_add(len)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(BatchError::Truncated { field })?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], BatchError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, BatchError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn short_string(&mut self, field: &'static str) -> Result<String, BatchError> {
        let len = self.u8(field)?;
        let raw = self.take(usize::from(len), field)?;
        String::from_utf8(raw.to_vec()).map_err(|_| BatchError::Malformed {
            field,
            problem: "is not UTF-8 text".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: [u8; NONCE_LEN] = [7; NONCE_LEN];

    fn sample() -> Vec<u8> {
        let header = BatchHeader::new("clinic-1", "0123456789abcdef", 5, 6, 7);
        assemble(encode_associated_data(&header, &NONCE), &[9u8; 20])
    }

    #[test]
    fn parse_inverts_encode() {
        let bytes = sample();
        let frame = parse(&bytes).unwrap();
        assert_eq!(
            frame.header,
            BatchHeader::new("clinic-1", "0123456789abcdef", 5, 6, 7)
        );
        assert_eq!(frame.nonce, NONCE);
        assert_eq!(frame.ciphertext, &[9u8; 20]);
        assert_eq!(frame.associated_data.len(), bytes.len() - 8 - 20);
        assert!(frame.associated_data.ends_with(&NONCE));
    }

    #[test]
    fn layout_matches_the_documented_offsets() {
        let bytes = sample();
        assert_eq!(&bytes[..4], b"TRBT");
        assert_eq!(bytes[4], 1);
        assert_eq!(bytes[5], 8);
        assert_eq!(&bytes[6..14], b"clinic-1");
        assert_eq!(bytes[14], 16);
        assert_eq!(&bytes[31..39], &5u64.to_be_bytes());
        assert_eq!(&bytes[39..47], &6u64.to_be_bytes());
        assert_eq!(&bytes[47..51], &7u32.to_be_bytes());
        assert_eq!(&bytes[75..83], &20u64.to_be_bytes());
    }

    #[test]
    fn every_strict_prefix_is_rejected() {
        let bytes = sample();
        for len in 0..bytes.len() {
            match parse(&bytes[..len]) {
                Err(BatchError::Truncated { .. }) => {}
                other => panic!("prefix of {len} bytes gave {other:?}"),
            }
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = sample();
        bytes.push(0);
        assert!(matches!(
            parse(&bytes),
            Err(BatchError::Malformed {
                field: "end of batch",
                ..
            })
        ));
    }

    #[test]
    fn wrong_magic_and_version_are_named() {
        assert!(matches!(parse(b"XY"), Err(BatchError::BadMagic)));
        assert!(matches!(
            parse(b"TR"),
            Err(BatchError::Truncated { field: "magic" })
        ));
        let mut bytes = sample();
        bytes[0] = b'X';
        assert!(matches!(parse(&bytes), Err(BatchError::BadMagic)));
        let mut bytes = sample();
        bytes[4] = 2;
        assert!(matches!(
            parse(&bytes),
            Err(BatchError::UnsupportedVersion(2))
        ));
    }

    #[test]
    fn hostile_lengths_are_rejected_without_allocating() {
        let mut bytes = sample();
        bytes[75..83].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(
            parse(&bytes),
            Err(BatchError::Truncated {
                field: "ciphertext"
            })
        ));
        bytes[75..83].copy_from_slice(&3u64.to_be_bytes());
        assert!(matches!(
            parse(&bytes),
            Err(BatchError::Malformed {
                field: "ciphertext length",
                ..
            })
        ));
        let mut bytes = sample();
        bytes[5] = 0;
        assert!(parse(&bytes).is_err());
        let mut bytes = sample();
        bytes[6] = b'/';
        assert!(matches!(
            parse(&bytes),
            Err(BatchError::Malformed {
                field: "site id",
                ..
            })
        ));
        let mut bytes = sample();
        bytes[15] = b'G';
        assert!(matches!(
            parse(&bytes),
            Err(BatchError::Malformed {
                field: "key id",
                ..
            })
        ));
    }
}
