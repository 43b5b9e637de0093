//! MariaDB GTID positions and the GTID event body.
//!
//! A position is one `domain-server-sequence` triple per replication domain, the form
//! `@slave_connect_state` and `@@gtid_binlog_pos` use. Capture keeps it updated at every
//! committed transaction and stores it in the checkpoint; the server resumes exactly after it.

use crate::error::CaptureError;
use std::collections::BTreeMap;
use std::fmt;

/// One transaction's global id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub sequence: u64,
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.sequence)
    }
}

/// What a MariaDB GTID event (type 162) says about the transaction it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GtidEventBody {
    pub domain: u32,
    pub sequence: u64,
    /// A standalone event group (DDL) has no XID or COMMIT after it.
    pub standalone: bool,
    /// Part of an XA transaction (prepared or completed).
    pub xa: bool,
}

const FL_STANDALONE: u8 = 0x01;
const FL_PREPARED_XA: u8 = 0x40;
const FL_COMPLETED_XA: u8 = 0x80;

impl GtidEventBody {
    /// Parses the post-header of a GTID event: `u64 seq_no, u32 domain_id, u8 flags2, ...`.
    pub fn parse(data: &[u8]) -> Result<GtidEventBody, CaptureError> {
        let malformed = || CaptureError::MalformedEvent {
            event: "GTID (162)",
            detail: format!("body of {} bytes is shorter than 13", data.len()),
        };
        let sequence = u64::from_le_bytes(
            data.get(0..8)
                .ok_or_else(malformed)?
                .try_into()
                .map_err(|_| malformed())?,
        );
        let domain = u32::from_le_bytes(
            data.get(8..12)
                .ok_or_else(malformed)?
                .try_into()
                .map_err(|_| malformed())?,
        );
        let flags = *data.get(12).ok_or_else(malformed)?;
        Ok(GtidEventBody {
            domain,
            sequence,
            standalone: flags & FL_STANDALONE != 0,
            xa: flags & (FL_PREPARED_XA | FL_COMPLETED_XA) != 0,
        })
    }
}

/// What a MariaDB GTID_LIST event (type 163) says: the binlog state before the file it opens
/// (or, sent by the server at a GTID resume, the position the stream starts after).
/// `u32 count` (low 28 bits; the high 4 are flags) then `count` times
/// `u32 domain, u32 server, u64 seq_no` (MariaDB `sql/log_event.cc`, `Gtid_list_log_event`).
/// The state may list several servers for one domain (after a primary switch); the position
/// keeps, per domain, the entry with the highest sequence number.
pub fn parse_gtid_list(data: &[u8]) -> Result<GtidPosition, CaptureError> {
    let malformed = |detail: String| CaptureError::MalformedEvent {
        event: "GTID_LIST (163)",
        detail,
    };
    let count = data
        .get(0..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| malformed(format!("body of {} bytes has no count", data.len())))?
        & 0x0fff_ffff;
    let entries = data.get(4..).unwrap_or_default();
    let needed = count as usize * 16;
    if entries.len() < needed {
        return Err(malformed(format!(
            "{count} entries need {needed} bytes, the body has {}",
            entries.len()
        )));
    }
    let mut position = GtidPosition::default();
    for entry in entries[..needed].chunks_exact(16) {
        let u32_at =
            |i: usize| u32::from_le_bytes([entry[i], entry[i + 1], entry[i + 2], entry[i + 3]]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&entry[8..16]);
        let gtid = Gtid {
            domain: u32_at(0),
            server: u32_at(4),
            sequence: u64::from_le_bytes(seq),
        };
        if position
            .0
            .get(&gtid.domain)
            .is_none_or(|seen| seen.sequence <= gtid.sequence)
        {
            position.advance(gtid);
        }
    }
    Ok(position)
}

/// A MariaDB GTID position: the last transaction seen in each domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidPosition(BTreeMap<u32, Gtid>);

