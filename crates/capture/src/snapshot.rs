//! Seeding: a consistent snapshot of the site's synced tables, sent through the same batches
//! as the stream.
//!
//! The snapshot is taken without a global lock: `START TRANSACTION WITH CONSISTENT SNAPSHOT`
//! then `binlog_snapshot_file/position` give the exact binlog point it reflects, which
//! `BINLOG_GTID_POS` turns into a GTID position; the checkpoint of a new site records both
//! keys. For a new site the stream then starts exactly there (by either key, see `resume`); the checkpoint carries `seeding` until every snapshot row is durable, so an
//! interrupted seed cannot leave a stream that skips the rows it had not sent. Seeding an
//! existing site (a re-send of chosen tables) keeps the stream position: later changes that
//! the stream replays are applied after the snapshot rows, in sequence order.
//!
//! Tables are read in dependency order, in keyset-paginated chunks, inside the snapshot
//! transaction, so memory stays bounded by the chunk size.
//!
//! `resend` (chosen rows by identity) shares the publisher, the reading of rows as images and
//! the snapshot transactions defined here.

use crate::annotate::annotate;
use crate::attribute_formats::AttributeFormats;
use crate::binlog::{RawImage, RawRow, RawTransaction};
use crate::binlog_files;
use crate::checkpoint::{Checkpoint, StateDir};
use crate::error::CaptureError;
use crate::identities::IdentityCache;
use crate::position::BinlogFilePosition;
use crate::publisher::Publisher;
use crate::schema_history::SchemaHistory;
use crate::settings::CaptureSettings;
use crate::source;
use crate::table_layout::{ColumnInfo, ColumnRole};
use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value as Sql};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tributary_batch::SiteKey;
use tributary_model::{Op, Origin};
use tributary_schema::{Catalog, ColumnKind, SchemaMap, TableMap, quote_ident};

#[derive(Debug, Clone, Default)]
pub struct SeedReport {
    pub tables: usize,
    pub rows: u64,
    pub snapshot_position: String,
    pub first_sequence: u64,
    pub next_sequence: u64,
}

/// Seeds `tables` (all synced tables when empty) and returns what was sent.
pub async fn run_seed(
    settings: &CaptureSettings,
    tables: &[String],
    mut progress: impl FnMut(&str, u64),
) -> Result<SeedReport, CaptureError> {
    let state = StateDir::open(&settings.state_dir)?;
    let outbox = settings.open_outbox()?;
    let key = SiteKey::load(&settings.key_file)?;
    let existing = state.load()?;
    refuse_inside_parts(settings, existing.as_ref(), "seed")?;

    let mut conn = source::connect(&settings.source).await?;
    source::preflight(&mut conn, &settings.database).await?;
    let (catalog, (snapshot_position, snapshot_binlog)) =
        consistent_snapshot(&mut conn, &settings.database).await?;
    let schema = SchemaMap::build(&catalog, &settings.policy)?;
    let selected = select_tables(&schema, tables)?;

    let new_site = existing.as_ref().is_none_or(|c| c.seeding);
    let checkpoint = match existing {
        Some(c) if !c.seeding => c,
        Some(mut c) => {
            c.gtid_position = snapshot_position.clone();
            c.binlog_position = Some(snapshot_binlog);
            c
        }
        None => {
            let mut c = Checkpoint::new(&settings.site_id, snapshot_position.clone());
            c.binlog_position = Some(snapshot_binlog);
            c.seeding = true;
            c
        }
    };
    // The stream of a new site starts at the snapshot: the catalog read for it is the
    // schema version valid there.
    let mut checkpoint = checkpoint;
    if new_site {
        SchemaHistory::new(&settings.state_dir).save(1, &catalog)?;
        checkpoint.schema_version = Some(1);
    }
    state.save(&checkpoint)?;
    let first_sequence = checkpoint.next_sequence;
    let mut publisher = snapshot_publisher(settings, state, outbox, key, checkpoint)?;
    let position = publisher.checkpoint().gtid_position.clone();

    let mut cache = IdentityCache::new(settings.identity_cache_entries);
    let mut formats = AttributeFormats::default();
    let mut report = SeedReport {
        tables: selected.len(),
        snapshot_position,
        first_sequence,
        ..SeedReport::default()
    };
    for table in selected {
        let table_name: Arc<str> = Arc::from(table.name.as_str());
        let mut after_key: Option<i64> = None;
        loop {
            let (rows, last_key) =
                read_chunk(&mut conn, settings, &schema, table, after_key).await?;
            if rows.is_empty() {
                break;
            }
            let count = rows.len() as u64;
            let txn = annotate(
                snapshot_transaction(&table_name, rows),
                &schema,
                &mut cache,
                &mut formats,
                &mut conn,
                &settings.database,
            )
            .await?;
            publisher.add(txn, position.clone())?;
            report.rows += count;
            progress(&table.name, report.rows);
            match last_key {
                Some(key) => after_key = Some(key),
                None => break,
            }
        }
    }
    publisher.flush()?;
    publisher.sync()?;
    if new_site {
        publisher.update_checkpoint(|c| c.seeding = false)?;
    }
    conn.query_drop("COMMIT").await?;
    report.next_sequence = publisher.checkpoint().next_sequence;
    Ok(report)
}

