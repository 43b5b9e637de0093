//! Capture errors, classified once: transient ones are retried by reconnecting from the last
//! checkpoint; fatal ones stop the agent with a message saying what the operator must do.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CaptureError {
    #[error("source database: {0}")]
    Database(#[from] mysql_async::Error),
    #[error(
        "source server setting {variable} is '{actual}' but capture needs '{required}'; \
         set it in the server configuration ({remedy}) and restart capture"
    )]
    ServerSetting {
        variable: &'static str,
        actual: String,
        required: &'static str,
        remedy: &'static str,
    },
    #[error(
        "the site database does not meet capture's requirements: {name} is {actual}; fix: \
         {fix} (run 'tributary doctor' to see every check)"
    )]
    Requirement {
        name: String,
        actual: String,
        fix: String,
    },
    #[error("binlog event {event} is malformed: {detail}")]
    MalformedEvent { event: &'static str, detail: String },
    #[error(
        "binlog event at position {log_pos} failed its CRC32 check (stored {stored:08x}, \
         computed {computed:08x}); the binlog or the connection corrupts data"
    )]
    Checksum {
        log_pos: u32,
        stored: u32,
        computed: u32,
    },
    #[error("'{0}' is not a MariaDB GTID position (expected domain-server-sequence[,...])")]
    BadGtidPosition(String),
    #[error(
        "'{text}' is not a MySQL GTID set ({detail}); expected uuid:1-5[:7-9][:tag:1-3][,uuid:...] \
         as @@gtid_executed shows it"
    )]
    BadMysqlGtidSet { text: String, detail: String },
    #[error(
        "'{text}' is not a source position ({detail}); expected 'mariadb-gtid:0-1-5[,...]', \
         'mysql-gtid:<uuid:1-5,...>', 'file:<binlog file>:<offset>' or a bare MariaDB GTID position"
    )]
    BadSourcePosition { text: String, detail: String },
    #[error(
        "the compressed transaction at binlog position {log_pos} declares {declared} bytes \
         uncompressed, more than capture's limit of {limit}; raise the limit or set \
         binlog_transaction_compression=OFF on the source and re-seed this site"
    )]
    PayloadTooLarge {
        log_pos: u32,
        declared: u64,
        limit: u64,
    },
    #[error(
        "the source's answer to {statement} has no readable {column} column; is this a \
         MariaDB or MySQL server capture supports?"
    )]
    UnexpectedStatus { statement: String, column: String },
    #[error("rows event for table id {0} arrived without its table map")]
    MissingTableMap(u64),
    /// `position` says which key: `GTID position '0-1-5'`, `binlog file/position
    /// 'mariadb-bin.000003:1234'`.
    #[error(
        "the source no longer has the binlog for {position} ({detail}); \
         re-seed this site with 'tributary seed --restart-stream'"
    )]
    PositionPurged { position: String, detail: String },
    #[error(
        "capture cannot resume: {detail}; re-seed this site with 'tributary seed \
         --restart-stream'"
    )]
    NoResumePoint { detail: String },
    #[error("schema: {0}")]
    Schema(#[from] tributary_schema::SchemaError),
    #[error("batch: {0}")]
    Batch(#[from] tributary_batch::BatchError),
    #[error("site key: {0}")]
    Key(#[from] tributary_batch::KeyError),
    #[error("transport: {0}")]
    Transport(#[from] tributary_transport::TransportError),
    #[error("capture state {path}: {detail}")]
    State { path: String, detail: String },
    #[error(
        "capture state {path} is locked by another capture or seed process; stop it first \
         (only one process may write a site's stream)"
    )]
    Locked { path: String },
    #[error("the binlog stream ended (server closed the connection)")]
    StreamEnded,
    #[error("no binlog event for {0} s although heartbeats were requested")]
    Silent(u64),
    #[error(
        "an earlier batch could not be published, so later ones were not either; capture \
         starts again from its checkpoint"
    )]
    Stopped,
    #[error(
        "the outbox {dir} holds {used} bytes of batches, at its limit of {limit}: the transport \
         is not taking them (is the link down?). Capture waits and retries; nothing is lost while \
         the site keeps its binlogs. Restore the link, carry batches with 'tributary export', or \
         raise [site] outbox_limit_mb"
    )]
    OutboxFull { dir: String, used: u64, limit: u64 },
    #[error(
        "the disk holding the outbox {dir} has {free} bytes free, under the reserve of {reserve}: \
         capture waits and retries. Free space on that disk, or lower [site] disk_reserve_mb"
    )]
    DiskNearlyFull {
        dir: String,
        free: u64,
        reserve: u64,
    },
}

impl CaptureError {
    /// The outbox or its disk has no room for the next batch: capture waits for the transport
    /// (or an operator) to make room, then resumes from the checkpoint.
    pub fn is_waiting_for_space(&self) -> bool {
        matches!(
            self,
            CaptureError::OutboxFull { .. } | CaptureError::DiskNearlyFull { .. }
        )
    }

    /// Transient errors are retried from the last checkpoint after a backoff; all others
    /// stop capture.
    pub fn is_transient(&self) -> bool {
        match self {
            CaptureError::Database(e) => {
                !matches!(e, mysql_async::Error::Server(s) if s.code == 1236)
            }
            CaptureError::StreamEnded
            | CaptureError::Silent(_)
            | CaptureError::Stopped
            | CaptureError::OutboxFull { .. }
            | CaptureError::DiskNearlyFull { .. } => true,
            CaptureError::Transport(e) => e.is_transient(),
            _ => false,
        }
    }
}