impl GtidPosition {
    pub fn parse(text: &str) -> Result<GtidPosition, CaptureError> {
        let mut map = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || CaptureError::BadGtidPosition(text.to_owned());
            let mut fields = part.split('-');
            let gtid = Gtid {
                domain: fields.next().ok_or_else(bad)?.parse().map_err(|_| bad())?,
                server: fields.next().ok_or_else(bad)?.parse().map_err(|_| bad())?,
                sequence: fields.next().ok_or_else(bad)?.parse().map_err(|_| bad())?,
            };
            if fields.next().is_some() {
                return Err(bad());
            }
            map.insert(gtid.domain, gtid);
        }
        Ok(GtidPosition(map))
    }

    pub fn advance(&mut self, gtid: Gtid) {
        self.0.insert(gtid.domain, gtid);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many domains the position has seen.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The GTID of a single-domain position (one transaction's id written as a position).
    pub fn first(&self) -> Option<Gtid> {
        self.0.values().next().copied()
    }

    /// The domains where `earliest` (what the oldest binlog begins after) is ahead of this
    /// position: transactions this position has not seen were purged. A domain this position
    /// never saw counts too, unless the position is empty (stream from the oldest binlog).
    pub fn purged_against(&self, earliest: &GtidPosition) -> Vec<Gtid> {
        if self.is_empty() {
            return Vec::new();
        }
        earliest
            .0
            .values()
            .filter(|oldest| {
                self.0
                    .get(&oldest.domain)
                    .is_none_or(|seen| seen.sequence < oldest.sequence)
            })
            .copied()
            .collect()
    }
}

impl fmt::Display for GtidPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.values().map(Gtid::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_round_trips_and_advances_per_domain() {
        let mut pos = GtidPosition::parse("0-1-7, 2-5-9").unwrap();
        pos.advance(Gtid {
            domain: 0,
            server: 1,
            sequence: 8,
        });
        assert_eq!(pos.to_string(), "0-1-8,2-5-9");
        assert!(GtidPosition::parse("").unwrap().is_empty());
        assert!(GtidPosition::parse("0-1").is_err());
        assert!(GtidPosition::parse("0-1-2-3").is_err());
        assert!(GtidPosition::parse("a-b-c").is_err());
    }

    #[test]
    fn a_position_behind_the_oldest_binlog_is_purged() {
        let earliest = GtidPosition::parse("0-1-10,1-2-5").unwrap();
        assert!(
            GtidPosition::parse("0-1-10,1-2-7")
                .unwrap()
                .purged_against(&earliest)
                .is_empty()
        );
        let purged = GtidPosition::parse("0-1-9,1-2-7")
            .unwrap()
            .purged_against(&earliest);
        assert_eq!(
            purged,
            vec![Gtid {
                domain: 0,
                server: 1,
                sequence: 10
            }]
        );
        let purged = GtidPosition::parse("0-1-12")
            .unwrap()
            .purged_against(&earliest);
        assert_eq!(
            purged.len(),
            1,
            "domain 1 was never seen but has purged history"
        );
        assert!(GtidPosition::default().purged_against(&earliest).is_empty());
    }

    /// Bytes recorded by go-mysql-org/go-mysql, replication/event_test.go
    /// (`TestMariadbGTIDListEvent`): one entry 1-2-3, then three domains 1-2-3,4-5-6,7-8-9.
    #[test]
    fn gtid_list_events_parse_with_several_domains() {
        let one = [1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse_gtid_list(&one).unwrap().to_string(), "1-2-3");
        let three = [
            3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6,
            0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 8, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(
            parse_gtid_list(&three).unwrap().to_string(),
            "1-2-3,4-5-6,7-8-9"
        );
        for len in 0..three.len() {
            if len != 4 {
                assert!(parse_gtid_list(&three[..len]).is_err(), "{len} bytes");
            }
        }
        // Flags in the high bits of the count; an empty list; two servers in one domain
        // (the later, higher sequence wins whatever the order).
        assert!(parse_gtid_list(&[0, 0, 0, 0x10]).unwrap().is_empty());
        let mut switched = vec![2, 0, 0, 0x10];
        for (server, seq) in [(2u32, 9u64), (1, 7)] {
            switched.extend(0u32.to_le_bytes());
            switched.extend(server.to_le_bytes());
            switched.extend(seq.to_le_bytes());
        }
        assert_eq!(parse_gtid_list(&switched).unwrap().to_string(), "0-2-9");
        let huge = [0xff, 0xff, 0xff, 0x0f];
        assert!(
            parse_gtid_list(&huge).is_err(),
            "a count the body cannot hold"
        );
    }

    #[test]
    fn gtid_event_body_parses_and_rejects_short_input() {
        let mut body = 42u64.to_le_bytes().to_vec();
        body.extend_from_slice(&3u32.to_le_bytes());
        body.push(FL_STANDALONE);
        let parsed = GtidEventBody::parse(&body).unwrap();
        assert_eq!(
            parsed,
            GtidEventBody {
                domain: 3,
                sequence: 42,
                standalone: true,
                xa: false,
            }
        );
        for len in 0..body.len() {
            assert!(GtidEventBody::parse(&body[..len]).is_err());
        }
        *body.last_mut().unwrap() = FL_PREPARED_XA;
        assert!(GtidEventBody::parse(&body).unwrap().xa);
    }
}
