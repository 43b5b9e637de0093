//! The capture agent: tails a site's MariaDB binlog into sealed, sequenced batches, and seeds
//! a site's existing rows through the same batches.
//!
//! Module map: [`binlog`] frames events into transactions and decodes rows with the prepared
//! layouts of [`table_layout`] and the codecs of [`binlog_values`]; [`annotate`] turns
//! integer references into identities (with [`identities`] as its cache and lookup) and
//! writes each row's payload JSON into [`captured`] transactions;
//! [`publisher`] seals and publishes batches with the [`checkpoint`] protocol; [`stream`] is
//! the streaming loop, [`snapshot`] the seed, [`resend`] chosen rows again by identity;
//! [`source`] holds the connection and preflight.
//! Source flavours: [`gtid`] (MariaDB GTID positions and events), [`mysql_gtid`] (MySQL GTID
//! sets and events), [`position`] (checkpoint positions of either flavour, file/position
//! taken at commit events), [`transaction_payload`] (MySQL 8 compressed transactions).
//! [`resume`] decides whether a session resumes by GTID or by binlog file/position and opens
//! the stream there; [`binlog_files`] reads the server's binlog files (current position,
//! purged files). What is verified against which server: `docs/source-flavours.md`.
//!
//! Invariants kept here: the checkpoint advances only after the batch covering it is durable
//! (1); a sequence number always carries the same transactions (2); rows are grouped by source
//! transaction (4); the identity cache and every batch are bounded (8).

mod annotate;
mod attribute_formats;
mod binlog;
mod binlog_files;
mod binlog_values;
mod captured;
mod checkpoint;
mod consistent_snapshot;
#[cfg(test)]
mod decoder_equivalence_tests;
mod error;
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod event_fuzzing;
mod gtid;
mod health;
mod identities;
pub mod metrics;
mod mysql_gtid;
mod position;
mod publisher;
#[cfg(test)]
mod recorded_events;
mod requirements;
mod resend;
mod resume;
mod schema_history;
mod sealer;
mod seed_plan;
mod settings;
mod snapshot;
mod source;
mod spool_budget;
mod stream;
mod table_layout;
mod transaction_payload;

pub use checkpoint::{Checkpoint, SeedProgress, StateDir};
pub use error::CaptureError;
pub use gtid::{GtidPosition, parse_gtid_list};
pub use health::DEFAULT_HEALTH_INTERVAL;
pub use mysql_gtid::{
    GtidSource, MAX_GNO, MysqlGtid, MysqlGtidEventInfo, MysqlGtidSet, read_gtid_event,
    read_previous_gtids,
};
pub use position::{BinlogFilePosition, CommitPositions, SourceFlavour, SourcePosition};
pub use requirements::{Check, RECOMMENDED_RETENTION_DAYS, Verdict, check_server};
pub use resend::{RESEND_CHUNK, ResendReport, TableResend, run_resend};
pub use seed_plan::SeedOptions;
pub use settings::{
    CaptureSettings, DEFAULT_FLUSH_INTERVAL, DEFAULT_IDENTITY_CACHE_ENTRIES,
    DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_MAX_BATCH_ROWS, DEFAULT_SNAPSHOT_CHUNK_ROWS,
    DEFAULT_TRANSACTION_PART_ROWS, ResumeBy, StartPosition,
};
pub use snapshot::{SeedReport, SeedStatus, run_seed};
pub use source::connect;
pub use spool_budget::{DEFAULT_DISK_RESERVE_BYTES, DEFAULT_OUTBOX_LIMIT_BYTES, SpoolLimits};
pub use transaction_payload::{
    DEFAULT_PAYLOAD_LIMIT_BYTES, PayloadCompression, PayloadEvents, PayloadGuard, PayloadHeader,
};

use identities::IdentityCache;
use publisher::Publisher;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tributary_batch::SiteKey;

const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// While the outbox is full, capture checks for space this often (a local condition: the
/// transport frees space as it takes batches).
const RETRY_WHILE_FULL: Duration = Duration::from_secs(2);
const FULL_REMINDER: Duration = Duration::from_secs(600);

