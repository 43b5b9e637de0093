//! The streaming loop: binlog events -> transactions -> annotated rows -> published batches.
//!
//! One session = one binlog connection from the checkpoint (by GTID or by binlog
//! file/position, see `resume`). Any transient failure ends the session; the caller
//! reconnects from the checkpoint, so what was not yet published is simply read again
//! (invariant 1). Both checkpoint keys advance only at transaction ends (`position`).

use crate::annotate::annotate;
use crate::attribute_formats::AttributeFormats;
use crate::binlog::{ResumeInside, Step, TransactionAssembler};
use crate::checkpoint::PartialTransaction;
use crate::error::CaptureError;
use crate::identities::IdentityCache;
use crate::position::{SessionPosition, SourceGtid};
use crate::publisher::Publisher;
use crate::resume;
use crate::schema_history::SchemaHistory;
use crate::settings::CaptureSettings;
use crate::source;
use futures_util::{FutureExt, StreamExt};
use mysql_async::Conn;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tributary_schema::{Catalog, SchemaMap};

/// Without any event (heartbeats included) for this long, the stream is taken for dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(15);

pub(crate) async fn stream_session(
    settings: &CaptureSettings,
    publisher: &mut Publisher,
    cache: &mut IdentityCache,
    shutdown: &CancellationToken,
) -> Result<(), CaptureError> {
    publisher.resume()?;
    let mut lookup = source::connect(&settings.source).await?;
    let server = source::preflight(&mut lookup, &settings.database).await?;
    let openmrs = crate::health::openmrs_version(&mut lookup).await;
    publisher.set_source_versions(server.version.clone(), openmrs);
    let history = SchemaHistory::new(&settings.state_dir);
    let (mut schema_version, mut schema) =
        schema_at_checkpoint(&history, publisher, &mut lookup, settings).await?;
    let checkpoint = publisher.checkpoint();
    let gtid = resume::stream_position(&checkpoint.gtid_position, server.flavour)?;
    let binlog = checkpoint.binlog_position.clone();
    let (start, reason) = resume::choose(settings.resume_by, server.gtids, &gtid, binlog.as_ref())?;
    let mut stream = resume::open_stream(settings, &mut lookup, server.flavour, &start).await?;
    tracing::info!(
        site = %settings.site_id,
        server = %server.version,
        resume_by = start.mode().as_str(),
        reason = reason.unwrap_or("configured"),
        position = %gtid,
        binlog = %binlog.as_ref().map_or("(not known yet)".to_owned(), |b| b.to_string()),
        "streaming the binlog"
    );
    let mut position = SessionPosition::new(gtid, binlog);
    crate::health::session_started();

    let mut formats = AttributeFormats::default();
    let mut assembler =
        TransactionAssembler::new(&settings.database, settings.transaction_part_rows);
    assembler.resume_inside(resume_inside(publisher)?);
    // Since when the stream has been quiet: set by the first idle wait, cleared by any event
    // (so a busy stream reads no clock per event).
    let mut quiet_since: Option<Instant> = None;
    let mut pending_since: Option<Instant> = None;
    loop {
        if shutdown.is_cancelled() {
            publisher.flush()?;
            publisher.sync()?;
            return Ok(());
        }
        // mysql_common unwraps a short read inside its event reader: a truncated or malformed
        // packet panics there. It is caught and reported as a bad event. An event already
        // received is taken at once; only when none is, the wait is bounded by the flush
        // interval (and shutdown), so a busy stream pays for no timer per event.
        let ready = AssertUnwindSafe(stream.next())
            .catch_unwind()
            .now_or_never();
        let next = match ready {
            Some(next) => Ok(next),
            None => tokio::select! {
                _ = shutdown.cancelled() => continue,
                next = tokio::time::timeout(
                    settings.flush_interval,
                    AssertUnwindSafe(stream.next()).catch_unwind(),
                ) => next,
            },
        };
        let event = match next {
            Err(_idle) => {
                publisher.flush()?;
                publisher.keep_alive(settings.keepalive_interval)?;
                pending_since = None;
                // No event came during the whole wait that just ended.
                let since = *quiet_since.get_or_insert_with(|| {
                    let now = Instant::now();
                    now.checked_sub(settings.flush_interval).unwrap_or(now)
                });
                if since.elapsed() > SILENCE_LIMIT {
                    return Err(CaptureError::Silent(SILENCE_LIMIT.as_secs()));
                }
                continue;
            }
            Ok(Err(_panic)) => return Err(decoder_panicked()),
            Ok(Ok(None)) => return Err(CaptureError::StreamEnded),
            Ok(Ok(Some(Err(mysql_async::Error::Server(e))))) if e.code == 1236 => {
                return Err(CaptureError::PositionPurged {
                    position: start.describe(),
                    detail: e.message,
                });
            }
            Ok(Ok(Some(Err(e)))) => return Err(e.into()),
            Ok(Ok(Some(Ok(event)))) => event,
        };
        quiet_since = None;
        if event.header().event_type_raw() == HEARTBEAT_EVENT {
            crate::metrics::caught_up();
        }
        let step = std::panic::catch_unwind(AssertUnwindSafe(|| {
            assembler.feed(&event, &stream, &schema)
        }))
        .map_err(|_| decoder_panicked())??;
        position.observe(&event, assembler.inside_payload())?;
        let (raw, schema_changed) = match step {
            Step::Continue => continue,
            Step::Chunk { part, rows_so_far } => {
                let gtid = part
                    .gtid
                    .as_ref()
                    .map(|g| g.to_string())
                    .unwrap_or_default();
                let parts = part.part.map_or(0, |p| p.index + 1);
                let txn = annotate(
                    part,
                    &schema,
                    cache,
                    &mut formats,
                    &mut lookup,
                    &settings.database,
                )
                .await?;
                publisher.add_part(
                    txn,
                    PartialTransaction {
                        gtid,
                        rows: rows_so_far,
                        parts,
                    },
                )?;
                pending_since = None;
                continue;
            }
            Step::Committed(raw) => (raw, false),
            Step::SchemaChanged(raw) => (raw, true),
        };
        position.commit(&event, assembler.inside_payload(), raw.gtid.as_ref())?;
        crate::metrics::transaction_read(raw.committed_at, unix_now());
        let txn = annotate(
            raw,
            &schema,
            cache,
            &mut formats,
            &mut lookup,
            &settings.database,
        )
        .await?;
        if !txn.is_empty() && pending_since.is_none() {
            pending_since = Some(Instant::now());
        }
        let new_schema = if schema_changed {
            // The version valid after this transaction is durable before any checkpoint
            // past the transaction names it (adding the transaction may already flush).
            let catalog = Catalog::introspect(&mut lookup, &settings.database).await?;
            let map = SchemaMap::build(&catalog, &settings.policy)?;
            schema_version += 1;
            history.save(schema_version, &catalog)?;
            publisher.set_schema_version(schema_version);
            Some(map)
        } else {
            None
        };
        publisher.set_binlog_position(position.binlog().cloned());
        publisher.add(txn, position.gtid().to_string())?;
        if let Some(map) = new_schema {
            schema = map;
            assembler.schema_changed();
            publisher.flush()?;
            pending_since = None;
            // Older versions go only once a durable checkpoint names the new one.
            publisher.sync()?;
            history.prune(schema_version)?;
            tracing::info!(site = %settings.site_id, version = schema_version, "schema changed; schema map saved and reloaded");
        }
        if pending_since.is_some_and(|since| since.elapsed() >= settings.flush_interval) {
            publisher.flush()?;
            pending_since = None;
        }
    }
}

