//! MySQL GTID sets and the MySQL GTID events (5.7, 8.0, 8.4).
//!
//! A MySQL position is a *set*: every transaction id executed, as intervals of transaction
//! numbers (`gno`) per source server uuid, and from 8.4 per (uuid, tag). That is what
//! `@@gtid_executed` shows and what `COM_BINLOG_DUMP_GTID` sends; the server streams every
//! transaction not in the set. Unlike a MariaDB position, a set has holes: transactions are
//! added one by one as they commit, so the set stays exact even if a source commits out of
//! `gno` order (multi-threaded replicas with `replica_preserve_commit_order=OFF`).
//!
//! Invariants: the set is always canonical (intervals sorted, disjoint, non-adjacent, never
//! empty; gnos in `1..=MAX_GNO`), so equal sets print equally and the checkpoint text is
//! stable; parsing and event decoding never panic on bad input.

use crate::error::CaptureError;
use mysql_async::Sid;
use mysql_async::binlog::EventType;
use mysql_async::binlog::events::{Event, EventData, GtidEvent, PreviousGtidsEvent};
use std::collections::BTreeMap;
use std::fmt;

/// The largest transaction number MySQL hands out (`MAX_GNO` in `sql/rpl_gtid.h`).
pub const MAX_GNO: u64 = i64::MAX as u64;

/// Where a MySQL GTID comes from: the originating server's uuid and, from 8.4, a tag.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GtidSource {
    pub uuid: [u8; 16],
    /// Lowercase, `[a-z_][a-z0-9_]{0,31}` (MySQL folds tags to lowercase).
    pub tag: Option<String>,
}

/// One MySQL transaction id: `uuid[:tag]:gno`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MysqlGtid {
    pub source: GtidSource,
    pub gno: u64,
}

impl fmt::Display for MysqlGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_uuid(f, &self.source.uuid)?;
        if let Some(tag) = &self.source.tag {
            write!(f, ":{tag}")?;
        }
        write!(f, ":{}", self.gno)
    }
}

/// A MySQL GTID set in canonical form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MysqlGtidSet {
    /// Inclusive `(first, last)` intervals, sorted, disjoint and non-adjacent.
    intervals: BTreeMap<GtidSource, Vec<(u64, u64)>>,
}

