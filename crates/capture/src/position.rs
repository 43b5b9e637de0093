//! Source positions of both flavours, and the rule for taking them from the stream.
//!
//! A checkpoint names where the stream resumes, as one of:
//! - a MariaDB GTID position (`mariadb-gtid:0-1-5,1-1-9`; what checkpoints held before this
//!   module, a bare `0-1-42` or an empty string, still reads as one);
//! - a MySQL GTID set (`mysql-gtid:<uuid:1-5,...>`);
//! - a binlog file and offset (`file:binlog.000003:1234`), the secondary key on both flavours
//!   and the only one when a MySQL source runs with `gtid_mode=OFF`.
//!
//! Invariant: a file/position is only ever taken from an event that *commits* a transaction
//! (XID, a `COMMIT` query, a standalone DDL query), using that event's `log_pos` (where the
//! next event starts). Positions of events inside a transaction are never resume points: on
//! MariaDB 11.4+ they are 0 (events written through the transaction cache are not stamped),
//! and resuming mid-transaction would split it. A commit event without a position (`log_pos`
//! 0) makes the file/position *unknown* rather than stale: a checkpoint never pairs a GTID
//! position with the file/position of an earlier transaction. Events expanded from a MySQL 8
//! compressed transaction carry no usable position of their own: their commit position is the
//! end of the TRANSACTION_PAYLOAD event that held them. `log_pos` has 32 bits: in a binlog
//! file longer than 4 GiB (one huge transaction) it wraps, and from there to the end of that
//! file no offset is exact, so none is given.
//!
//! [`SessionPosition`] follows both keys through one stream session; the checkpoint records
//! them together (`gtid_position`, `binlog_position`).

use crate::error::CaptureError;
use crate::gtid::GtidPosition;
use crate::mysql_gtid::MysqlGtidSet;
use mysql_async::binlog::EventType;
use mysql_async::binlog::events::{Event, RotateEvent};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Which server family writes the binlog; decides the GTID scheme and the dump command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFlavour {
    MariaDb,
    MySql,
}

impl SourceFlavour {
    /// From `SELECT @@version`: MariaDB says so (`10.11.6-MariaDB-0+deb12u1`), MySQL does not.
    pub fn from_version(version: &str) -> SourceFlavour {
        if version.to_ascii_lowercase().contains("mariadb") {
            SourceFlavour::MariaDb
        } else {
            SourceFlavour::MySql
        }
    }
}

/// A binlog file name and the offset of the next event to read in it. In the checkpoint:
/// `"binlog_position": {"file": "mariadb-bin.000003", "offset": 1234}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinlogFilePosition {
    pub file: String,
    pub offset: u64,
}

impl fmt::Display for BinlogFilePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.offset)
    }
}

/// Where the stream resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourcePosition {
    MariaDbGtid(GtidPosition),
    MySqlGtid(MysqlGtidSet),
    File(BinlogFilePosition),
}

const MARIADB_GTID: &str = "mariadb-gtid:";
const MYSQL_GTID: &str = "mysql-gtid:";
const FILE: &str = "file:";

impl SourcePosition {
    /// Reads the checkpoint form written by [`fmt::Display`], and the bare MariaDB GTID
    /// positions older checkpoints hold (`0-1-42`, `0-1-42,1-2-7`, or empty: from the oldest
    /// binlog).
    pub fn parse(text: &str) -> Result<SourcePosition, CaptureError> {
        let bad = |detail: String| CaptureError::BadSourcePosition {
            text: text.to_owned(),
            detail,
        };
        let trimmed = text.trim();
        if let Some(rest) = trimmed.strip_prefix(MARIADB_GTID) {
            return GtidPosition::parse(rest)
                .map(SourcePosition::MariaDbGtid)
                .map_err(|e| bad(e.to_string()));
        }
        if let Some(rest) = trimmed.strip_prefix(MYSQL_GTID) {
            return MysqlGtidSet::parse(rest)
                .map(SourcePosition::MySqlGtid)
                .map_err(|e| bad(e.to_string()));
        }
        if let Some(rest) = trimmed.strip_prefix(FILE) {
            // File names may hold ':' (unusual but legal); the offset never does.
            let (file, offset) = rest
                .rsplit_once(':')
                .ok_or_else(|| bad("no ':<offset>' after the file name".into()))?;
            let offset: u64 = offset
                .parse()
                .map_err(|_| bad(format!("'{offset}' is not a byte offset")))?;
            if file.is_empty() || offset < 4 {
                return Err(bad(
                    "the file name is empty or the offset is inside the file header".into(),
                ));
            }
            return Ok(SourcePosition::File(BinlogFilePosition {
                file: file.to_owned(),
                offset,
            }));
        }
        GtidPosition::parse(trimmed)
            .map(SourcePosition::MariaDbGtid)
            .map_err(|e| bad(e.to_string()))
    }

