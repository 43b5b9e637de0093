//! Payload compression: zstd on the way in, size-bounded zstd on the way out.
//!
//! Invariant: decompression never produces more than the caller's limit and
//! never trusts a size recorded inside the compressed stream. Memory spent is
//! bounded whatever the input: the output buffer grows in steps capped at the
//! limit (never doubling past it), one chunk buffer is reused, and the zstd
//! decoder refuses frames whose window is over [`MAX_WINDOW_LOG`], so a
//! frame header cannot make it allocate a large window either.

use std::io::{self, Read};

/// zstd level used for every batch. On capture's batches (1,000 rows of JSON,
/// keys and reference prefixes repeated row after row) level 1 both compresses
/// better than level 3 (about 10% smaller) and costs about a quarter less
/// sealing work; see benches/README.md.
const COMPRESSION_LEVEL: i32 = 1;

/// Hash table size (as a power of two) of the batch compressor: 2^13 entries, 32 KiB, which
/// stays in a core's first-level cache. Level 1 would use 2^14; on capture's batches 2^13
/// compresses as well and about 15% faster (see benches/README.md).
const HASH_LOG: u32 = 13;

/// Largest zstd window (as a power of two) a batch may use: 8 MiB. Levels 1
/// to 3 never use more than 2 MiB (any level up to 19 stays within 8 MiB);
/// zstd's own default would let a 5-byte frame header ask for 128 MiB.
pub(crate) const MAX_WINDOW_LOG: u32 = 23;

/// Output is read in chunks of this size (zstd's recommended output size).
const CHUNK_BYTES: usize = 128 * 1024;

/// Why a payload could not be decompressed.
#[derive(Debug)]
pub(crate) enum DecompressFailure {
    /// More than the limit came out.
    TooLarge,
    /// The stream is not valid zstd (or needs a window over the maximum).
    Corrupt(io::Error),
}

thread_local! {
    /// One compression context per thread, kept across batches: a new context per batch
    /// allocated and cleared a workspace of about a megabyte every time.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Compresses a payload at the batch compression level.
pub(crate) fn compress(payload: &[u8]) -> io::Result<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = match &mut *slot {
            Some(compressor) => compressor,
            empty => {
                let mut compressor = zstd::bulk::Compressor::new(COMPRESSION_LEVEL)?;
                compressor.set_parameter(zstd::zstd_safe::CParameter::HashLog(HASH_LOG))?;
                empty.insert(compressor)
            }
        };
        compressor.compress(payload)
    })
}

/// Decompresses at most `limit` bytes.
pub(crate) fn decompress_bounded(
    compressed: &[u8],
    limit: u64,
) -> Result<Vec<u8>, DecompressFailure> {
    let mut decoder =
        zstd::stream::read::Decoder::with_buffer(compressed).map_err(DecompressFailure::Corrupt)?;
    decoder
        .window_log_max(MAX_WINDOW_LOG)
        .map_err(DecompressFailure::Corrupt)?;
    read_bounded(decoder, usize::try_from(limit).unwrap_or(usize::MAX))
}

