//! The consistent snapshot a seed reads from, and the exact binlog point it reflects.
//!
//! - MariaDB: `START TRANSACTION WITH CONSISTENT SNAPSHOT`, then the session's
//!   `binlog_snapshot_file/position` (the binlog point of that snapshot, with no lock at all),
//!   which `BINLOG_GTID_POS` turns into a GTID position.
//! - MySQL has no such status: the shortest lock that gives an exact point is taken instead.
//!   `FLUSH TABLES WITH READ LOCK` holds commits for the few milliseconds it takes to open the
//!   snapshot and read `SHOW BINARY LOG STATUS` (`SHOW MASTER STATUS` before 8.2); a short
//!   `lock_wait_timeout` keeps a long-running query at the clinic from making the lock queue
//!   the clinic's writes behind it (the seed fails and can be run again instead).
//!
//! `information_schema` is not versioned, so the catalog is read before and after the snapshot
//! opens; if DDL slipped in between, the snapshot is taken again.

use crate::binlog_files;
use crate::error::CaptureError;
use crate::mysql_gtid::MysqlGtidSet;
use crate::position::{BinlogFilePosition, SourceFlavour, StreamPosition};
use mysql_async::Conn;
use mysql_async::prelude::*;
use tributary_schema::Catalog;

/// Attempts at a snapshot whose catalog did not change while it was being taken.
const SNAPSHOT_ATTEMPTS: usize = 5;

/// Seconds MySQL's global read lock may wait for running statements before the seed gives up.
const MYSQL_LOCK_WAIT_SECONDS: u32 = 10;

/// An open snapshot transaction on the connection it was taken on.
pub(crate) struct Snapshot {
    pub catalog: Catalog,
    /// The snapshot's position in checkpoint form (GTID position or `mysql-gtid:` set).
    pub position: String,
    pub binlog: BinlogFilePosition,
}

/// Opens the consistent-snapshot transaction on `conn` and returns the catalog valid at it
/// with its positions. The transaction stays open until the caller commits it.
pub(crate) async fn open(
    conn: &mut Conn,
    database: &str,
    flavour: SourceFlavour,
) -> Result<Snapshot, CaptureError> {
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await?;
    for _ in 0..SNAPSHOT_ATTEMPTS {
        let before = Catalog::introspect(conn, database).await?;
        let (position, binlog) = match flavour {
            SourceFlavour::MariaDb => mariadb_snapshot(conn).await?,
            SourceFlavour::MySql => mysql_snapshot(conn).await?,
        };
        let after = Catalog::introspect(conn, database).await?;
        if serde_json::to_string(&before).ok() == serde_json::to_string(&after).ok() {
            return Ok(Snapshot {
                catalog: after,
                position,
                binlog,
            });
        }
        conn.query_drop("ROLLBACK").await?;
    }
    Err(CaptureError::State {
        path: format!("database `{database}`"),
        detail: "its schema kept changing while the snapshot was being taken; seed again when \
                 no upgrade is running"
            .into(),
    })
}

async fn mariadb_snapshot(conn: &mut Conn) -> Result<(String, BinlogFilePosition), CaptureError> {
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await?;
    let status: Vec<(String, String)> = conn.query("SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
    let find = |name: &str| {
        status
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let (Some(file), Some(offset)) = (
        find("binlog_snapshot_file"),
        find("binlog_snapshot_position"),
    ) else {
        return Err(CaptureError::ServerSetting {
            variable: "binlog_snapshot_file",
            actual: "missing".into(),
            required: "a MariaDB server with log_bin",
            remedy: "log_bin = <path>",
        });
    };
    let binlog = BinlogFilePosition {
        file,
        offset: parse_offset(
            &offset,
            "SHOW STATUS LIKE 'binlog_snapshot_%'",
            "binlog_snapshot_position",
        )?,
    };
    let gtid = binlog_files::mariadb_gtid_at(conn, &binlog).await?;
    Ok((gtid, binlog))
}

async fn mysql_snapshot(conn: &mut Conn) -> Result<(String, BinlogFilePosition), CaptureError> {
    conn.query_drop(format!(
        "SET SESSION lock_wait_timeout = {MYSQL_LOCK_WAIT_SECONDS}"
    ))
    .await?;
    conn.query_drop("FLUSH TABLES WITH READ LOCK").await?;
    let opened = async {
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await?;
        mysql_binlog_status(conn).await
    }
    .await;
    // Released whatever happened: the clinic's writes wait for nothing longer than this.
    let unlocked = conn.query_drop("UNLOCK TABLES").await;
    let position = opened?;
    unlocked?;
    Ok(position)
}

/// The binlog status of a MySQL server: `SHOW BINARY LOG STATUS` (8.2 and later) or
/// `SHOW MASTER STATUS`.
async fn mysql_binlog_status(
    conn: &mut Conn,
) -> Result<(String, BinlogFilePosition), CaptureError> {
    let mut statement = "SHOW BINARY LOG STATUS";
    let rows: Vec<mysql_async::Row> = match conn.query(statement).await {
        Ok(rows) => rows,
        Err(mysql_async::Error::Server(_)) => {
            statement = "SHOW MASTER STATUS";
            conn.query(statement).await?
        }
        Err(e) => return Err(e.into()),
    };
    let row = rows.first().ok_or(CaptureError::ServerSetting {
        variable: "log_bin",
        actual: "OFF".into(),
        required: "ON",
        remedy: "log_bin = <path> (and server_id) in the server's configuration",
    })?;
    let text = |column: &str| -> Result<String, CaptureError> {
        row.get_opt::<String, _>(column)
            .and_then(Result::ok)
            .ok_or_else(|| CaptureError::UnexpectedStatus {
                statement: statement.into(),
                column: column.into(),
            })
    };
    let binlog = BinlogFilePosition {
        file: text("File")?,
        offset: parse_offset(&text("Position")?, statement, "Position")?,
    };
    let executed = text("Executed_Gtid_Set").unwrap_or_default();
    let position = StreamPosition::MySql(MysqlGtidSet::parse(&executed)?).to_string();
    Ok((position, binlog))
}

fn parse_offset(text: &str, statement: &str, column: &str) -> Result<u64, CaptureError> {
    text.trim()
        .parse()
        .map_err(|_| CaptureError::UnexpectedStatus {
            statement: statement.into(),
            column: column.into(),
        })
}