impl MysqlGtidSet {
    /// Parses `uuid:1-5:7,uuid2[:tag:1-3]...` as `@@gtid_executed` prints it (whitespace and
    /// newlines after commas allowed, uuids in either case, intervals in any order).
    pub fn parse(text: &str) -> Result<MysqlGtidSet, CaptureError> {
        let bad = |detail: String| CaptureError::BadMysqlGtidSet {
            text: text.to_owned(),
            detail,
        };
        let mut set = MysqlGtidSet::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let mut tokens = part.split(':');
            let uuid_text = tokens.next().unwrap_or_default().trim();
            let uuid = parse_uuid(uuid_text)
                .ok_or_else(|| bad(format!("'{uuid_text}' is not a server uuid")))?;
            let mut source = GtidSource { uuid, tag: None };
            let mut intervals_here = 0usize;
            for token in tokens.map(str::trim) {
                if token.starts_with(|c: char| c.is_ascii_digit()) {
                    let (first, last) = parse_interval(token).ok_or_else(|| {
                        bad(format!("'{token}' is not an interval of 1..{MAX_GNO}"))
                    })?;
                    set.add_interval(&source, first, last);
                    intervals_here += 1;
                } else {
                    if source.tag.is_some() && intervals_here == 0 {
                        return Err(bad(format!(
                            "tag '{token}' follows a tag without intervals"
                        )));
                    }
                    let tag = parse_tag(token)
                        .ok_or_else(|| bad(format!("'{token}' is not a GTID tag")))?;
                    source = GtidSource {
                        uuid,
                        tag: Some(tag),
                    };
                    intervals_here = 0;
                }
            }
            if intervals_here == 0 {
                return Err(bad(format!("'{part}' names no transactions")));
            }
        }
        Ok(set)
    }

    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// Adds one committed transaction.
    /// The one transaction this set holds, if it holds exactly one.
    pub fn single(&self) -> Option<MysqlGtid> {
        let mut all = self.intervals.iter().flat_map(|(source, list)| {
            list.iter().map(move |&(first, last)| (source, first, last))
        });
        match (all.next(), all.next()) {
            (Some((source, first, last)), None) if first == last => Some(MysqlGtid {
                source: source.clone(),
                gno: first,
            }),
            _ => None,
        }
    }

    pub fn add(&mut self, gtid: &MysqlGtid) {
        if (1..=MAX_GNO).contains(&gtid.gno) {
            self.add_interval(&gtid.source, gtid.gno, gtid.gno);
        }
    }

    pub fn contains(&self, gtid: &MysqlGtid) -> bool {
        self.intervals.get(&gtid.source).is_some_and(|list| {
            let i = list.partition_point(|&(_, last)| last < gtid.gno);
            list.get(i).is_some_and(|&(first, _)| first <= gtid.gno)
        })
    }

    /// Every transaction of `other` is in this set.
    pub fn includes(&self, other: &MysqlGtidSet) -> bool {
        other.intervals.iter().all(|(source, list)| {
            let mine = self.intervals.get(source).map_or(&[][..], Vec::as_slice);
            list.iter().all(|&(first, last)| {
                let i = mine.partition_point(|&(_, end)| end < first);
                mine.get(i)
                    .is_some_and(|&(start, end)| start <= first && last <= end)
            })
        })
    }

    /// The set as `COM_BINLOG_DUMP_GTID` takes it:
    /// `BinlogStreamRequest::new(id).with_gtid().with_gtid_set(set.to_sids())`.
    /// Intervals there are half-open (`end` exclusive). A tagged entry switches the whole
    /// request to the 8.4 tagged encoding, which older servers do not understand.
    pub fn to_sids(&self) -> Result<Vec<Sid<'static>>, CaptureError> {
        // mysql_async does not re-export mysql_common's `Tag`; a Sid parsed from its text
        // form (which mysql_common reads exactly as MySQL prints it) carries the tag.
        self.intervals
            .iter()
            .map(|(source, list)| {
                let entry = MysqlGtidSet {
                    intervals: BTreeMap::from([(source.clone(), list.clone())]),
                }
                .to_string();
                entry
                    .parse::<Sid<'static>>()
                    .map_err(|e| CaptureError::BadMysqlGtidSet {
                        text: entry.clone(),
                        detail: e.to_string(),
                    })
            })
            .collect()
    }

    /// The set a PREVIOUS_GTIDS event (35) carries: every transaction in the binlog files
    /// before the one it opens.
    pub fn from_previous_gtids(
        event: &PreviousGtidsEvent<'_>,
    ) -> Result<MysqlGtidSet, CaptureError> {
        let mut set = MysqlGtidSet::default();
        for sid in event.sids() {
            let tag =
                match sid.tag() {
                    Some(tag) => Some(parse_tag(tag.as_str()).ok_or_else(|| {
                        CaptureError::MalformedEvent {
                            event: "PREVIOUS_GTIDS (35)",
                            detail: format!("'{}' is not a GTID tag", tag.as_str()),
                        }
                    })?),
                    None => None,
                };
            let source = GtidSource {
                uuid: sid.uuid(),
                tag,
            };
            for interval in sid.intervals() {
                let (first, end) = (interval.start(), interval.end());
                if first == 0 || end <= first || end - 1 > MAX_GNO {
                    return Err(CaptureError::MalformedEvent {
                        event: "PREVIOUS_GTIDS (35)",
                        detail: format!("interval [{first}, {end}) is not a range of 1..{MAX_GNO}"),
                    });
                }
                set.add_interval(&source, first, end - 1);
            }
        }
        Ok(set)
    }

    fn add_interval(&mut self, source: &GtidSource, first: u64, last: u64) {
        let list = self.intervals.entry(source.clone()).or_default();
        // Everything overlapping or adjacent to [first, last] merges into one interval.
        let start = list.partition_point(|&(_, end)| end.saturating_add(1) < first);
        let stop = list.partition_point(|&(begin, _)| begin <= last.saturating_add(1));
        let (mut lo, mut hi) = (first, last);
        if let (Some(a), Some(b)) = (
            list.get(start),
            stop.checked_sub(1).and_then(|s| list.get(s)),
        ) && start < stop
        {
            lo = lo.min(a.0);
            hi = hi.max(b.1);
        }
        list.splice(start..stop.max(start), [(lo, hi)]);
    }
}

