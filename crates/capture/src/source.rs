//! The site database: connections for the binlog stream and for lookups, and the preflight
//! check of the server settings capture depends on (DESIGN.md, "Source server requirements").

use crate::error::CaptureError;
use crate::gtid::GtidPosition;
use crate::mysql_gtid::MysqlGtidSet;
use crate::position::{SourceFlavour, StreamPosition};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder};

/// Opens a connection for queries (lookups, snapshot) in UTC, so TIMESTAMP values read by
/// query match the ones decoded from the binlog.
pub async fn connect(opts: &Opts) -> Result<Conn, CaptureError> {
    let opts = OptsBuilder::from_opts(opts.clone()).init(vec!["SET time_zone = '+00:00'"]);
    Ok(Conn::new(opts).await?)
}

/// What preflight learned about the server.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: String,
    pub flavour: SourceFlavour,
    /// The server has GTIDs capture can resume by: MariaDB always; MySQL when `gtid_mode` is
    /// `ON` (in the `*_PERMISSIVE` modes some transactions are anonymous).
    pub gtids: bool,
    /// The server's current position in checkpoint form (MariaDB `@@gtid_binlog_pos`, MySQL
    /// `mysql-gtid:` + `@@gtid_executed`).
    pub current_position: String,
}

/// Checks every server setting and privilege capture relies on (see [`crate::requirements`]);
/// the first one that is wrong is reported with its fix.
pub async fn preflight(conn: &mut Conn, database: &str) -> Result<ServerInfo, CaptureError> {
    let checks = crate::requirements::check_server(conn, database).await?;
    crate::requirements::first_failure(&checks)?;
    let version: Option<String> = conn.query_first("SELECT @@version").await?;
    let version = version.unwrap_or_default();
    let flavour = SourceFlavour::from_version(&version);
    let gtids = match flavour {
        SourceFlavour::MariaDb => true,
        SourceFlavour::MySql => conn
            .query_first::<String, _>("SELECT @@GLOBAL.gtid_mode")
            .await?
            .is_some_and(|mode| mode.eq_ignore_ascii_case("ON")),
    };
    let current_position = match flavour {
        SourceFlavour::MariaDb => conn
            .query_first::<String, _>("SELECT @@gtid_binlog_pos")
            .await?
            .unwrap_or_default(),
        SourceFlavour::MySql => {
            let executed: Option<String> = conn.query_first("SELECT @@gtid_executed").await?;
            StreamPosition::MySql(MysqlGtidSet::parse(&executed.unwrap_or_default())?).to_string()
        }
    };
    Ok(ServerInfo {
        version,
        flavour,
        gtids,
        current_position,
    })
}

/// MySQL: fails when transactions the checkpoint's set has not seen were purged
/// (`@@gtid_purged` must be included in what capture already has).
pub async fn check_mysql_not_purged(
    conn: &mut Conn,
    position: &MysqlGtidSet,
) -> Result<(), CaptureError> {
    if position.is_empty() {
        return Ok(());
    }
    let purged: Option<String> = conn.query_first("SELECT @@gtid_purged").await?;
    let purged = MysqlGtidSet::parse(&purged.unwrap_or_default())?;
    if position.includes(&purged) {
        return Ok(());
    }
    Err(CaptureError::PositionPurged {
        position: format!("GTID set '{position}'"),
        detail: format!("the server purged {purged}, which capture had not read"),
    })
}

/// Fails when the binlog that follows `position` is no longer on the server: its oldest binlog
/// begins after transactions the position has not seen. (MariaDB itself may start the stream
/// from the oldest file anyway, silently skipping what was purged.)
pub async fn check_not_purged(
    conn: &mut Conn,
    position: &GtidPosition,
) -> Result<(), CaptureError> {
    let files: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await?;
    let Some(oldest) = files.first().and_then(|r| r.get::<String, _>(0)) else {
        return Ok(());
    };
    let events: Vec<mysql_async::Row> = conn
        .query(format!(
            "SHOW BINLOG EVENTS IN '{}' LIMIT 4",
            oldest.replace(['\\', '\''], "")
        ))
        .await?;
    let earliest = events
        .iter()
        .filter(|e| {
            e.get::<String, _>(2)
                .is_some_and(|t| t.eq_ignore_ascii_case("Gtid_list"))
        })
        .find_map(|e| e.get::<String, _>(5))
        .map(|info| {
            info.trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        })
        .unwrap_or_default();
    let earliest = GtidPosition::parse(&earliest)?;
    let purged = position.purged_against(&earliest);
    if purged.is_empty() {
        return Ok(());
    }
    let first: Vec<String> = purged.iter().map(|g| g.to_string()).collect();
    Err(CaptureError::PositionPurged {
        position: format!("GTID position '{position}'"),
        detail: format!(
            "the oldest binlog, {oldest}, begins after {}",
            first.join(", ")
        ),
    })
}
