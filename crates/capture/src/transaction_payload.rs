//! MySQL 8 compressed transactions (TRANSACTION_PAYLOAD_EVENT, type 40, 8.0.20+ with
//! `binlog_transaction_compression=ON`).
//!
//! mysql_async's `BinlogStream` expands a payload itself: it yields the payload event, then
//! the events inside it (GTID excluded: the GTID stays outside), read with checksums off.
//! It does so with `TransactionPayloadEvent::danger_decompress`, which allocates the
//! *declared* uncompressed size at once and, when decompression fails, yields **nothing**
//! (an empty buffer) instead of an error; a payload it cannot parse is skipped the same way.
//! Either would drop a transaction's rows silently.
//!
//! [`PayloadGuard`] closes that hole: on each payload event it refuses a declared size above
//! a limit (so a hostile or corrupt header stops capture with a clear error instead of
//! feeding a huge allocation), walks the payload itself with a streaming zstd decoder (memory
//! bounded by the largest inner event, never the whole transaction), and then checks that the
//! stream delivers exactly the inner events the payload holds, in order. It also tells the
//! position tracker which events came out of a payload (their commit position is the end of
//! the payload event; see `position`).

use crate::error::CaptureError;
use mysql_async::binlog::EventType;
use mysql_async::binlog::events::Event;
use std::collections::VecDeque;
use std::io::Read;

/// Default bound on a compressed transaction's uncompressed size. MySQL itself does not
/// compress transactions above `binlog_transaction_compression` limits of 4 GiB; OpenMRS
/// transactions are far smaller, and the agent's memory target is 64 MiB.
pub const DEFAULT_PAYLOAD_LIMIT_BYTES: u64 = 256 * 1024 * 1024;

const EVENT_HEADER_LEN: usize = 19;
const EVENT: &str = "TRANSACTION_PAYLOAD (40)";

/// How a payload is compressed (`binary_log::transaction::compression::type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadCompression {
    Zstd,
    None,
}

/// The header fields of a payload event and where its payload starts in the event body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadHeader {
    pub compression: PayloadCompression,
    pub payload_size: u64,
    pub uncompressed_size: Option<u64>,
    payload_start: usize,
}

impl PayloadHeader {
    /// Parses the body of a payload event: `{type, length, value}` fields (each a MySQL
    /// packed integer; MySQL `libbinlogevents/src/codecs/binary.cpp`,
    /// `Transaction_payload::decode`) up to the end mark (type 0), then the payload.
    pub fn parse(data: &[u8]) -> Result<PayloadHeader, CaptureError> {
        let malformed = |detail: String| CaptureError::MalformedEvent {
            event: EVENT,
            detail,
        };
        let mut at = 0usize;
        let (mut size, mut compression, mut uncompressed) = (None, None, None);
        loop {
            let field =
                packed_int(data, &mut at).ok_or_else(|| malformed("truncated header".into()))?;
            if field == 0 {
                break;
            }
            let length =
                packed_int(data, &mut at).ok_or_else(|| malformed("truncated header".into()))?;
            let end = usize::try_from(length)
                .ok()
                .and_then(|l| at.checked_add(l))
                .filter(|&end| end <= data.len())
                .ok_or_else(|| malformed(format!("field {field} runs past the event")))?;
            let value = || -> Option<u64> { packed_int(data.get(..end)?, &mut at.clone()) };
            match field {
                1 => size = Some(value().ok_or_else(|| malformed("bad payload size".into()))?),
                2 => {
                    compression = Some(match value() {
                        Some(0) => PayloadCompression::Zstd,
                        Some(255) => PayloadCompression::None,
                        other => {
                            return Err(malformed(format!(
                                "unknown compression type {other:?} (capture reads zstd and none)"
                            )));
                        }
                    })
                }
                3 => {
                    uncompressed =
                        Some(value().ok_or_else(|| malformed("bad uncompressed size".into()))?)
                }
                _ => {} // Later MySQL versions may add fields; their length lets us skip them.
            }
            at = end;
        }
        let payload_size = size.ok_or_else(|| malformed("no payload size".into()))?;
        let compression = compression.ok_or_else(|| malformed("no compression type".into()))?;
        let available = (data.len() - at) as u64;
        if payload_size != available {
            return Err(malformed(format!(
                "declares {payload_size} payload bytes but carries {available}"
            )));
        }
        Ok(PayloadHeader {
            compression,
            payload_size,
            uncompressed_size: uncompressed,
            payload_start: at,
        })
    }
}

/// The events inside a payload, one raw event (header and body, no checksum) at a time.
/// Memory: one inner event, at most `limit` bytes; the decompressed total is capped by the
/// declared uncompressed size and by `limit`.
pub struct PayloadEvents<'a> {
    reader: Box<dyn Read + 'a>,
    limit: u64,
    declared: Option<u64>,
    read: u64,
    log_pos: u32,
    done: bool,
}