impl fmt::Display for MysqlGtidSet {
    /// Canonical text: uuids in byte order, lowercase with hyphens; per uuid the untagged
    /// intervals first, then each tag in order (`uuid:1-5:7:tag:1-3`), as MySQL 8.4 prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut previous: Option<&[u8; 16]> = None;
        for (source, list) in &self.intervals {
            if previous != Some(&source.uuid) {
                if previous.is_some() {
                    f.write_str(",")?;
                }
                write_uuid(f, &source.uuid)?;
                previous = Some(&source.uuid);
            }
            if let Some(tag) = &source.tag {
                write!(f, ":{tag}")?;
            }
            for &(first, last) in list {
                if first == last {
                    write!(f, ":{first}")?;
                } else {
                    write!(f, ":{first}-{last}")?;
                }
            }
        }
        Ok(())
    }
}

/// What a MySQL GTID event (33, or 42 tagged on 8.4) says about the transaction it opens.
/// The 8.0 fields are `None` when the writing server was 5.7 (or older 8.0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlGtidEventInfo {
    /// `None` for an ANONYMOUS_GTID event (34): a server with `gtid_mode=OFF`, where only
    /// file/position can identify the transaction.
    pub gtid: Option<MysqlGtid>,
    pub last_committed: u64,
    pub sequence_number: u64,
    /// Microseconds since the epoch (MySQL 8.0.1+).
    pub immediate_commit_timestamp_us: Option<u64>,
    pub original_commit_timestamp_us: Option<u64>,
    /// Bytes of the whole transaction in the binlog, this event included (8.0.2+).
    pub transaction_length: Option<u64>,
    /// `80019` for 8.0.19 (8.0.14+).
    pub immediate_server_version: Option<u32>,
    pub original_server_version: Option<u32>,
}

/// Decodes a MySQL GTID, tagged GTID or anonymous GTID event; `Ok(None)` for any other event.
pub fn read_gtid_event(event: &Event) -> Result<Option<MysqlGtidEventInfo>, CaptureError> {
    let raw = event.header().event_type_raw();
    let (name, anonymous) = match raw {
        x if x == EventType::GTID_EVENT as u8 => ("GTID (33)", false),
        x if x == EventType::GTID_TAGGED_LOG_EVENT as u8 => ("GTID_TAGGED (42)", false),
        x if x == EventType::ANONYMOUS_GTID_EVENT as u8 => ("ANONYMOUS_GTID (34)", true),
        _ => return Ok(None),
    };
    let malformed = |detail: String| CaptureError::MalformedEvent {
        event: name,
        detail,
    };
    let gtid_event = match event.read_data() {
        Ok(Some(EventData::GtidEvent(e))) => e,
        Ok(Some(EventData::AnonymousGtidEvent(e))) => e.0,
        Ok(_) => return Err(malformed("not decoded as a GTID event".into())),
        Err(e) => return Err(malformed(e.to_string())),
    };
    info_of(&gtid_event, anonymous).map(Some).map_err(malformed)
}

fn info_of(e: &GtidEvent, anonymous: bool) -> Result<MysqlGtidEventInfo, String> {
    let gtid = if anonymous {
        None
    } else {
        if !(1..=MAX_GNO).contains(&e.gno()) {
            return Err(format!("transaction number {} is out of range", e.gno()));
        }
        let tag = match e.tag() {
            Some(tag) => Some(
                parse_tag(tag.as_str())
                    .ok_or_else(|| format!("'{}' is not a GTID tag", tag.as_str()))?,
            ),
            None => None,
        };
        Some(MysqlGtid {
            source: GtidSource { uuid: e.sid(), tag },
            gno: e.gno(),
        })
    };
    // mysql_common fills absent 8.0 fields with 0 (timestamps, length) and 999999
    // (`UNDEFINED_SERVER_VERSION`, versions).
    let present = |v: u64| (v != 0).then_some(v);
    let version = |v: u32| (v != GtidEvent::UNDEFINED_SERVER_VERSION).then_some(v);
    Ok(MysqlGtidEventInfo {
        gtid,
        last_committed: e.last_committed(),
        sequence_number: e.sequence_number(),
        immediate_commit_timestamp_us: present(e.immediate_commit_timestamp()),
        original_commit_timestamp_us: present(e.original_commit_timestamp()),
        transaction_length: present(e.tx_length()),
        immediate_server_version: version(e.immediate_server_version()),
        original_server_version: version(e.original_server_version()),
    })
}

