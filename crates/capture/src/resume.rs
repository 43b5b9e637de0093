//! How a stream session asks the source for its binlog: by GTID or by binlog file/position.
//!
//! The checkpoint holds both keys, taken at the end of the same transaction (`checkpoint`,
//! `position`). `[site] resume_by` ([`ResumeBy`]) chooses between them:
//! - `gtid` (the default): by GTID where the source has usable GTIDs: MariaDB through
//!   `@slave_connect_state`, MySQL with `gtid_mode=ON` through `COM_BINLOG_DUMP_GTID`. A MySQL
//!   source without GTIDs is read by file/position instead (said in the log at every start).
//! - `file_position`: always by file/position: `COM_BINLOG_DUMP` with the checkpoint's file
//!   and offset.
//!
//! Whatever the mode, a MariaDB session asks for GTID events (`@mariadb_slave_capability=4`),
//! so both keys are tracked and a site can change modes between sessions.
//!
//! Invariants: a session starts exactly at the end of the last checkpointed transaction, or
//! does not start. A checkpoint without a file/position (written by an older version, or by a
//! GTID-resumed capture before its first transaction end) resumes by GTID where the source
//! has GTIDs, and is refused with the remedy where it has none. A checkpoint whose GTID
//! position is empty but which has a file/position resumes by file/position in either mode,
//! because an empty GTID position means "from the oldest binlog". Before streaming, the key
//! is checked against what the server still has: a purged binlog stops capture with the
//! remedy instead of skipping changes.

use crate::binlog_files;
use crate::error::CaptureError;
use crate::gtid::GtidPosition;
use crate::mysql_gtid::MysqlGtidSet;
use crate::position::{BinlogFilePosition, SourceFlavour, StreamPosition};
use crate::settings::{CaptureSettings, ResumeBy, StartPosition};
use crate::source::{self, ServerInfo};
use mysql_async::prelude::*;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use std::time::Duration;

/// Heartbeat period requested from the server; a silent stream is noticed after a few.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// MySQL and MariaDB's `ER_MASTER_FATAL_ERROR_READING_BINLOG`: the requested position is not
/// (or no longer) in the server's binlogs.
const ER_MASTER_FATAL_ERROR_READING_BINLOG: u16 = 1236;

/// Where one session starts, and by which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resume {
    MariaDbGtid(GtidPosition),
    MySqlGtid(MysqlGtidSet),
    File(BinlogFilePosition),
}

impl Resume {
    /// The mode, as `resume_by` spells it.
    pub fn mode(&self) -> ResumeBy {
        match self {
            Resume::MariaDbGtid(_) | Resume::MySqlGtid(_) => ResumeBy::Gtid,
            Resume::File(_) => ResumeBy::FilePosition,
        }
    }

    /// The start point for messages: `GTID position '0-1-5'`, `binlog file/position 'f:4'`.
    pub fn describe(&self) -> String {
        match self {
            Resume::MariaDbGtid(position) => format!("GTID position '{position}'"),
            Resume::MySqlGtid(set) => format!("GTID set '{set}'"),
            Resume::File(at) => format!("binlog file/position '{at}'"),
        }
    }

    /// A server error at the start of the stream: 1236 means the start point is gone.
    fn refused(&self, error: mysql_async::Error) -> CaptureError {
        match error {
            mysql_async::Error::Server(e) if e.code == ER_MASTER_FATAL_ERROR_READING_BINLOG => {
                CaptureError::PositionPurged {
                    position: self.describe(),
                    detail: e.message,
                }
            }
            other => other.into(),
        }
    }
}

/// The checkpoint's GTID position for this server. A new site (empty position) has the
/// server's own scheme; a position of the other flavour is refused.
pub(crate) fn stream_position(
    text: &str,
    flavour: SourceFlavour,
) -> Result<StreamPosition, CaptureError> {
    match (StreamPosition::parse(text)?, flavour) {
        (StreamPosition::MariaDb(position), SourceFlavour::MySql) if position.is_empty() => {
            Ok(StreamPosition::MySql(MysqlGtidSet::default()))
        }
        (position, flavour) if position.flavour() != flavour => {
            Err(CaptureError::BadSourcePosition {
                text: text.to_owned(),
                detail: format!(
                    "the checkpoint holds a {:?} position but the site database is {flavour:?}; \
                     point capture at the right server, or reset this site's capture state \
                     and re-seed it",
                    position.flavour()
                ),
            })
        }
        (position, _) => Ok(position),
    }
}