/// Runs capture until `shutdown` is cancelled (Ok) or a fatal error occurs. Transient errors
/// reconnect from the checkpoint with exponential backoff.
pub async fn run_capture(
    settings: CaptureSettings,
    shutdown: CancellationToken,
) -> Result<(), CaptureError> {
    let result = capture_until_stopped(settings, shutdown).await;
    if result.is_err() {
        metrics::capture_error(false);
    }
    result
}

async fn capture_until_stopped(
    settings: CaptureSettings,
    shutdown: CancellationToken,
) -> Result<(), CaptureError> {
    let state = StateDir::open(&settings.state_dir)?;
    let outbox = settings.open_outbox()?;
    let key = SiteKey::load(&settings.key_file)?;
    let checkpoint = match state.load()? {
        Some(c) if c.seeding => {
            return Err(CaptureError::State {
                path: state.path().display().to_string(),
                detail: "a seed of this site was interrupted; run 'tributary seed' again \
                         before starting capture"
                    .into(),
            });
        }
        Some(c) if c.site_id != settings.site_id => {
            return Err(CaptureError::State {
                path: state.path().display().to_string(),
                detail: format!(
                    "belongs to site '{}', not '{}'; use another state directory",
                    c.site_id, settings.site_id
                ),
            });
        }
        Some(c) => c,
        None => {
            let (position, binlog) = initial_position(&settings).await?;
            let mut checkpoint = Checkpoint::new(&settings.site_id, position);
            checkpoint.binlog_position = binlog;
            state.save(&checkpoint)?;
            tracing::info!(
                site = %settings.site_id,
                position = %checkpoint.gtid_position,
                binlog = %checkpoint.binlog_position.as_ref().map_or("(at the first transaction end)".to_owned(), |b| b.to_string()),
                "new capture state"
            );
            checkpoint
        }
    };
    let mut publisher = Publisher::open(
        state,
        outbox,
        key,
        checkpoint,
        settings.max_batch_rows,
        settings.spool,
    )?;
    publisher.report_health_every(settings.health_interval);
    let mut cache = IdentityCache::new(settings.identity_cache_entries);
    let mut backoff = RETRY_MIN;
    let mut full_since_logged: Option<std::time::Instant> = None;
    loop {
        let started = std::time::Instant::now();
        match stream::stream_session(&settings, &mut publisher, &mut cache, &shutdown).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_waiting_for_space() => {
                // Months offline: said once, then every FULL_REMINDER, not at every retry.
                if full_since_logged.is_none_or(|at| at.elapsed() >= FULL_REMINDER) {
                    tracing::warn!(site = %settings.site_id, error = %e, "capture is waiting for space in the outbox");
                    full_since_logged = Some(std::time::Instant::now());
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(RETRY_WHILE_FULL) => {}
                }
            }
            Err(e) if e.is_transient() => {
                metrics::capture_error(true);
                health::session_failed(&e, true);
                report_health(&mut publisher);
                if full_since_logged.take().is_some() {
                    tracing::info!(site = %settings.site_id, "the outbox has space again");
                }
                if started.elapsed() >= RETRY_MAX {
                    backoff = RETRY_MIN; // a long session: this is a new incident
                }
                tracing::warn!(site = %settings.site_id, error = %e, retry_in_ms = backoff.as_millis() as u64, "capture interrupted; resuming from the checkpoint");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RETRY_MAX);
            }
            Err(e) => {
                // Said to HQ before capture stops, so HQ shows why rather than silence.
                health::session_failed(&e, false);
                report_health(&mut publisher);
                return Err(e);
            }
        }
    }
}

/// Sends the health report at once; a failure to (the outbox itself failing) is only logged.
fn report_health(publisher: &mut Publisher) {
    if let Err(error) = publisher.report_health_now() {
        tracing::debug!(%error, "could not send the health report");
    }
}

/// Where a new capture state starts: its GTID position and, when it resumes by
/// file/position, its binlog file/position (see `resume::start_point`).
async fn initial_position(
    settings: &CaptureSettings,
) -> Result<(String, Option<BinlogFilePosition>), CaptureError> {
    let mut conn = source::connect(&settings.source).await?;
    let server = source::preflight(&mut conn, &settings.database).await?;
    resume::start_point(&mut conn, settings.start, settings.resume_by, &server).await
}