/// Refuses a seed or re-send while capture has stopped inside a source transaction it was
/// sending in parts: snapshot rows must not take sequence numbers between its parts.
pub(crate) fn refuse_inside_parts(
    settings: &CaptureSettings,
    checkpoint: Option<&Checkpoint>,
    command: &str,
) -> Result<(), CaptureError> {
    if checkpoint.is_some_and(|c| c.partial.is_some()) {
        return Err(CaptureError::State {
            path: settings.state_dir.display().to_string(),
            detail: format!(
                "capture stopped inside a large source transaction it had begun to send in \
                 parts; run capture until that transaction is complete (status shows the \
                 checkpoint moving on), then {command}"
            ),
        });
    }
    Ok(())
}

/// The publisher of snapshot rows (seed, re-send): the next sequence numbers of the site's
/// stream, batches marked `snapshot`.
pub(crate) fn snapshot_publisher(
    settings: &CaptureSettings,
    state: StateDir,
    outbox: Box<dyn tributary_transport::Outbox>,
    key: SiteKey,
    checkpoint: Checkpoint,
) -> Result<Publisher, CaptureError> {
    let mut publisher = Publisher::open(
        state,
        outbox,
        key,
        checkpoint,
        settings.max_batch_rows,
        settings.spool,
    )?;
    publisher.set_origin(Origin::Snapshot)?;
    Ok(publisher)
}

/// Rows read from the site as they are now, as one snapshot transaction of inserts (applied
/// at HQ as upserts by identity).
pub(crate) fn snapshot_transaction(table: &Arc<str>, images: Vec<RawImage>) -> RawTransaction {
    RawTransaction {
        committed_at: now_unix(),
        rows: images
            .into_iter()
            .map(|image| RawRow {
                table: Arc::clone(table),
                op: Op::Insert,
                before: None,
                after: Some(image),
            })
            .collect(),
        ..RawTransaction::default()
    }
}

fn select_tables<'s>(
    schema: &'s SchemaMap,
    wanted: &[String],
) -> Result<Vec<&'s TableMap>, CaptureError> {
    for name in wanted {
        if schema.table(name).is_none() {
            return Err(CaptureError::State {
                path: format!("table `{name}`"),
                detail: "is not a synced table of the site database (excluded by the schema map, \
                         or it does not exist)"
                    .into(),
            });
        }
    }
    Ok(schema
        .dependency_order()
        .into_iter()
        .filter(|t| wanted.is_empty() || wanted.iter().any(|w| w == &t.name))
        .collect())
}

/// Attempts at a snapshot whose catalog did not change while it was being taken.
const SNAPSHOT_ATTEMPTS: usize = 5;

