//! Applier errors, classified once.
//!
//! - transient: HQ unreachable, deadlock, lock wait timeout: the batch's HQ transaction rolled
//!   back, so it is retried from the start after a backoff (invariant 2 makes that safe);
//! - definite: the batch itself is bad (fails authentication, malformed, inconsistent with its
//!   file name): it is rejected, recorded, and never applied (invariant 6);
//! - fatal: configuration or HQ schema problems an operator must fix.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ApplyError {
    #[error("HQ database: {0}")]
    Database(#[from] mysql_async::Error),
    #[error("batch {file}: {reason}")]
    Rejected { file: String, reason: String },
    #[error("schema: {0}")]
    Schema(#[from] tributary_schema::SchemaError),
    #[error("transport: {0}")]
    Transport(#[from] tributary_transport::TransportError),
    #[error("keyring: {0}")]
    Key(#[from] tributary_batch::KeyError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("integration outbox: {0}")]
    Outbox(String),
    #[error(
        "HQ row {table}[{identity}] could not be written: {detail}; the batch is held until \
         this is fixed"
    )]
    Write {
        table: String,
        identity: String,
        detail: String,
    },
}

impl ApplyError {
    /// Transient errors leave the batch in place to be retried.
    pub fn is_transient(&self) -> bool {
        match self {
            ApplyError::Database(e) => is_transient_database_error(e),
            // HQ going away while its catalog is read (the periodic re-read of the schema).
            ApplyError::Schema(tributary_schema::SchemaError::Introspection { source, .. }) => {
                is_transient_database_error(source)
            }
            ApplyError::Transport(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// A connection problem, or a server error that says HQ is busy or going away.
fn is_transient_database_error(error: &mysql_async::Error) -> bool {
    match error {
        mysql_async::Error::Server(e) => is_transient_server_code(e.code),
        _ => true,
    }
}

/// Server errors that say "HQ is busy or going away", not "this row is wrong": deadlock, lock
/// wait timeout, shutdown, connection limits and aborts, interrupted or timed-out statements.
/// Every other server error while writing a row is that row's problem (it parks).
pub(crate) fn is_transient_server_code(code: u16) -> bool {
    matches!(
        code,
        1040 | 1053
            | 1152
            | 1156
            | 1158
            | 1159
            | 1160
            | 1161
            | 1205
            | 1213
            | 1317
            | 1927
            | 1969
            | 2006
            | 2013
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_schema::SchemaError;

    fn introspection(source: mysql_async::Error) -> ApplyError {
        ApplyError::Schema(SchemaError::Introspection {
            database: "openmrs".into(),
            source,
        })
    }

    #[test]
    fn hq_going_away_while_its_catalog_is_read_is_retried() {
        let broken_pipe = mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::from(
            std::io::ErrorKind::BrokenPipe,
        )));
        assert!(introspection(broken_pipe).is_transient());
        let denied = mysql_async::Error::Server(mysql_async::ServerError {
            code: 1142,
            message: "SELECT command denied".into(),
            state: "42000".into(),
        });
        assert!(!introspection(denied).is_transient());
        assert!(!ApplyError::Schema(SchemaError::EmptyDatabase("openmrs".into())).is_transient());
    }
}
