//! One record of a segment file: a fixed header with its own checksum, then the payload with
//! another.
//!
//! ```text
//! offset size field
//!      0    4 magic  "TRSG"
//!      4    1 kind   1 = batch (payload: the sealed batch), 2 = commit (payload: the commit
//!                    time, 8 bytes, big-endian Unix milliseconds; empty in spools written
//!                    before commit times were kept)
//!      5    3 zero
//!      8    8 epoch             big-endian
//!     16    8 sequence          big-endian
//!     24    4 payload length    big-endian
//!     28    4 CRC-32 of the payload
//!     32    4 CRC-32 of bytes 0..32
//!     36      payload
//! ```
//!
//! Invariants: a record is accepted only when both checksums match, so a record cut short by
//! a crash is never taken for a batch; [`classify`] tells such a torn tail (the file ends
//! inside the record, or only zeros follow) from damage in the middle of a file, which is
//! never silently dropped.

/// Bytes of a record header.
pub(crate) const HEADER_BYTES: usize = 36;

const MAGIC: [u8; 4] = *b"TRSG";

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    /// A sealed batch, staged until its commit record follows.
    Batch,
    /// Publishes the batch record just before it.
    Commit,
}

impl RecordKind {
    fn code(self) -> u8 {
        match self {
            RecordKind::Batch => 1,
            RecordKind::Commit => 2,
        }
    }

    fn from_code(code: u8) -> Option<RecordKind> {
        match code {
            1 => Some(RecordKind::Batch),
            2 => Some(RecordKind::Commit),
            _ => None,
        }
    }
}

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub kind: RecordKind,
    pub epoch: u64,
    pub sequence: u64,
    pub payload_len: u32,
    pub payload_crc: u32,
}

impl RecordHeader {
    /// Bytes the whole record takes.
    pub fn record_len(&self) -> u64 {
        HEADER_BYTES as u64 + u64::from(self.payload_len)
    }
}

/// The header of a record holding `payload`; the payload follows it directly.
pub(crate) fn encode_header(
    kind: RecordKind,
    epoch: u64,
    sequence: u64,
    payload: &[u8],
) -> [u8; HEADER_BYTES] {
    let payload_len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut header = [0u8; HEADER_BYTES];
    header[..4].copy_from_slice(&MAGIC);
    header[4] = kind.code();
    header[8..16].copy_from_slice(&epoch.to_be_bytes());
    header[16..24].copy_from_slice(&sequence.to_be_bytes());
    header[24..28].copy_from_slice(&payload_len.to_be_bytes());
    header[28..32].copy_from_slice(&crc32fast::hash(payload).to_be_bytes());
    let header_crc = crc32fast::hash(&header[..32]);
    header[32..].copy_from_slice(&header_crc.to_be_bytes());
    header
}

/// Decodes a header, or `None` when its magic, kind or checksum is wrong.
pub(crate) fn decode_header(bytes: &[u8; HEADER_BYTES]) -> Option<RecordHeader> {
    let field = |at: usize| -> [u8; 8] { bytes[at..at + 8].try_into().unwrap_or_default() };
    let word =
        |at: usize| -> u32 { u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap_or_default()) };
    if bytes[..4] != MAGIC || bytes[5..8] != [0, 0, 0] || crc32fast::hash(&bytes[..32]) != word(32)
    {
        return None;
    }
    Some(RecordHeader {
        kind: RecordKind::from_code(bytes[4])?,
        epoch: u64::from_be_bytes(field(8)),
        sequence: u64::from_be_bytes(field(16)),
        payload_len: word(24),
        payload_crc: word(28),
    })
}

/// A commit record's payload: when the batch was committed.
pub(crate) fn commit_time_payload(at: std::time::SystemTime) -> [u8; 8] {
    let millis = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    millis.to_be_bytes()
}

/// The commit time a commit record's payload holds; `None` for an empty (older) one.
pub(crate) fn commit_time(payload: &[u8]) -> Option<std::time::SystemTime> {
    let millis = u64::from_be_bytes(payload.try_into().ok()?);
    std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(millis))
}

/// Whether `payload` is the one `header` describes.
pub(crate) fn payload_matches(header: &RecordHeader, payload: &[u8]) -> bool {
    payload.len() as u64 == u64::from(header.payload_len)
        && crc32fast::hash(payload) == header.payload_crc
}

/// What stands at an offset where a record should start, judged from what follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unreadable {
    /// The file ends inside the record, or only zeros follow: a write a crash (or a writer
    /// still at work) left unfinished.
    TornTail,
    /// Readable bytes follow: the file is damaged here.
    Damaged,
}

/// Classifies an invalid record at the start of `rest` (everything from there to the end of
/// the file, as far as the caller read it) given `record_end`, where a header that decoded
/// says the record ends (relative to `rest`), if any.
pub(crate) fn classify(rest: &[u8], file_remaining: u64, record_end: Option<u64>) -> Unreadable {
    if file_remaining < HEADER_BYTES as u64 {
        return Unreadable::TornTail;
    }
    if let Some(end) = record_end
        && end >= file_remaining
    {
        return Unreadable::TornTail;
    }
    if rest.len() as u64 == file_remaining && rest.iter().all(|&b| b == 0) {
        return Unreadable::TornTail;
    }
    Unreadable::Damaged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(kind: RecordKind, epoch: u64, sequence: u64, payload: &[u8]) -> Vec<u8> {
        let mut bytes = encode_header(kind, epoch, sequence, payload).to_vec();
        bytes.extend_from_slice(payload);
        bytes
    }

    fn header_of(bytes: &[u8]) -> Option<RecordHeader> {
        decode_header(bytes[..HEADER_BYTES].try_into().unwrap())
    }

    #[test]
    fn a_record_round_trips() {
        let bytes = encode(RecordKind::Batch, 3, 99, b"sealed");
        assert_eq!(bytes.len(), HEADER_BYTES + 6);
        let header = header_of(&bytes).unwrap();
        assert_eq!(
            (
                header.kind,
                header.epoch,
                header.sequence,
                header.payload_len
            ),
            (RecordKind::Batch, 3, 99, 6)
        );
        assert!(payload_matches(&header, &bytes[HEADER_BYTES..]));
        assert!(!payload_matches(&header, b"sealeD"));
        assert_eq!(header.record_len(), bytes.len() as u64);
        let commit = encode(RecordKind::Commit, 3, 99, b"");
        assert_eq!(header_of(&commit).unwrap().kind, RecordKind::Commit);
    }

    #[test]
    fn every_single_bit_flip_in_a_header_is_caught() {
        let bytes = encode(RecordKind::Batch, 1, 2, b"x");
        for bit in 0..HEADER_BYTES * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(header_of(&flipped), None, "bit {bit}");
        }
    }

    #[test]
    fn torn_tails_are_told_from_damage() {
        let record = encode(RecordKind::Batch, 1, 2, b"payload");
        let n = record.len() as u64;
        assert_eq!(classify(&record[..10], 10, None), Unreadable::TornTail);
        assert_eq!(classify(&record, n - 1, Some(n)), Unreadable::TornTail);
        assert_eq!(classify(&[0; 100], 100, None), Unreadable::TornTail);
        assert_eq!(classify(&record, n + 50, Some(n)), Unreadable::Damaged);
        let mut garbage = vec![0u8; 100];
        garbage[70] = 1;
        assert_eq!(classify(&garbage, 100, None), Unreadable::Damaged);
        // Only part of the rest was read: zeros there say nothing about what follows.
        assert_eq!(classify(&[0; 40], 100, None), Unreadable::Damaged);
    }
}