    pub fn flavour(&self) -> Option<SourceFlavour> {
        match self {
            SourcePosition::MariaDbGtid(_) => Some(SourceFlavour::MariaDb),
            SourcePosition::MySqlGtid(_) => Some(SourceFlavour::MySql),
            SourcePosition::File(_) => None,
        }
    }
}

impl fmt::Display for SourcePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourcePosition::MariaDbGtid(p) => write!(f, "{MARIADB_GTID}{p}"),
            SourcePosition::MySqlGtid(s) => write!(f, "{MYSQL_GTID}{s}"),
            SourcePosition::File(p) => write!(f, "{FILE}{p}"),
        }
    }
}

/// One source transaction's global id, of either flavour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceGtid {
    MariaDb(crate::gtid::Gtid),
    MySql(crate::mysql_gtid::MysqlGtid),
}

impl SourceGtid {
    /// Reads a GTID as [`fmt::Display`] wrote it: `domain-server-sequence` (MariaDB) or
    /// `uuid[:tag]:gno` (MySQL).
    pub fn parse(text: &str) -> Result<SourceGtid, CaptureError> {
        if text.contains(':') {
            let set = MysqlGtidSet::parse(text)?;
            return set.single().map(SourceGtid::MySql).ok_or_else(|| {
                CaptureError::BadSourcePosition {
                    text: text.to_owned(),
                    detail: "expected one MySQL GTID (uuid:number)".into(),
                }
            });
        }
        let position = GtidPosition::parse(text)?;
        match (position.first(), position.len()) {
            (Some(gtid), 1) => Ok(SourceGtid::MariaDb(gtid)),
            _ => Err(CaptureError::BadGtidPosition(text.to_owned())),
        }
    }
}

impl fmt::Display for SourceGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceGtid::MariaDb(gtid) => gtid.fmt(f),
            SourceGtid::MySql(gtid) => gtid.fmt(f),
        }
    }
}

/// The position a stream has reached, advanced at every committed transaction and written
/// to the checkpoint: a MariaDB GTID position (written bare, as checkpoints always held it)
/// or a MySQL GTID set (`mysql-gtid:...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamPosition {
    MariaDb(GtidPosition),
    MySql(MysqlGtidSet),
}

impl StreamPosition {
    /// The checkpoint's position; a file/position checkpoint cannot be streamed from by GTID.
    pub fn parse(text: &str) -> Result<StreamPosition, CaptureError> {
        match SourcePosition::parse(text)? {
            SourcePosition::MariaDbGtid(position) => Ok(StreamPosition::MariaDb(position)),
            SourcePosition::MySqlGtid(set) => Ok(StreamPosition::MySql(set)),
            SourcePosition::File(_) => Err(CaptureError::BadSourcePosition {
                text: text.to_owned(),
                detail: "capture streams by GTID; enable GTIDs on the source (MySQL: \
                         gtid_mode=ON) and re-seed the site"
                    .into(),
            }),
        }
    }

    pub fn flavour(&self) -> SourceFlavour {
        match self {
            StreamPosition::MariaDb(_) => SourceFlavour::MariaDb,
            StreamPosition::MySql(_) => SourceFlavour::MySql,
        }
    }

    /// Records a committed transaction. A GTID of the other flavour is ignored (it cannot
    /// come from the same server).
    pub fn advance(&mut self, gtid: &SourceGtid) {
        match (self, gtid) {
            (StreamPosition::MariaDb(position), SourceGtid::MariaDb(gtid)) => {
                position.advance(*gtid)
            }
            (StreamPosition::MySql(set), SourceGtid::MySql(gtid)) => set.add(gtid),
            _ => {}
        }
    }
}

impl fmt::Display for StreamPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamPosition::MariaDb(position) => position.fmt(f),
            StreamPosition::MySql(set) => write!(f, "{MYSQL_GTID}{set}"),
        }
    }
}

