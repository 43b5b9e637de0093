//! What capture and seed need to run, resolved and validated by the binary's configuration.

use crate::spool_budget::SpoolLimits;
use mysql_async::Opts;
use std::path::PathBuf;
use std::time::Duration;
use tributary_schema::Policy;
use tributary_transport::{DEFAULT_SEGMENT_BYTES, Outbox, SpoolFormat, open_outbox};

/// Rows per batch: large enough to amortise sealing and fsync, small enough that one batch
/// stays about a megabyte. Measured with the capture benchmark: 1,000 rows gave the best
/// throughput per MiB (2,000: same speed, +11 MiB peak; 5,000: slower and +50 MiB).
pub const DEFAULT_MAX_BATCH_ROWS: usize = 1_000;
/// How long committed rows may wait for more before their batch is published.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// Identity cache entries (about 120 bytes each with shared identities, so about 12 MiB): the
/// rows a clinic touched recently. Older references cost one batched lookup at the site; the
/// capture agent's memory budget is 64 MiB in all (measured by `benches/capture.rs`).
pub const DEFAULT_IDENTITY_CACHE_ENTRIES: usize = 100_000;
/// Synced rows of one source transaction held in memory before it is sent in parts (about
/// one batch).
pub const DEFAULT_TRANSACTION_PART_ROWS: usize = 1_000;
/// How often an idle capture sends an empty batch, so HQ can tell a quiet clinic from a
/// silent one (status shows when each site was last heard from).
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// Rows read per snapshot query.
pub const DEFAULT_SNAPSHOT_CHUNK_ROWS: usize = 2_000;

/// Where a site with no checkpoint starts streaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// At the server's current position: only changes from now on (older rows come by seed).
    Current,
    /// At the oldest binlog the server still has.
    Oldest,
}

/// Which checkpoint key a stream session resumes from (`[site] resume_by`; see `resume`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ResumeBy {
    /// By GTID where the source has usable GTIDs (MariaDB always, MySQL with
    /// `gtid_mode=ON`), otherwise by binlog file/position. The default: a GTID position
    /// survives binlog rotation and names transactions, not bytes.
    #[default]
    Gtid,
    /// Always by binlog file/position (`COM_BINLOG_DUMP` with file and offset).
    FilePosition,
}

impl ResumeBy {
    /// The configuration's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ResumeBy::Gtid => "gtid",
            ResumeBy::FilePosition => "file_position",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CaptureSettings {
    pub site_id: String,
    /// Connection to the site database (credentials included; never logged).
    pub source: Opts,
    pub database: String,
    /// The server id capture registers with; unique among the source's replicas.
    pub replica_server_id: u32,
    pub state_dir: PathBuf,
    pub outbox_dir: PathBuf,
    pub key_file: PathBuf,
    pub policy: Policy,
    pub max_batch_rows: usize,
    /// A source transaction with more synced rows travels in parts of about this size.
    pub transaction_part_rows: usize,
    pub flush_interval: Duration,
    pub keepalive_interval: Duration,
    /// How often batches carry the site's health report (an idle capture sends one in a
    /// keepalive batch).
    pub health_interval: Duration,
    pub identity_cache_entries: usize,
    pub snapshot_chunk_rows: usize,
    pub start: StartPosition,
    /// Which checkpoint key sessions resume from.
    pub resume_by: ResumeBy,
    /// How much the outbox may hold while the transport is behind.
    pub spool: SpoolLimits,
    /// How the outbox keeps batches: one file each in the transport directory the applier
    /// reads, or segment files that `tributary ship` or `tributary export` take them from.
    pub spool_format: SpoolFormat,
}

impl CaptureSettings {
    /// Opens the site's outbox in the configured format.
    pub(crate) fn open_outbox(&self) -> Result<Box<dyn Outbox>, crate::CaptureError> {
        Ok(open_outbox(
            self.spool_format,
            &self.outbox_dir,
            &self.site_id,
            segment_bytes(&self.spool),
        )?)
    }
}

/// Segments small enough that closed, delivered ones free space long before the cap: a
/// sixteenth of it, between 64 KiB and the transport's default.
fn segment_bytes(limits: &SpoolLimits) -> u64 {
    (limits.max_bytes / 16).clamp(64 << 10, DEFAULT_SEGMENT_BYTES)
}
