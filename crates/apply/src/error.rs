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
            ApplyError::Database(mysql_async::Error::Server(e)) => {
                // Deadlock, lock wait timeout, server shutting down, too many connections.
                matches!(e.code, 1205 | 1213 | 1053 | 1040 | 2006 | 2013)
            }
            ApplyError::Database(_) => true,
            ApplyError::Transport(e) => e.is_transient(),
            _ => false,
        }
    }
}