/// Decodes a PREVIOUS_GTIDS event (35) into the set it carries; `Ok(None)` for other events.
pub fn read_previous_gtids(event: &Event) -> Result<Option<MysqlGtidSet>, CaptureError> {
    if event.header().event_type_raw() != EventType::PREVIOUS_GTIDS_EVENT as u8 {
        return Ok(None);
    }
    match event.read_data() {
        Ok(Some(EventData::PreviousGtidsEvent(e))) => {
            MysqlGtidSet::from_previous_gtids(&e).map(Some)
        }
        Ok(_) => Err(CaptureError::MalformedEvent {
            event: "PREVIOUS_GTIDS (35)",
            detail: "not decoded as a PREVIOUS_GTIDS event".into(),
        }),
        Err(e) => Err(CaptureError::MalformedEvent {
            event: "PREVIOUS_GTIDS (35)",
            detail: e.to_string(),
        }),
    }
}

fn parse_interval(token: &str) -> Option<(u64, u64)> {
    let (first, last) = match token.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let n = token.parse().ok()?;
            (n, n)
        }
    };
    (first >= 1 && first <= last && last <= MAX_GNO).then_some((first, last))
}

/// MySQL 8.4 tags: `[a-z_][a-z0-9_]{0,31}`, case-insensitive (folded to lowercase).
fn parse_tag(token: &str) -> Option<String> {
    let tag = token.to_ascii_lowercase();
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    (first_ok && rest_ok && tag.len() <= 32).then_some(tag)
}

/// `3e11fa47-71ca-11e1-9e33-c80aa9429562` (either case) or the same 32 hex digits bare.
fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: String = if text.len() == 36 {
        let hyphens_in_place = text
            .char_indices()
            .all(|(i, c)| matches!(i, 8 | 13 | 18 | 23) == (c == '-'));
        if !hyphens_in_place {
            return None;
        }
        text.chars().filter(|&c| c != '-').collect()
    } else {
        text.to_owned()
    };
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    let mut uuid = [0u8; 16];
    for (i, byte) in uuid.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(uuid)
}

