//! Payload compression: zstd on the way in, size-bounded zstd on the way out.
//!
//! Invariant: decompression never produces more than the caller's limit and
//! never trusts a size recorded inside the compressed stream; it reads through
//! a bounded reader and stops one byte past the limit, so a zstd bomb costs
//! at most `limit + 1` bytes of memory.

use std::io::{self, Read};

/// zstd level used for every batch.
const COMPRESSION_LEVEL: i32 = 3;

/// Why a payload could not be decompressed.
#[derive(Debug)]
pub(crate) enum DecompressFailure {
    /// More than the limit came out.
    TooLarge,
    /// The stream is not valid zstd.
    Corrupt(io::Error),
}

/// Compresses a payload at the batch compression level.
pub(crate) fn compress(payload: &[u8]) -> io::Result<Vec<u8>> {
    zstd::bulk::compress(payload, COMPRESSION_LEVEL)
}

/// Decompresses at most `limit` bytes.
pub(crate) fn decompress_bounded(
    compressed: &[u8],
    limit: u64,
) -> Result<Vec<u8>, DecompressFailure> {
    let decoder =
        zstd::stream::read::Decoder::with_buffer(compressed).map_err(DecompressFailure::Corrupt)?;
    let mut out = Vec::new();
    decoder
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(DecompressFailure::Corrupt)?;
    if out.len() as u64 > limit {
        return Err(DecompressFailure::TooLarge);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_within_limit() {
        let payload = br#"{"rows":[1,2,3]}"#.repeat(100);
        let compressed = compress(&payload).unwrap();
        assert!(compressed.len() < payload.len());
        let limit = payload.len() as u64;
        assert_eq!(decompress_bounded(&compressed, limit).unwrap(), payload);
    }

    #[test]
    fn stops_one_byte_past_the_limit() {
        let bomb = compress(&vec![0u8; 1 << 20]).unwrap();
        assert!(matches!(
            decompress_bounded(&bomb, (1 << 20) - 1),
            Err(DecompressFailure::TooLarge)
        ));
    }

    #[test]
    fn rejects_garbage_and_truncated_streams() {
        assert!(matches!(
            decompress_bounded(b"definitely not zstd", 1 << 20),
            Err(DecompressFailure::Corrupt(_))
        ));
        let whole = compress(&b"abcdefgh".repeat(1000)).unwrap();
        for len in 1..whole.len() {
            assert!(
                decompress_bounded(&whole[..len], 1 << 20).is_err(),
                "prefix of {len} bytes decompressed"
            );
        }
    }
}