/// The binlog event a server sends while it has nothing newer (MariaDB and MySQL 5.7: 0x1b).
const HEARTBEAT_EVENT: u8 = 0x1b;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn decoder_panicked() -> CaptureError {
    CaptureError::MalformedEvent {
        event: "binlog packet",
        detail: "the event decoder failed on a truncated or malformed event; check the source \
                 server and the network, then restart capture (it resumes at the checkpoint)"
            .into(),
    }
}

/// Where to resume inside a chunked transaction, from the checkpoint.
fn resume_inside(publisher: &Publisher) -> Result<Option<ResumeInside>, CaptureError> {
    let Some(partial) = &publisher.checkpoint().partial else {
        return Ok(None);
    };
    // A source without GTIDs records none: the session starts right before the transaction.
    let gtid = match partial.gtid.as_str() {
        "" => None,
        text => Some(SourceGtid::parse(text)?),
    };
    tracing::info!(gtid = %partial.gtid, rows = partial.rows, "resuming inside a transaction published in parts");
    Ok(Some(ResumeInside {
        gtid,
        rows: partial.rows,
        parts: partial.parts,
    }))
}

/// The schema map valid at the checkpoint: the saved version it names, or (first start) the
/// catalog read now, saved as version 1.
async fn schema_at_checkpoint(
    history: &SchemaHistory,
    publisher: &mut Publisher,
    conn: &mut Conn,
    settings: &CaptureSettings,
) -> Result<(u64, SchemaMap), CaptureError> {
    let (version, catalog) = match publisher.checkpoint().schema_version {
        Some(version) => (version, history.load(version)?),
        None => {
            let catalog = Catalog::introspect(conn, &settings.database).await?;
            history.save(1, &catalog)?;
            publisher.set_schema_version(1);
            publisher.flush()?;
            (1, catalog)
        }
    };
    Ok((version, SchemaMap::build(&catalog, &settings.policy)?))
}