fn write_uuid(f: &mut fmt::Formatter<'_>, uuid: &[u8; 16]) -> fmt::Result {
    for (i, byte) in uuid.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            f.write_str("-")?;
        }
        write!(f, "{byte:02x}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const B: &str = "5a2a7f44-a811-ea94-7f02-42ac19000202";

    fn gtid(uuid: &str, tag: Option<&str>, gno: u64) -> MysqlGtid {
        MysqlGtid {
            source: GtidSource {
                uuid: parse_uuid(uuid).unwrap(),
                tag: tag.map(str::to_owned),
            },
            gno,
        }
    }

    #[test]
    fn sets_parse_into_canonical_form() {
        let text = format!("{B}:9, {}:7-9:1-5:6,\n{A}:12", A.to_uppercase());
        let set = MysqlGtidSet::parse(&text).unwrap();
        assert_eq!(set.to_string(), format!("{A}:1-9:12,{B}:9"));
        assert_eq!(MysqlGtidSet::parse(&set.to_string()).unwrap(), set);
        assert!(MysqlGtidSet::parse("").unwrap().is_empty());
        let bare = A.replace('-', "");
        assert_eq!(
            MysqlGtidSet::parse(&format!("{bare}:3"))
                .unwrap()
                .to_string(),
            format!("{A}:3")
        );
    }

    #[test]
    fn tagged_sets_group_tags_after_the_untagged_intervals() {
        let set = MysqlGtidSet::parse(&format!("{A}:Zeta:4:alpha:1-2:3,{A}:1-5")).unwrap();
        assert_eq!(set.to_string(), format!("{A}:1-5:alpha:1-3:zeta:4"));
        assert!(set.contains(&gtid(A, Some("alpha"), 2)));
        assert!(!set.contains(&gtid(A, Some("alpha"), 5)));
        assert!(!set.contains(&gtid(A, Some("zeta"), 1)));
    }

    #[test]
    fn bad_sets_are_refused_with_the_text() {
        for bad in [
            "0-1-5",
            A,
            &format!("{A}:"),
            &format!("{A}:0"),
            &format!("{A}:5-3"),
            &format!("{A}:1-x"),
            &format!("{A}:9223372036854775808"),
            &format!("{A}:tag"),
            &format!("{A}:t@g:1"),
            &format!("{A}:a:b:1"),
            "3e11fa47-71ca-11e1-9e33-c80aa942956:1",
            "3e11fa4771ca-11e1-9e33--c80aa9429562:1",
            "ééééééééééééééééééééééééééééééééééé:1",
        ] {
            let err = MysqlGtidSet::parse(bad).unwrap_err();
            assert!(
                matches!(&err, CaptureError::BadMysqlGtidSet { text, .. } if text == bad),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn adding_transactions_merges_intervals() {
        let mut set = MysqlGtidSet::default();
        for gno in [5, 3, 4, 1, 9, 10, 8] {
            set.add(&gtid(A, None, gno));
        }
        assert_eq!(set.to_string(), format!("{A}:1:3-5:8-10"));
        set.add(&gtid(A, None, 2));
        set.add(&gtid(A, None, 7));
        set.add(&gtid(A, None, 6));
        assert_eq!(set.to_string(), format!("{A}:1-10"));
        set.add(&gtid(A, None, 4));
        set.add(&gtid(B, None, 1));
        set.add(&gtid(A, None, 0));
        assert_eq!(set.to_string(), format!("{A}:1-10,{B}:1"));
        assert!(set.contains(&gtid(A, None, 10)));
        assert!(!set.contains(&gtid(A, None, 11)));
        assert!(!set.contains(&gtid(B, None, 2)));
        assert!(set.includes(&MysqlGtidSet::parse(&format!("{A}:2-4:9,{B}:1")).unwrap()));
        assert!(!set.includes(&MysqlGtidSet::parse(&format!("{A}:9-11")).unwrap()));
        assert!(set.includes(&MysqlGtidSet::default()));
    }

    #[test]
    fn merging_an_interval_spanning_several() {
        let mut set = MysqlGtidSet::parse(&format!("{A}:1-2:4-5:8:20-30")).unwrap();
        set.add_interval(&gtid(A, None, 1).source, 3, 19);
        assert_eq!(set.to_string(), format!("{A}:1-30"));
        let mut set = MysqlGtidSet::parse(&format!("{A}:{MAX_GNO}")).unwrap();
        set.add(&gtid(A, None, MAX_GNO - 1));
        assert_eq!(set.to_string(), format!("{A}:{}-{MAX_GNO}", MAX_GNO - 1));
    }

    #[test]
    fn sets_become_dump_request_sids_with_exclusive_ends() {
        let set = MysqlGtidSet::parse(&format!("{A}:1-5:7:tg:2,{B}:3")).unwrap();
        let sids = set.to_sids().unwrap();
        assert_eq!(sids.len(), 3);
        assert_eq!(sids[0].uuid(), parse_uuid(A).unwrap());
        assert!(sids[0].tag().is_none());
        let ends: Vec<(u64, u64)> = sids[0]
            .intervals()
            .iter()
            .map(|i| (i.start(), i.end()))
            .collect();
        assert_eq!(ends, vec![(1, 6), (7, 8)]);
        assert_eq!(sids[1].tag().map(|t| t.as_str()), Some("tg"));
        // mysql_common prints a Sid the way MySQL prints a set.
        assert_eq!(sids[0].to_string(), format!("{A}:1-5:7"));
        assert_eq!(sids[2].to_string(), format!("{B}:3"));
    }
}