/// Chooses the start of a session from the checkpoint's two keys (see the module docs), with
/// the reason when it is not simply the configured mode.
pub(crate) fn choose(
    resume_by: ResumeBy,
    gtids: bool,
    gtid: &StreamPosition,
    binlog: Option<&BinlogFilePosition>,
) -> Result<(Resume, Option<&'static str>), CaptureError> {
    let by_gtid = |reason| {
        let resume = match gtid {
            StreamPosition::MariaDb(position) => Resume::MariaDbGtid(position.clone()),
            StreamPosition::MySql(set) => Resume::MySqlGtid(set.clone()),
        };
        Ok((resume, reason))
    };
    let gtid_empty = match gtid {
        StreamPosition::MariaDb(position) => position.is_empty(),
        StreamPosition::MySql(set) => set.is_empty(),
    };
    match (resume_by, gtids, binlog) {
        (ResumeBy::FilePosition, _, Some(at)) => Ok((Resume::File(at.clone()), None)),
        (ResumeBy::Gtid, false, Some(at)) => Ok((
            Resume::File(at.clone()),
            Some("the source has no usable GTIDs (MySQL gtid_mode is not ON)"),
        )),
        (ResumeBy::Gtid, true, Some(at)) if gtid_empty => Ok((
            Resume::File(at.clone()),
            Some("the checkpoint has a binlog file/position but no GTID position yet"),
        )),
        (ResumeBy::Gtid, true, _) => by_gtid(None),
        (ResumeBy::FilePosition, true, None) => by_gtid(Some(
            "the checkpoint has no binlog file/position yet (an older checkpoint, or no \
             transaction end seen); it records one at the next transaction end",
        )),
        (_, false, None) => Err(CaptureError::NoResumePoint {
            detail: "the checkpoint has no binlog file/position and the source has no usable \
                     GTIDs (MySQL gtid_mode is not ON), so there is no exact point to resume \
                     from"
                .into(),
        }),
    }
}

/// Where a new capture state starts: its GTID position and, when it will resume by
/// file/position, its binlog file/position (taken together, so they name the same point).
pub(crate) async fn start_point(
    conn: &mut Conn,
    start: StartPosition,
    resume_by: ResumeBy,
    server: &ServerInfo,
) -> Result<(String, Option<BinlogFilePosition>), CaptureError> {
    let by_file = resume_by == ResumeBy::FilePosition || !server.gtids;
    match (start, by_file) {
        (StartPosition::Oldest, false) => Ok((String::new(), None)),
        (StartPosition::Current, false) => Ok((server.current_position.clone(), None)),
        (StartPosition::Oldest, true) => {
            let files = binlog_files::list(conn).await?;
            let oldest =
                binlog_files::oldest(&files).ok_or_else(|| CaptureError::NoResumePoint {
                    detail: "the source lists no binary logs to start from (SHOW BINARY LOGS is \
                         empty)"
                        .into(),
                })?;
            Ok((String::new(), Some(oldest)))
        }
        (StartPosition::Current, true) => {
            let current = binlog_files::current(conn, server.flavour).await?;
            let gtid = match server.flavour {
                SourceFlavour::MariaDb => {
                    binlog_files::mariadb_gtid_at(conn, &current.binlog).await?
                }
                SourceFlavour::MySql => StreamPosition::MySql(MysqlGtidSet::parse(
                    current.executed_gtids.as_deref().unwrap_or_default(),
                )?)
                .to_string(),
            };
            Ok((gtid, Some(current.binlog)))
        }
    }
}

