//! `[site]`: the field site capture and seed serve.

use super::{Config, DatabaseSection};
use anyhow::{Context, Result, bail};
use mysql_async::Opts;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use tributary_capture::{
    CaptureSettings, DEFAULT_DISK_RESERVE_BYTES, DEFAULT_FLUSH_INTERVAL,
    DEFAULT_IDENTITY_CACHE_ENTRIES, DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_MAX_BATCH_ROWS,
    DEFAULT_OUTBOX_LIMIT_BYTES, DEFAULT_SNAPSHOT_CHUNK_ROWS, DEFAULT_TRANSACTION_PART_ROWS,
    ResumeBy, SpoolLimits, StartPosition,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSection {
    pub id: String,
    pub database: DatabaseSection,
    /// Server id capture registers with; must be unique among the source's replicas.
    pub replica_server_id: Option<u32>,
    /// Capture state (checkpoint, lock).
    pub state_dir: PathBuf,
    /// The site's key file (`tributary keys generate`).
    pub key_file: PathBuf,
    pub max_batch_rows: Option<usize>,
    /// Rows of one source transaction held in memory before it travels in parts.
    pub transaction_part_rows: Option<usize>,
    pub flush_interval_ms: Option<u64>,
    /// An idle capture sends an empty batch this often (default 60 000).
    pub keepalive_interval_ms: Option<u64>,
    /// Batches carry the site's health report (versions, lag, outbox, last error) this
    /// often; an idle capture sends a keepalive for it (default 60 000).
    pub health_interval_ms: Option<u64>,
    pub identity_cache_entries: Option<usize>,
    /// Rows a seed reads per query (and per durable step of an interrupted seed); default 2000.
    pub seed_chunk_rows: Option<usize>,
    /// The most the outbox may hold while the transport is behind (default 10240 MiB);
    /// capture waits at the limit, nothing is lost while the site keeps its binlogs.
    pub outbox_limit_mb: Option<u64>,
    /// Space to leave free on the outbox's disk (default 512 MiB).
    pub disk_reserve_mb: Option<u64>,
    /// `current` (default: stream from now; older rows come by `tributary seed`) or `oldest`.
    pub start_position: Option<String>,
    /// Which checkpoint key capture resumes from: `gtid` (default; by binlog file/position
    /// where the source has no GTIDs) or `file_position`.
    pub resume_by: Option<String>,
}

impl Config {
    pub fn site_id(&self) -> Result<String> {
        Ok(self.site()?.id.clone())
    }

    pub fn site_database(&self) -> Result<(Opts, String)> {
        self.database(&self.site()?.database, "site.database")
    }

    pub fn state_dir(&self) -> Result<PathBuf> {
        Ok(self.resolve(&self.site()?.state_dir))
    }

    /// Whether the file has a `[site]` section (`tributary status` then shows the capture
    /// checkpoint) and an `[hq]` section (status at HQ).
    pub fn has_site(&self) -> bool {
        self.site.is_some()
    }

    /// `[site] resume_by`.
    pub fn resume_by(&self) -> Result<ResumeBy> {
        match self.site()?.resume_by.as_deref() {
            None | Some("gtid") => Ok(ResumeBy::Gtid),
            Some("file_position") => Ok(ResumeBy::FilePosition),
            Some(other) => bail!(
                "site.resume_by in {} is '{other}'; use \"gtid\" (the default: by GTID, or by \
                 binlog file/position where the source has no GTIDs) or \"file_position\" \
                 (always by binlog file/position)",
                self.origin.display()
            ),
        }
    }

    pub fn capture_settings(&self) -> Result<CaptureSettings> {
        let site = self.site()?;
        tributary_batch::validate_site_id(&site.id).context("site.id")?;
        let (source, database) = self.site_database()?;
        let start = match site.start_position.as_deref() {
            None | Some("current") => StartPosition::Current,
            Some("oldest") => StartPosition::Oldest,
            Some(other) => bail!("site.start_position is '{other}'; use 'current' or 'oldest'"),
        };
        let resume_by = self.resume_by()?;
        Ok(CaptureSettings {
            site_id: site.id.clone(),
            source,
            database,
            replica_server_id: site
                .replica_server_id
                .unwrap_or_else(|| default_replica_id(&site.id)),
            state_dir: self.resolve(&site.state_dir),
            outbox_dir: self.transport_dir()?,
            key_file: self.resolve(&site.key_file),
            policy: self.policy()?,
            max_batch_rows: site.max_batch_rows.unwrap_or(DEFAULT_MAX_BATCH_ROWS),
            transaction_part_rows: site
                .transaction_part_rows
                .unwrap_or(DEFAULT_TRANSACTION_PART_ROWS),
            flush_interval: site
                .flush_interval_ms
                .map_or(DEFAULT_FLUSH_INTERVAL, Duration::from_millis),
            keepalive_interval: site
                .keepalive_interval_ms
                .map_or(DEFAULT_KEEPALIVE_INTERVAL, Duration::from_millis),
            health_interval: match site.health_interval_ms {
                Some(0) => bail!(
                    "site.health_interval_ms must be at least 1 (how often the site's health \
                     report reaches HQ; default 60000)"
                ),
                Some(ms) => Duration::from_millis(ms),
                None => tributary_capture::DEFAULT_HEALTH_INTERVAL,
            },
            identity_cache_entries: site
                .identity_cache_entries
                .unwrap_or(DEFAULT_IDENTITY_CACHE_ENTRIES),
            snapshot_chunk_rows: site
                .seed_chunk_rows
                .unwrap_or(DEFAULT_SNAPSHOT_CHUNK_ROWS)
                .max(1),
            start,
            resume_by,
            spool_format: self.spool_format(),
            spool: SpoolLimits {
                max_bytes: site
                    .outbox_limit_mb
                    .map_or(DEFAULT_OUTBOX_LIMIT_BYTES, |mb| mb.saturating_mul(1 << 20)),
                disk_reserve_bytes: site
                    .disk_reserve_mb
                    .map_or(DEFAULT_DISK_RESERVE_BYTES, |mb| mb.saturating_mul(1 << 20)),
            },
        })
    }
}

/// A replica server id derived from the site id, in a range MariaDB servers rarely use.
fn default_replica_id(site_id: &str) -> u32 {
    let hash = site_id.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    });
    0x5452_0000 | (hash & 0xffff)
}