/// Reads `reader` to its end, failing as soon as more than `limit` bytes
/// came out. The returned buffer's capacity never exceeds `limit`.
fn read_bounded(mut reader: impl Read, limit: usize) -> Result<Vec<u8>, DecompressFailure> {
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; CHUNK_BYTES];
    loop {
        let read = match reader.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DecompressFailure::Corrupt(e)),
        };
        let needed = out
            .len()
            .checked_add(read)
            .filter(|needed| *needed <= limit)
            .ok_or(DecompressFailure::TooLarge)?;
        if needed > out.capacity() {
            // Double as `Vec` would, but never past the limit.
            let target = needed.max(out.capacity().saturating_mul(2)).min(limit);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&chunk[..read]);
    }
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
    fn capacity_never_exceeds_the_limit() {
        let payload = vec![7u8; 3 * CHUNK_BYTES + 5];
        let compressed = compress(&payload).unwrap();
        let out = decompress_bounded(&compressed, payload.len() as u64).unwrap();
        assert_eq!(out, payload);
        assert!(out.capacity() <= payload.len(), "{}", out.capacity());
        let empty = decompress_bounded(&compress(b"").unwrap(), 0).unwrap();
        assert!(empty.is_empty());
        assert!(matches!(
            decompress_bounded(&compressed, 0),
            Err(DecompressFailure::TooLarge)
        ));
    }

    #[test]
    fn what_the_sealer_writes_fits_the_window_limit() {
        // 12 MiB of varied text: bigger than the largest allowed window.
        let payload: Vec<u8> = (0..12u32 << 20)
            .map(|i| {
                b"abcdefghijklmnopqrstuvwxyz0123456789"
                    [(i.wrapping_mul(2_654_435_761) >> 27) as usize % 36]
            })
            .collect();
        let compressed = compress(&payload).unwrap();
        assert_eq!(
            decompress_bounded(&compressed, payload.len() as u64).unwrap(),
            payload
        );
    }

    /// A batch shaped like capture's: 1,000 obs rows of payload JSON, uuids drawn from a
    /// fixed pseudo-random sequence.
    fn obs_batch() -> Vec<u8> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut uuid = || {
            let mut hex = String::new();
            for part in [8, 4, 4, 4, 12] {
                if !hex.is_empty() {
                    hex.push('-');
                }
                for _ in 0..part {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    hex.push(char::from(b"0123456789abcdef"[(state % 16) as usize]));
                }
            }
            hex
        };
        let (patient, encounter, creator) = (uuid(), uuid(), uuid());
        let concepts: Vec<String> = (0..40).map(|_| uuid()).collect();
        let rows: Vec<String> = (0..1_000)
            .map(|i| {
                let id = uuid();
                format!(
                    r#"{{"table":"obs","op":"insert","identity":"{id}","columns":{{"comments":null,"concept_id":{{"ref":"concept","id":"{concept}"}},"creator":{{"ref":"users","id":"{creator}"}},"date_created":"2024-06-01 10:{minute:02}:00","encounter_id":{{"ref":"encounter","id":"{encounter}"}},"obs_datetime":"2024-06-01 10:00:00","obs_group_id":null,"person_id":{{"ref":"person","id":"{patient}"}},"status":"FINAL","uuid":"{id}","value_coded":null,"value_numeric":{value}.5,"value_text":null,"voided":0,"voided_by":null}}}}"#,
                    concept = concepts[i % concepts.len()],
                    minute = i % 60,
                    value = 30 + i % 170,
                )
            })
            .collect();
        format!("[{}]", rows.join(",")).into_bytes()
    }

    #[test]
    fn the_batch_level_compresses_capture_batches_smaller_than_level_3() {
        let batch = obs_batch();
        let ours = compress(&batch).unwrap();
        let level_3 = zstd::bulk::compress(&batch, 3).unwrap();
        assert!(
            ours.len() < level_3.len(),
            "{} bytes at the batch level, {} at level 3",
            ours.len(),
            level_3.len()
        );
        // Batches sealed at level 3 (before the level changed) read the same way.
        assert_eq!(
            decompress_bounded(&level_3, batch.len() as u64).unwrap(),
            batch
        );
    }

    #[test]
    fn frames_asking_for_a_large_window_are_refused() {
        let payload = vec![1u8; 64];
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        encoder.include_contentsize(false).unwrap();
        encoder.window_log(MAX_WINDOW_LOG + 4).unwrap();
        encoder.long_distance_matching(true).unwrap();
        std::io::Write::write_all(&mut encoder, &payload).unwrap();
        let compressed = encoder.finish().unwrap();
        assert!(matches!(
            decompress_bounded(&compressed, 1 << 20),
            Err(DecompressFailure::Corrupt(_))
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
