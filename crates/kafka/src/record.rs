//! A batch as a Kafka record: value = the sealed batch bytes unchanged, key = the site id (so
//! each site's batches stay in order in one partition), headers `tributary-site`,
//! `tributary-epoch`, `tributary-sequence` (decimal text) for routing and for tools.
//!
//! Invariant: decoding never panics on a foreign or damaged record; the headers are only a
//! routing hint: the applier checks them against the batch's authenticated header.

use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};

use crate::settings::{HEADER_EPOCH, HEADER_SEQUENCE, HEADER_SITE};

/// The headers of a batch's record.
pub fn batch_headers(site_id: &str, epoch: u64, sequence: u64) -> OwnedHeaders {
    let epoch = epoch.to_string();
    let sequence = sequence.to_string();
    OwnedHeaders::new_with_capacity(3)
        .insert(Header {
            key: HEADER_SITE,
            value: Some(site_id),
        })
        .insert(Header {
            key: HEADER_EPOCH,
            value: Some(&epoch),
        })
        .insert(Header {
            key: HEADER_SEQUENCE,
            value: Some(&sequence),
        })
}

/// A batch read from the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedBatch {
    pub site_id: String,
    pub epoch: u64,
    pub sequence: u64,
    /// The sealed batch, as the site wrote it.
    pub sealed: Vec<u8>,
    pub partition: i32,
    pub offset: i64,
}

/// What the consumer hands to the applier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Batch(ReceivedBatch),
    /// A record that is not a Tributary batch (no usable headers and no batch header).
    Unreadable {
        partition: i32,
        offset: i64,
        problem: String,
    },
}

impl Received {
    pub fn partition(&self) -> i32 {
        match self {
            Received::Batch(b) => b.partition,
            Received::Unreadable { partition, .. } => *partition,
        }
    }

    pub fn offset(&self) -> i64 {
        match self {
            Received::Batch(b) => b.offset,
            Received::Unreadable { offset, .. } => *offset,
        }
    }
}

/// Decodes a record: the position from its headers, else from the batch's own (not yet
/// authenticated) header.
pub fn decode(message: OwnedMessage) -> Received {
    let partition = message.partition();
    let offset = message.offset();
    let header = |name: &str| -> Option<String> {
        let headers = message.headers()?;
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    };
    let from_headers = (|| {
        Some((
            header(HEADER_SITE)?,
            header(HEADER_EPOCH)?.parse::<u64>().ok()?,
            header(HEADER_SEQUENCE)?.parse::<u64>().ok()?,
        ))
    })();
    let sealed = message.payload().unwrap_or_default().to_vec();
    let position = match from_headers {
        Some(position) => position,
        None => match tributary_batch::read_header(&sealed) {
            Ok(h) => (h.site_id, h.epoch, h.sequence),
            Err(e) => {
                return Received::Unreadable {
                    partition,
                    offset,
                    problem: format!(
                        "record has no tributary-site/epoch/sequence headers and is not a batch: {e}"
                    ),
                };
            }
        },
    };
    Received::Batch(ReceivedBatch {
        site_id: position.0,
        epoch: position.1,
        sequence: position.2,
        sealed,
        partition,
        offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    fn message(payload: &[u8], headers: Option<OwnedHeaders>) -> OwnedMessage {
        OwnedMessage::new(
            Some(payload.to_vec()),
            Some(b"clinic-a".to_vec()),
            "t".into(),
            Timestamp::NotAvailable,
            3,
            42,
            headers,
        )
    }

    #[test]
    fn headers_round_trip() {
        let received = decode(message(b"sealed", Some(batch_headers("clinic-a", 7, 9))));
        assert_eq!(
            received,
            Received::Batch(ReceivedBatch {
                site_id: "clinic-a".into(),
                epoch: 7,
                sequence: 9,
                sealed: b"sealed".to_vec(),
                partition: 3,
                offset: 42,
            })
        );
    }

    #[test]
    fn foreign_records_are_unreadable_not_panics() {
        for headers in [None, Some(OwnedHeaders::new())] {
            let received = decode(message(b"\x00garbage", headers));
            assert!(matches!(
                received,
                Received::Unreadable {
                    partition: 3,
                    offset: 42,
                    ..
                }
            ));
        }
        let bad_number = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_SITE,
                value: Some("clinic-a"),
            })
            .insert(Header {
                key: HEADER_EPOCH,
                value: Some("x"),
            });
        assert!(matches!(
            decode(message(b"", Some(bad_number))),
            Received::Unreadable { .. }
        ));
    }
}