/// Follows the binlog file name through ROTATE events and hands out file/positions at
/// commit events only (see the module docs).
#[derive(Debug, Default)]
pub struct CommitPositions {
    file: Option<String>,
    /// `log_pos` of the TRANSACTION_PAYLOAD event whose inner events are being read.
    payload_end: Option<u64>,
    /// The last commit offset handed out in `file`.
    last_offset: u64,
    /// `log_pos` went backwards in `file`: it wrapped past 4 GiB.
    wrapped: bool,
}

impl CommitPositions {
    /// `file`: the file the stream was asked to start in, if known (file/position resume).
    pub fn new(file: Option<String>) -> CommitPositions {
        CommitPositions {
            file,
            payload_end: None,
            last_offset: 0,
            wrapped: false,
        }
    }

    pub fn file(&self) -> Option<&str> {
        self.file.as_deref()
    }

    /// Sees every event before it is interpreted. `inside_payload` says the event was
    /// expanded from the TRANSACTION_PAYLOAD event seen last (see `transaction_payload`).
    pub fn observe(&mut self, event: &Event, inside_payload: bool) -> Result<(), CaptureError> {
        let header = event.header();
        let raw = header.event_type_raw();
        if !inside_payload {
            self.payload_end = None;
        }
        if raw == EventType::TRANSACTION_PAYLOAD_EVENT as u8 {
            self.payload_end = Some(u64::from(header.log_pos()));
        } else if raw == EventType::ROTATE_EVENT as u8 {
            let rotate = event.read_event::<RotateEvent<'_>>().map_err(|e| {
                CaptureError::MalformedEvent {
                    event: "ROTATE (4)",
                    detail: e.to_string(),
                }
            })?;
            let artificial = header.log_pos() == 0 || header.timestamp() == 0;
            let mut name = rotate.name_raw().to_vec();
            if artificial && name.len() > 4 && carries_its_checksum(event, &name) {
                // mysql_async issue #189: the artificial ROTATE is read before the format
                // description, so its CRC32 is left on the end of the file name.
                name.truncate(name.len() - 4);
            }
            let name = String::from_utf8(name).map_err(|_| CaptureError::MalformedEvent {
                event: "ROTATE (4)",
                detail: "the binlog file name is not UTF-8".into(),
            })?;
            if name.is_empty() {
                return Err(CaptureError::MalformedEvent {
                    event: "ROTATE (4)",
                    detail: "empty binlog file name".into(),
                });
            }
            if self.file.as_deref() != Some(name.as_str()) {
                (self.last_offset, self.wrapped) = (0, false);
            }
            self.file = Some(name);
        }
        Ok(())
    }

    /// The resume point after `event`, which commits a transaction (XID, `COMMIT`, or a
    /// standalone DDL query). `None` while the file name is unknown (no ROTATE seen yet), when
    /// the commit event carries no position (`log_pos` 0), and past a 4 GiB wrap of `log_pos`.
    pub fn at_commit(
        &mut self,
        event: &Event,
        inside_payload: bool,
    ) -> Result<Option<BinlogFilePosition>, CaptureError> {
        let Some(file) = &self.file else {
            return Ok(None);
        };
        let offset = match (inside_payload, self.payload_end) {
            (true, Some(end)) => end,
            (true, None) => {
                return Err(CaptureError::MalformedEvent {
                    event: "TRANSACTION_PAYLOAD (40)",
                    detail: "an expanded event arrived without its payload event".into(),
                });
            }
            (false, _) => u64::from(event.header().log_pos()),
        };
        if offset < 4 {
            // Not stamped (0), or inside the file header: not a resume point.
            return Ok(None);
        }
        if self.wrapped || offset < self.last_offset {
            self.wrapped = true;
            return Ok(None);
        }
        self.last_offset = offset;
        Ok(Some(BinlogFilePosition {
            file: file.clone(),
            offset,
        }))
    }
}

/// Where one stream session stands after the last transaction it committed: the GTID
/// position (advanced by each transaction's GTID) and the binlog file/position (the end of
/// its commit event, see the module docs). The publisher checkpoints both together.
#[derive(Debug)]
pub struct SessionPosition {
    gtid: StreamPosition,
    files: CommitPositions,
    binlog: Option<BinlogFilePosition>,
}