/// Opens the binlog stream at `resume` on a new connection, after checking that the server
/// still has what follows it.
pub(crate) async fn open_stream(
    settings: &CaptureSettings,
    lookup: &mut Conn,
    flavour: SourceFlavour,
    resume: &Resume,
) -> Result<BinlogStream, CaptureError> {
    let mut conn = Conn::new(settings.source.clone()).await?;
    conn.query_drop(format!(
        "SET @master_heartbeat_period = {}",
        HEARTBEAT.as_nanos()
    ))
    .await?;
    if flavour == SourceFlavour::MariaDb {
        // GTID events in both modes, so a file/position session tracks the GTID position too.
        conn.query_drop("SET @mariadb_slave_capability = 4").await?;
    }
    let request = BinlogStreamRequest::new(settings.replica_server_id);
    let stream = match resume {
        Resume::MariaDbGtid(position) => {
            // MariaDB refuses a purged position itself under @slave_gtid_strict_mode;
            // checking here too names the oldest binlog and does not depend on the mode.
            source::check_not_purged(lookup, position).await?;
            conn.exec_drop("SET @slave_connect_state = ?", (position.to_string(),))
                .await?;
            conn.query_drop("SET @slave_gtid_strict_mode = 1").await?;
            conn.get_binlog_stream(request).await
        }
        Resume::MySqlGtid(set) => {
            source::check_mysql_not_purged(lookup, set).await?;
            conn.get_binlog_stream(request.with_gtid().with_gtid_set(set.to_sids()?))
                .await
        }
        Resume::File(at) => {
            binlog_files::check_present(&binlog_files::list(lookup).await?, at)?;
            conn.get_binlog_stream(
                request
                    .with_filename(at.file.as_bytes())
                    .with_pos(at.offset),
            )
            .await
        }
    };
    stream.map_err(|e| resume.refused(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mariadb(text: &str) -> StreamPosition {
        StreamPosition::MariaDb(GtidPosition::parse(text).unwrap())
    }

    fn at(file: &str, offset: u64) -> BinlogFilePosition {
        BinlogFilePosition {
            file: file.into(),
            offset,
        }
    }

    #[test]
    fn the_configured_mode_is_used_when_the_checkpoint_has_its_key() {
        let binlog = at("mariadb-bin.000003", 1_234);
        let (resume, reason) =
            choose(ResumeBy::Gtid, true, &mariadb("0-1-5"), Some(&binlog)).unwrap();
        assert_eq!(
            resume,
            Resume::MariaDbGtid(GtidPosition::parse("0-1-5").unwrap())
        );
        assert_eq!(reason, None);
        let (resume, reason) = choose(
            ResumeBy::FilePosition,
            true,
            &mariadb("0-1-5"),
            Some(&binlog),
        )
        .unwrap();
        assert_eq!(resume, Resume::File(binlog));
        assert_eq!(resume.mode(), ResumeBy::FilePosition);
        assert_eq!(reason, None);
    }

    #[test]
    fn a_source_without_gtids_resumes_by_file_position_or_not_at_all() {
        let set = StreamPosition::MySql(MysqlGtidSet::default());
        let binlog = at("binlog.000002", 600);
        let (resume, reason) = choose(ResumeBy::Gtid, false, &set, Some(&binlog)).unwrap();
        assert_eq!(resume, Resume::File(binlog));
        assert!(reason.is_some_and(|r| r.contains("gtid_mode")));
        for mode in [ResumeBy::Gtid, ResumeBy::FilePosition] {
            let err = choose(mode, false, &set, None).unwrap_err();
            assert!(matches!(err, CaptureError::NoResumePoint { .. }), "{err}");
            assert!(err.to_string().contains("tributary seed"), "{err}");
        }
    }

    #[test]
    fn a_checkpoint_without_a_file_position_resumes_by_gtid_where_it_can() {
        let (resume, reason) =
            choose(ResumeBy::FilePosition, true, &mariadb("0-1-5"), None).unwrap();
        assert_eq!(
            resume,
            Resume::MariaDbGtid(GtidPosition::parse("0-1-5").unwrap())
        );
        assert!(reason.is_some_and(|r| r.contains("no binlog file/position yet")));
    }

    #[test]
    fn an_empty_gtid_position_never_rewinds_a_checkpoint_with_a_file_position() {
        // Written by a file/position capture on a server without GTIDs, or before the first
        // transaction end: an empty GTID position would mean "from the oldest binlog".
        let binlog = at("binlog.000007", 4_096);
        for empty in [mariadb(""), StreamPosition::MySql(MysqlGtidSet::default())] {
            let (resume, reason) = choose(ResumeBy::Gtid, true, &empty, Some(&binlog)).unwrap();
            assert_eq!(resume, Resume::File(binlog.clone()));
            assert!(reason.is_some());
        }
        // Without either key a new site starts from the oldest binlog, as it always did.
        let (resume, _) = choose(ResumeBy::Gtid, true, &mariadb(""), None).unwrap();
        assert_eq!(resume, Resume::MariaDbGtid(GtidPosition::default()));
    }

    #[test]
    fn start_points_are_described_by_their_key() {
        assert_eq!(
            Resume::File(at("mariadb-bin.000002", 4)).describe(),
            "binlog file/position 'mariadb-bin.000002:4'"
        );
        assert_eq!(
            Resume::MariaDbGtid(GtidPosition::parse("0-1-5").unwrap()).describe(),
            "GTID position '0-1-5'"
        );
    }

    #[test]
    fn checkpoint_positions_of_the_other_flavour_are_refused() {
        assert_eq!(
            stream_position("", SourceFlavour::MySql).unwrap(),
            StreamPosition::MySql(MysqlGtidSet::default())
        );
        assert!(stream_position("0-1-5", SourceFlavour::MySql).is_err());
        assert!(
            stream_position(
                "mysql-gtid:3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5",
                SourceFlavour::MariaDb
            )
            .is_err()
        );
    }
}
