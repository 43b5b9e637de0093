//! The streaming loop: binlog events -> transactions -> annotated rows -> published batches.
//!
//! One session = one binlog connection from the checkpointed GTID position. Any transient
//! failure ends the session; the caller reconnects from the checkpoint, so what was not yet
//! published is simply read again (invariant 1).

use crate::annotate::annotate;
use crate::attribute_formats::AttributeFormats;
use crate::binlog::{ResumeInside, Step, TransactionAssembler};
use crate::checkpoint::PartialTransaction;
use crate::error::CaptureError;
use crate::identities::IdentityCache;
use crate::mysql_gtid::MysqlGtidSet;
use crate::position::{SourceFlavour, SourceGtid, StreamPosition};
use crate::publisher::Publisher;
use crate::schema_history::SchemaHistory;
use crate::settings::CaptureSettings;
use crate::source;
use futures_util::{FutureExt, StreamExt};
use mysql_async::prelude::*;
use mysql_async::{BinlogStreamRequest, Conn};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tributary_schema::{Catalog, SchemaMap};

/// Heartbeat period requested from the server; a silent stream is noticed after a few.
const HEARTBEAT: Duration = Duration::from_secs(1);
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
    let history = SchemaHistory::new(&settings.state_dir);
    let (mut schema_version, mut schema) =
        schema_at_checkpoint(&history, publisher, &mut lookup, settings).await?;
    let start = publisher.checkpoint().gtid_position.clone();
    let mut position = stream_position(&start, server.flavour)?;

    let mut conn = Conn::new(settings.source.clone()).await?;
    conn.query_drop(format!(
        "SET @master_heartbeat_period = {}",
        HEARTBEAT.as_nanos()
    ))
    .await?;
    let request = BinlogStreamRequest::new(settings.replica_server_id);
    let request = match &position {
        StreamPosition::MariaDb(gtid_position) => {
            // MariaDB refuses a purged position itself under @slave_gtid_strict_mode;
            // checking here too names the oldest binlog and does not depend on the mode.
            source::check_not_purged(&mut lookup, gtid_position).await?;
            conn.query_drop("SET @mariadb_slave_capability = 4").await?;
            conn.exec_drop("SET @slave_connect_state = ?", (start.as_str(),))
                .await?;
            conn.query_drop("SET @slave_gtid_strict_mode = 1").await?;
            request
        }
        StreamPosition::MySql(set) => {
            source::check_mysql_not_purged(&mut lookup, set).await?;
            request.with_gtid().with_gtid_set(set.to_sids()?)
        }
    };
    let mut stream = conn.get_binlog_stream(request).await?;
    tracing::info!(site = %settings.site_id, server = %server.version, position = %start, "streaming the binlog");

    let mut formats = AttributeFormats::default();
    let mut assembler =
        TransactionAssembler::new(&settings.database, settings.transaction_part_rows);
    assembler.resume_inside(resume_inside(publisher)?);
    let mut last_event = Instant::now();
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
                if last_event.elapsed() > SILENCE_LIMIT {
                    return Err(CaptureError::Silent(SILENCE_LIMIT.as_secs()));
                }
                continue;
            }
            Ok(Err(_panic)) => return Err(decoder_panicked()),
            Ok(Ok(None)) => return Err(CaptureError::StreamEnded),
            Ok(Ok(Some(Err(mysql_async::Error::Server(e))))) if e.code == 1236 => {
                return Err(CaptureError::PositionPurged {
                    position: position.to_string(),
                    detail: e.message,
                });
            }
            Ok(Ok(Some(Err(e)))) => return Err(e.into()),
            Ok(Ok(Some(Ok(event)))) => event,
        };
        last_event = Instant::now();
        let step = std::panic::catch_unwind(AssertUnwindSafe(|| {
            assembler.feed(&event, &stream, &schema)
        }))
        .map_err(|_| decoder_panicked())??;
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
        if let Some(gtid) = &raw.gtid {
            position.advance(gtid);
        }
        let txn = annotate(
            raw,
            &schema,
            cache,
            &mut formats,
            &mut lookup,
            &settings.database,
        )
        .await?;
        if !txn.rows.is_empty() && pending_since.is_none() {
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
        publisher.add(txn, position.to_string())?;
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
    let gtid = SourceGtid::parse(&partial.gtid)?;
    tracing::info!(gtid = %partial.gtid, rows = partial.rows, "resuming inside a transaction published in parts");
    Ok(Some(ResumeInside {
        gtid,
        rows: partial.rows,
        parts: partial.parts,
    }))
}

/// The checkpoint's position for this server. A new site (empty position) streams from the
/// oldest binlog in the server's own scheme; a position of the other flavour is refused.
fn stream_position(text: &str, flavour: SourceFlavour) -> Result<StreamPosition, CaptureError> {
    match (StreamPosition::parse(text)?, flavour) {
        (StreamPosition::MariaDb(position), SourceFlavour::MySql) if position.is_empty() => {
            Ok(StreamPosition::MySql(MysqlGtidSet::default()))
        }
        (position, flavour) if position.flavour() != flavour => {
            Err(CaptureError::BadSourcePosition {
                text: text.to_owned(),
                detail: format!(
                    "the checkpoint holds a {:?} position but the site database is {flavour:?}; \
                     point capture at the right server, or reset this site's capture state \
                     and re-seed it",
                    position.flavour()
                ),
            })
        }
        (position, _) => Ok(position),
    }
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