impl SessionPosition {
    /// Starts from the checkpoint's two keys. The stream itself names its file (the artificial
    /// ROTATE it opens with), so a file/position resume and a GTID resume track files alike.
    pub fn new(gtid: StreamPosition, binlog: Option<BinlogFilePosition>) -> SessionPosition {
        let mut files = CommitPositions::new(binlog.as_ref().map(|b| b.file.clone()));
        // Offsets in the checkpoint's file only grow from here (see `at_commit`).
        files.last_offset = binlog.as_ref().map_or(0, |b| b.offset);
        SessionPosition {
            files,
            gtid,
            binlog,
        }
    }

    /// Sees every event (ROTATE changes the file; see [`CommitPositions::observe`]).
    pub fn observe(&mut self, event: &Event, inside_payload: bool) -> Result<(), CaptureError> {
        self.files.observe(event, inside_payload)
    }

    /// Records the transaction that `event` commits, with its GTID if it has one.
    pub fn commit(
        &mut self,
        event: &Event,
        inside_payload: bool,
        gtid: Option<&SourceGtid>,
    ) -> Result<(), CaptureError> {
        if let Some(gtid) = gtid {
            self.gtid.advance(gtid);
        }
        self.binlog = self.files.at_commit(event, inside_payload)?;
        Ok(())
    }

    pub fn gtid(&self) -> &StreamPosition {
        &self.gtid
    }

    /// The file/position after the last committed transaction; `None` when not known.
    pub fn binlog(&self) -> Option<&BinlogFilePosition> {
        self.binlog.as_ref()
    }
}

/// Whether the last 4 bytes of an artificial ROTATE's name are the event's CRC32.
fn carries_its_checksum(event: &Event, name: &[u8]) -> bool {
    let header = event.header();
    let mut bytes = Vec::with_capacity(19 + 8 + name.len());
    bytes.extend(header.timestamp().to_le_bytes());
    bytes.push(header.event_type_raw());
    bytes.extend(header.server_id().to_le_bytes());
    bytes.extend(header.event_size().to_le_bytes());
    bytes.extend(header.log_pos().to_le_bytes());
    bytes.extend(header.flags_raw().to_le_bytes());
    let Some(position) = event.data().get(..8) else {
        return false;
    };
    bytes.extend(position);
    let (text, stored) = name.split_at(name.len() - 4);
    bytes.extend(text);
    crc32(&bytes).to_le_bytes() == stored
}