/// Opens the consistent-snapshot transaction and returns the catalog valid at it with its GTID
/// position and binlog file/position. `information_schema` is not versioned, so the catalog is read before and after
/// the snapshot starts; if DDL slipped in between, the snapshot is taken again.
async fn consistent_snapshot(
    conn: &mut Conn,
    database: &str,
) -> Result<(Catalog, (String, BinlogFilePosition)), CaptureError> {
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await?;
    for _ in 0..SNAPSHOT_ATTEMPTS {
        let before = Catalog::introspect(conn, database).await?;
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            .await?;
        let position = snapshot_position(conn).await?;
        let after = Catalog::introspect(conn, database).await?;
        if serde_json::to_string(&before).ok() == serde_json::to_string(&after).ok() {
            return Ok((after, position));
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

async fn snapshot_position(conn: &mut Conn) -> Result<(String, BinlogFilePosition), CaptureError> {
    let status: Vec<(String, String)> = conn.query("SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
    let find = |name: &str| {
        status
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let (Some(file), Some(pos)) = (
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
        offset: pos
            .trim()
            .parse()
            .map_err(|_| CaptureError::UnexpectedStatus {
                statement: "SHOW STATUS LIKE 'binlog_snapshot_%'".into(),
                column: "binlog_snapshot_position".into(),
            })?,
    };
    let gtid = binlog_files::mariadb_gtid_at(conn, &binlog).await?;
    Ok((gtid, binlog))
}

/// Reads one chunk of `table`; returns the rows and the key to continue after (None when the
/// table is read whole in one go because it has no single integer key).
async fn read_chunk(
    conn: &mut Conn,
    settings: &CaptureSettings,
    schema: &SchemaMap,
    table: &TableMap,
    after_key: Option<i64>,
) -> Result<(Vec<RawImage>, Option<i64>), CaptureError> {
    let columns = image_columns(table);
    let from = format!(
        "{}.{}",
        quote_ident(&settings.database),
        quote_ident(&table.name)
    );
    let key = match table.primary_key.as_slice() {
        [key] if table.column(key).is_some_and(|c| c.kind.is_integer()) => Some(key.clone()),
        _ => None,
    };
    let rows: Vec<Row> = match &key {
        Some(key) => {
            let sql = format!(
                "SELECT {columns} FROM {from} WHERE {k} > ? ORDER BY {k} LIMIT {}",
                settings.snapshot_chunk_rows.max(1),
                k = quote_ident(key),
            );
            conn.exec(sql, (after_key.unwrap_or(i64::MIN),)).await?
        }
        None => {
            conn.exec(format!("SELECT {columns} FROM {from}"), ())
                .await?
        }
    };
    let images = to_images(schema, table, rows);
    let last_key = key.as_ref().and_then(|key| {
        images.last()?.get(key).and_then(|v| match v {
            Sql::Int(i) => Some(*i),
            Sql::UInt(u) => i64::try_from(*u).ok(),
            _ => None,
        })
    });
    Ok((images, last_key))
}

/// The select list of a table's images: its synced columns in name order (images list their
/// columns sorted by name, see RawImage).
pub(crate) fn image_columns(table: &TableMap) -> String {
    let mut names: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    let columns: Vec<String> = names.iter().map(|name| quote_ident(name)).collect();
    columns.join(", ")
}

/// Query rows selected with [`image_columns`] as raw images, ready for `annotate`.
pub(crate) fn to_images(schema: &SchemaMap, table: &TableMap, rows: Vec<Row>) -> Vec<RawImage> {
    let mut images = Vec::with_capacity(rows.len());
    // Every row of one query has the same columns: name them once.
    let mut columns: Option<Arc<[ColumnInfo]>> = None;
    for row in rows {
        let columns = columns.get_or_insert_with(|| {
            row.columns_ref()
                .iter()
                .map(|c| {
                    let name = c.name_str();
                    ColumnInfo {
                        kind: table.column(&name).map_or(ColumnKind::Other, |c| c.kind),
                        role: ColumnRole::of(Some((schema, table)), &name),
                        name: name.as_ref().into(),
                    }
                })
                .collect()
        });
        images.push(RawImage::new(Arc::clone(columns), row.unwrap()));
    }
    images
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