impl<'a> PayloadEvents<'a> {
    /// `data` is the payload event's body (`Event::data`).
    pub fn new(
        data: &'a [u8],
        log_pos: u32,
        limit: u64,
    ) -> Result<(PayloadHeader, PayloadEvents<'a>), CaptureError> {
        let header = PayloadHeader::parse(data)?;
        let declared = header.uncompressed_size;
        if let Some(declared) = declared
            && declared > limit
        {
            return Err(CaptureError::PayloadTooLarge {
                log_pos,
                declared,
                limit,
            });
        }
        let payload = data.get(header.payload_start..).unwrap_or_default();
        let cap = declared.unwrap_or(limit).min(limit).saturating_add(1);
        let reader: Box<dyn Read + 'a> = match header.compression {
            PayloadCompression::None => Box::new(payload.take(cap)),
            PayloadCompression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(payload)
                    .map_err(|e| CaptureError::MalformedEvent {
                        event: EVENT,
                        detail: e.to_string(),
                    })?
                    .take(cap),
            ),
        };
        Ok((
            header,
            PayloadEvents {
                reader,
                limit,
                declared,
                read: 0,
                log_pos,
                done: false,
            },
        ))
    }

    fn malformed(&self, detail: String) -> CaptureError {
        CaptureError::MalformedEvent {
            event: EVENT,
            detail: format!("payload at binlog position {}: {detail}", self.log_pos),
        }
    }

    fn next_event(&mut self) -> Result<Option<Vec<u8>>, CaptureError> {
        let mut header = [0u8; EVENT_HEADER_LEN];
        let got =
            read_full(&mut self.reader, &mut header).map_err(|e| self.malformed(e.to_string()))?;
        if got == 0 {
            return match self.declared {
                Some(declared) if declared != self.read => Err(self.malformed(format!(
                    "decompressed to {} bytes but declares {declared}",
                    self.read
                ))),
                _ => Ok(None),
            };
        }
        if got < EVENT_HEADER_LEN {
            return Err(self.malformed("ends inside an event header".into()));
        }
        let size = u64::from(u32::from_le_bytes([
            header[9], header[10], header[11], header[12],
        ]));
        let total = self.read.saturating_add(size);
        if size < EVENT_HEADER_LEN as u64
            || total > self.declared.unwrap_or(self.limit).min(self.limit)
        {
            return if total > self.limit {
                Err(CaptureError::PayloadTooLarge {
                    log_pos: self.log_pos,
                    declared: total,
                    limit: self.limit,
                })
            } else {
                Err(self.malformed(format!(
                    "inner event of {size} bytes does not fit the payload"
                )))
            };
        }
        let mut event = vec![0u8; size as usize];
        event[..EVENT_HEADER_LEN].copy_from_slice(&header);
        let body = read_full(&mut self.reader, &mut event[EVENT_HEADER_LEN..])
            .map_err(|e| self.malformed(e.to_string()))?;
        if body < event.len() - EVENT_HEADER_LEN {
            return Err(self.malformed("ends inside an event".into()));
        }
        self.read = total;
        Ok(Some(event))
    }
}

impl Iterator for PayloadEvents<'_> {
    type Item = Result<Vec<u8>, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_event().transpose();
        if !matches!(next, Some(Ok(_))) {
            self.done = true;
        }
        next
    }
}

/// Checks, event by event, that the stream delivers every event of each payload (see the
/// module docs). Feed it every event, in order, before the event is interpreted.
#[derive(Debug)]
pub struct PayloadGuard {
    limit: u64,
    /// Types of the inner events still to come from the payload seen last.
    expected: VecDeque<u8>,
    log_pos: u32,
}

impl PayloadGuard {
    pub fn new(limit_bytes: u64) -> PayloadGuard {
        PayloadGuard {
            limit: limit_bytes,
            expected: VecDeque::new(),
            log_pos: 0,
        }
    }

    /// Returns whether `event` was expanded from a payload.
    pub fn observe(&mut self, event: &Event) -> Result<bool, CaptureError> {
        let raw = event.header().event_type_raw();
        if let Some(&expected) = self.expected.front() {
            if raw != expected {
                return Err(CaptureError::MalformedEvent {
                    event: EVENT,
                    detail: format!(
                        "the compressed transaction at binlog position {} holds {} more \
                         events (next of type {expected}) but the stream went on with type \
                         {raw}: it was not expanded completely; check the source's binlog \
                         with mysqlbinlog, or set binlog_transaction_compression=OFF",
                        self.log_pos,
                        self.expected.len()
                    ),
                });
            }
            self.expected.pop_front();
            return Ok(true);
        }
        if raw == EventType::TRANSACTION_PAYLOAD_EVENT as u8 {
            let log_pos = event.header().log_pos();
            let (_, events) = PayloadEvents::new(event.data(), log_pos, self.limit)?;
            for inner in events {
                let inner = inner?;
                let inner_type = inner.get(4).copied().unwrap_or_default();
                if inner_type == EventType::TRANSACTION_PAYLOAD_EVENT as u8 {
                    return Err(CaptureError::MalformedEvent {
                        event: EVENT,
                        detail: format!(
                            "payload at binlog position {log_pos} nests another payload"
                        ),
                    });
                }
                self.expected.push_back(inner_type);
            }
            if self.expected.is_empty() {
                return Err(CaptureError::MalformedEvent {
                    event: EVENT,
                    detail: format!("payload at binlog position {log_pos} holds no events"),
                });
            }
            self.log_pos = log_pos;
        }
        Ok(false)
    }
}

/// A MySQL packed integer (`net_field_length_ll`): < 251 in one byte, 252 + u16, 253 + u24,
/// 254 + u64.
fn packed_int(data: &[u8], at: &mut usize) -> Option<u64> {
    let first = *data.get(*at)?;
    let width = match first {
        0..=250 => {
            *at += 1;
            return Some(u64::from(first));
        }
        252 => 2,
        253 => 3,
        254 => 8,
        _ => return None,
    };
    let bytes = data.get(*at + 1..*at + 1 + width)?;
    *at += 1 + width;
    Some(
        bytes
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)),
    )
}

fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