/// CRC-32 (IEEE 802.3), as the binlog uses.
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gtid::Gtid;
    use mysql_async::binlog::events::{BinlogEventFooter, FormatDescriptionEvent};
    use mysql_async::binlog::{BinlogChecksumAlg, BinlogVersion};

    #[test]
    fn checkpoint_strings_round_trip_and_bare_mariadb_positions_still_read() {
        let mariadb = SourcePosition::parse("0-1-5,1-1-9").unwrap();
        assert_eq!(mariadb.to_string(), "mariadb-gtid:0-1-5,1-1-9");
        assert_eq!(
            SourcePosition::parse(&mariadb.to_string()).unwrap(),
            mariadb
        );
        assert_eq!(
            SourcePosition::parse("").unwrap(),
            SourcePosition::MariaDbGtid(GtidPosition::default()),
            "an empty checkpoint position means: from the oldest binlog"
        );
        assert_eq!(
            SourcePosition::parse("0-1-42").unwrap(),
            SourcePosition::MariaDbGtid(GtidPosition::parse("0-1-42").unwrap())
        );
        let mysql = "mysql-gtid:3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7";
        let parsed = SourcePosition::parse(mysql).unwrap();
        assert_eq!(parsed.flavour(), Some(SourceFlavour::MySql));
        assert_eq!(parsed.to_string(), mysql);
        let file = SourcePosition::parse("file:odd:name.000003:1234").unwrap();
        assert_eq!(
            file,
            SourcePosition::File(BinlogFilePosition {
                file: "odd:name.000003".into(),
                offset: 1234
            })
        );
        assert_eq!(file.to_string(), "file:odd:name.000003:1234");
        assert_eq!(file.flavour(), None);
        assert_eq!(
            SourcePosition::parse("mariadb-gtid:").unwrap(),
            SourcePosition::MariaDbGtid(GtidPosition::default())
        );
    }

    #[test]
    fn bad_positions_name_the_text() {
        for bad in [
            "file:binlog.000001",
            "file:binlog.000001:x",
            "file::120",
            "file:binlog.000001:3",
            "mysql-gtid:0-1-5",
            "mariadb-gtid:3e11fa47-71ca-11e1-9e33-c80aa9429562:1",
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1",
            "binlog.000001:4",
        ] {
            let err = SourcePosition::parse(bad).unwrap_err();
            assert!(
                matches!(&err, CaptureError::BadSourcePosition { text, .. } if text == bad),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn flavour_from_the_server_version() {
        assert_eq!(
            SourceFlavour::from_version("10.11.6-MariaDB-0+deb12u1-log"),
            SourceFlavour::MariaDb
        );
        assert_eq!(SourceFlavour::from_version("8.0.36"), SourceFlavour::MySql);
        assert_eq!(
            SourceFlavour::from_version("5.7.44-log"),
            SourceFlavour::MySql
        );
        let _ = Gtid {
            domain: 0,
            server: 1,
            sequence: 1,
        };
    }

    /// A ROTATE event (type 4, `u64 position` + file name) as the binlog carries it.
    fn rotate(timestamp: u32, log_pos: u32, name: &[u8], crc_on_name: bool) -> Event {
        let mut body = 4u64.to_le_bytes().to_vec();
        body.extend(name);
        let size = 19 + body.len() + if crc_on_name { 4 } else { 0 };
        let mut bytes = Vec::new();
        bytes.extend(timestamp.to_le_bytes());
        bytes.push(4);
        bytes.extend(1u32.to_le_bytes());
        bytes.extend((size as u32).to_le_bytes());
        bytes.extend(log_pos.to_le_bytes());
        bytes.extend(0x20u16.to_le_bytes());
        bytes.extend(&body);
        if crc_on_name {
            let crc = crc32(&bytes);
            bytes.extend(crc.to_le_bytes());
        }
        // Before any FORMAT_DESCRIPTION the reader assumes no checksum (mysql_async #189).
        let fde = FormatDescriptionEvent::new(BinlogVersion::Version4).with_footer(
            BinlogEventFooter::new(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_OFF),
        );
        Event::read(&fde, &bytes[..]).unwrap()
    }

    /// An event of `event_type` with `body`, as read before any checksum applies.
    fn event(event_type: u8, log_pos: u32, body: &[u8]) -> Event {
        let mut bytes = Vec::new();
        bytes.extend(1_700_000_000u32.to_le_bytes());
        bytes.push(event_type);
        bytes.extend(1u32.to_le_bytes());
        bytes.extend(((19 + body.len()) as u32).to_le_bytes());
        bytes.extend(log_pos.to_le_bytes());
        bytes.extend(0u16.to_le_bytes());
        bytes.extend(body);
        let fde = FormatDescriptionEvent::new(BinlogVersion::Version4).with_footer(
            BinlogEventFooter::new(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_OFF),
        );
        Event::read(&fde, &bytes[..]).unwrap()
    }

    fn xid(log_pos: u32) -> Event {
        event(16, log_pos, &7u64.to_le_bytes())
    }

    fn at(file: &str, offset: u64) -> Option<BinlogFilePosition> {
        Some(BinlogFilePosition {
            file: file.into(),
            offset,
        })
    }

    fn gtid(sequence: u64) -> SourceGtid {
        SourceGtid::MariaDb(Gtid {
            domain: 0,
            server: 1,
            sequence,
        })
    }

    #[test]
    fn a_session_takes_file_positions_at_commits_and_follows_rotates() {
        let start = StreamPosition::MariaDb(GtidPosition::parse("0-1-4").unwrap());
        let mut session = SessionPosition::new(start, None);
        // The stream opens with the artificial ROTATE naming its file (CRC32 on the name).
        session
            .observe(&rotate(0, 0, b"mariadb-bin.000001", true), false)
            .unwrap();
        assert_eq!(session.binlog(), None, "nothing committed yet");
        // Events inside a transaction are seen but never give a position, whatever their
        // log_pos says (MariaDB 11.4+ writes 0 there).
        for inside in [event(19, 900, &[0; 8]), event(30, 0, &[0; 8])] {
            session.observe(&inside, false).unwrap();
            assert_eq!(session.binlog(), None);
        }
        let commit = xid(1_234);
        session.observe(&commit, false).unwrap();
        session.commit(&commit, false, Some(&gtid(5))).unwrap();
        assert_eq!(session.binlog().cloned(), at("mariadb-bin.000001", 1_234));
        assert_eq!(session.gtid().to_string(), "0-1-5");

        // A real ROTATE ends the file: the last commit's position stays the resume point
        // (resuming there reads the ROTATE again); the next commit is in the new file.
        session
            .observe(
                &rotate(1_700_000_001, 1_300, b"mariadb-bin.000002", false),
                false,
            )
            .unwrap();
        assert_eq!(session.binlog().cloned(), at("mariadb-bin.000001", 1_234));
        let commit = xid(400);
        session.observe(&commit, false).unwrap();
        session.commit(&commit, false, Some(&gtid(6))).unwrap();
        assert_eq!(session.binlog().cloned(), at("mariadb-bin.000002", 400));

        // A commit event without a position makes it unknown, never stale.
        let unstamped = xid(0);
        session.commit(&unstamped, false, Some(&gtid(7))).unwrap();
        assert_eq!(session.binlog(), None);
        assert_eq!(session.gtid().to_string(), "0-1-7");
    }

    #[test]
    fn a_file_position_resume_knows_its_file_before_the_stream_names_it() {
        let start = StreamPosition::MySql(MysqlGtidSet::default());
        let mut session = SessionPosition::new(start, at("binlog.000009", 4));
        let commit = xid(600);
        // A transaction without a GTID (MySQL with gtid_mode=OFF: ANONYMOUS_GTID).
        session.commit(&commit, false, None).unwrap();
        assert_eq!(session.binlog().cloned(), at("binlog.000009", 600));
        assert_eq!(session.gtid().to_string(), "mysql-gtid:");
        // The artificial ROTATE a file/position dump opens with names the same file.
        session
            .observe(&rotate(0, 0, b"binlog.000009", true), false)
            .unwrap();
        let commit = xid(700);
        session.commit(&commit, false, None).unwrap();
        assert_eq!(session.binlog().cloned(), at("binlog.000009", 700));
    }

    #[test]
    fn past_a_4_gib_wrap_of_log_pos_no_offset_in_that_file_is_given() {
        let start = StreamPosition::MariaDb(GtidPosition::default());
        let mut session = SessionPosition::new(start, at("mariadb-bin.000001", 4));
        session
            .commit(&xid(4_000_000_000), false, Some(&gtid(1)))
            .unwrap();
        assert_eq!(
            session.binlog().cloned(),
            at("mariadb-bin.000001", 4_000_000_000)
        );
        // One transaction of 300 MB later the 32-bit log_pos has wrapped.
        for wrapped in [5_032_704, 9_000_000] {
            session
                .commit(&xid(wrapped), false, Some(&gtid(2)))
                .unwrap();
            assert_eq!(session.binlog(), None, "{wrapped} is not an offset");
        }
        session
            .observe(
                &rotate(1_700_000_001, 9_000_100, b"mariadb-bin.000002", false),
                false,
            )
            .unwrap();
        session.commit(&xid(700), false, Some(&gtid(3))).unwrap();
        assert_eq!(session.binlog().cloned(), at("mariadb-bin.000002", 700));
    }

    #[test]
    fn the_binlog_position_has_a_stable_checkpoint_form() {
        let position = BinlogFilePosition {
            file: "mariadb-bin.000003".into(),
            offset: 1_234,
        };
        let json = serde_json::to_string(&position).unwrap();
        assert_eq!(json, r#"{"file":"mariadb-bin.000003","offset":1234}"#);
        assert_eq!(
            serde_json::from_str::<BinlogFilePosition>(&json).unwrap(),
            position
        );
    }

    #[test]
    fn crc32_matches_the_reference_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn the_artificial_rotate_loses_its_trailing_checksum() {
        let mut positions = CommitPositions::new(None);
        positions
            .observe(&rotate(0, 0, b"binlog.000007", true), false)
            .unwrap();
        assert_eq!(positions.file(), Some("binlog.000007"));
        // A real rotate whose name merely ends in 4 arbitrary bytes keeps them.
        positions
            .observe(&rotate(1_700_000_000, 500, b"binlog.000008", false), false)
            .unwrap();
        assert_eq!(positions.file(), Some("binlog.000008"));
        positions
            .observe(&rotate(0, 0, b"binlog.000009", false), false)
            .unwrap();
        assert_eq!(positions.file(), Some("binlog.000009"));
    }
}
