//! The source's binary log files: which ones the server still has (`SHOW BINARY LOGS`), where
//! it writes now (`SHOW MASTER STATUS`; `SHOW BINARY LOG STATUS` on MySQL 8.2+, where 8.4
//! removed the older statement), and whether a checkpoint's file/position is still there.
//!
//! Capture resuming by file/position starts a new capture state here and, before every
//! session, refuses a file/position whose binlog the server no longer has: streaming from a
//! purged file would either fail obscurely or, after a `RESET MASTER`, read another history.

use crate::error::CaptureError;
use crate::position::{BinlogFilePosition, SourceFlavour};
use mysql_async::prelude::*;
use mysql_async::{Conn, Row};

/// MySQL's `ER_PARSE_ERROR`: the server does not know the statement.
const ER_PARSE_ERROR: u16 = 1064;

/// One binary log file the server still has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BinlogFile {
    pub name: String,
    pub size: u64,
}

/// Where the server writes now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CurrentPosition {
    pub binlog: BinlogFilePosition,
    /// MySQL: `Executed_Gtid_Set` in the same row (consistent with `binlog`).
    pub executed_gtids: Option<String>,
}

/// The binary logs the server has, oldest first.
pub(crate) async fn list(conn: &mut Conn) -> Result<Vec<BinlogFile>, CaptureError> {
    let rows: Vec<Row> = conn.query("SHOW BINARY LOGS").await?;
    rows.iter()
        .map(|row| {
            Ok(BinlogFile {
                name: column(row, 0, "SHOW BINARY LOGS", "Log_name")?,
                size: column(row, 1, "SHOW BINARY LOGS", "File_size")?,
            })
        })
        .collect()
}

/// The server's current binlog file and position.
pub(crate) async fn current(
    conn: &mut Conn,
    flavour: SourceFlavour,
) -> Result<CurrentPosition, CaptureError> {
    let (statement, row): (&str, Option<Row>) = match flavour {
        SourceFlavour::MariaDb => (
            "SHOW MASTER STATUS",
            conn.query_first("SHOW MASTER STATUS").await?,
        ),
        SourceFlavour::MySql => match conn.query_first("SHOW BINARY LOG STATUS").await {
            Ok(row) => ("SHOW BINARY LOG STATUS", row),
            // Before 8.2 the statement is SHOW MASTER STATUS.
            Err(mysql_async::Error::Server(e)) if e.code == ER_PARSE_ERROR => (
                "SHOW MASTER STATUS",
                conn.query_first("SHOW MASTER STATUS").await?,
            ),
            Err(e) => return Err(e.into()),
        },
    };
    let Some(row) = row else {
        return Err(CaptureError::Requirement {
            name: "log_bin".into(),
            actual: format!("off ({statement} returns nothing)"),
            fix: "in the server configuration: [mysqld] log_bin = mysql-bin, then restart the \
                  server"
                .into(),
        });
    };
    let binlog = BinlogFilePosition {
        file: column(&row, 0, statement, "File")?,
        offset: column(&row, 1, statement, "Position")?,
    };
    let executed_gtids = match flavour {
        SourceFlavour::MariaDb => None,
        SourceFlavour::MySql => row.get_opt::<String, _>(4).and_then(Result::ok),
    };
    Ok(CurrentPosition {
        binlog,
        executed_gtids,
    })
}

/// The start of the oldest binary log the server has.
pub(crate) fn oldest(files: &[BinlogFile]) -> Option<BinlogFilePosition> {
    files.first().map(|f| BinlogFilePosition {
        file: f.name.clone(),
        offset: 4,
    })
}

/// MariaDB: the GTID position at a file/position (`BINLOG_GTID_POS`), in checkpoint form;
/// empty when the server cannot tell (no GTID before it).
pub(crate) async fn mariadb_gtid_at(
    conn: &mut Conn,
    at: &BinlogFilePosition,
) -> Result<String, CaptureError> {
    let position: Option<Option<String>> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (&at.file, at.offset))
        .await?;
    Ok(position.flatten().unwrap_or_default())
}

/// Fails, naming the file and the remedy, unless `at` lies in a binary log the server still
/// has.
pub(crate) fn check_present(
    files: &[BinlogFile],
    at: &BinlogFilePosition,
) -> Result<(), CaptureError> {
    let purged = |detail: String| CaptureError::PositionPurged {
        position: format!("binlog file/position '{at}'"),
        detail,
    };
    match files.iter().find(|f| f.name == at.file) {
        Some(file) if at.offset <= file.size => Ok(()),
        Some(file) => Err(purged(format!(
            "binlog file {} holds {} bytes, fewer than the checkpoint's offset {}: the \
             server's binary logs were reset or replaced",
            file.name, file.size, at.offset
        ))),
        None => Err(purged(match (files.first(), files.last()) {
            (Some(first), Some(last)) => format!(
                "binlog file {} is not among the server's binary logs ({} to {}): it was purged",
                at.file, first.name, last.name
            ),
            _ => format!(
                "binlog file {} is not there: the server lists no binary logs",
                at.file
            ),
        })),
    }
}

/// A column of a status row, read without panicking on an unexpected value.
fn column<T: FromValue>(
    row: &Row,
    index: usize,
    statement: &str,
    name: &str,
) -> Result<T, CaptureError> {
    match row.get_opt::<T, _>(index) {
        Some(Ok(value)) => Ok(value),
        _ => Err(CaptureError::UnexpectedStatus {
            statement: statement.to_owned(),
            column: name.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Vec<BinlogFile> {
        ["mariadb-bin.000004", "mariadb-bin.000005"]
            .into_iter()
            .zip([1_000_000, 9_000])
            .map(|(name, size)| BinlogFile {
                name: name.into(),
                size,
            })
            .collect()
    }

    fn at(file: &str, offset: u64) -> BinlogFilePosition {
        BinlogFilePosition {
            file: file.into(),
            offset,
        }
    }

    #[test]
    fn a_position_in_a_file_the_server_has_is_accepted() {
        assert!(check_present(&files(), &at("mariadb-bin.000004", 4)).is_ok());
        assert!(check_present(&files(), &at("mariadb-bin.000005", 9_000)).is_ok());
    }

    #[test]
    fn a_purged_file_is_refused_with_the_file_the_range_and_the_remedy() {
        let err = check_present(&files(), &at("mariadb-bin.000002", 1_234)).unwrap_err();
        assert!(matches!(err, CaptureError::PositionPurged { .. }));
        let text = err.to_string();
        for part in [
            "binlog file/position 'mariadb-bin.000002:1234'",
            "mariadb-bin.000002 is not among the server's binary logs (mariadb-bin.000004 to \
             mariadb-bin.000005)",
            "tributary seed",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        assert!(!err.is_transient(), "an operator must act");
        let none = check_present(&[], &at("mariadb-bin.000002", 4)).unwrap_err();
        assert!(none.to_string().contains("lists no binary logs"), "{none}");
    }

    #[test]
    fn an_offset_past_the_end_of_its_file_is_refused() {
        let err = check_present(&files(), &at("mariadb-bin.000005", 9_001))
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds 9000 bytes"), "{err}");
        assert!(err.contains("reset or replaced"), "{err}");
    }

    #[test]
    fn a_new_state_starting_at_the_oldest_binlog_starts_at_its_first_event() {
        assert_eq!(oldest(&files()), Some(at("mariadb-bin.000004", 4)));
        assert_eq!(oldest(&[]), None);
    }
}
