//! Seeding: a consistent snapshot of the site's synced tables, sent through the same batches
//! as the stream.
//!
//! The snapshot (`consistent_snapshot`) gives the exact binlog point it reflects; the
//! checkpoint of a new site records it under both keys, and the stream then starts exactly
//! there (by either key, see `resume`). The checkpoint carries `seeding` until every snapshot
//! row is durable, so an interrupted seed cannot leave a stream that skips the rows it had not
//! sent, and `seed` records how far the durable batches reach, so running the seed again goes
//! on from the last finished chunk (`seed_plan`). Seeding an existing site (a re-send of chosen
//! tables) keeps the stream position: later changes that the stream replays are applied after
//! the snapshot rows, in sequence order.
//!
//! Tables are read in dependency order, in keyset-paginated chunks, inside the snapshot
//! transaction, so memory stays bounded by the chunk size.
//!
//! `resend` (chosen rows by identity) shares the publisher, the reading of rows as images and
//! the snapshot transactions defined here.

use crate::annotate::annotate;
use crate::attribute_formats::AttributeFormats;
use crate::binlog::{RawImage, RawRow, RawTransaction, travelling_names};
use crate::checkpoint::{Checkpoint, StateDir};
use crate::consistent_snapshot;
use crate::error::CaptureError;
use crate::identities::IdentityCache;
use crate::publisher::Publisher;
use crate::schema_history::SchemaHistory;
use crate::seed_plan::{self, SeedOptions, SnapshotPoint};
use crate::settings::CaptureSettings;
use crate::source;
use crate::table_layout::{ColumnInfo, ColumnRole};
use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value as Sql};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tributary_batch::SiteKey;
use tributary_model::{ColumnNames, Op, Origin};
use tributary_schema::{ColumnKind, SchemaMap, TableMap, quote_ident};

#[derive(Debug, Clone, Default)]
pub struct SeedReport {
    pub tables: usize,
    /// Rows sent by this run.
    pub rows: u64,
    /// Rows an interrupted run had already sent (0 unless `resumed`).
    pub rows_before: u64,
    pub resumed: bool,
    /// The stream starts at this seed's snapshot (a new site, or `--restart-stream`).
    pub new_stream: bool,
    pub epoch: u64,
    pub snapshot_position: String,
    pub first_sequence: u64,
    pub next_sequence: u64,
}

/// Where a seed stands, for a progress display. Estimates come from the server's table
/// statistics (approximate).
#[derive(Debug, Clone, Copy)]
pub struct SeedStatus<'a> {
    pub table: &'a str,
    pub table_rows: u64,
    pub table_estimate: u64,
    /// Rows sent in all, including those an interrupted run had sent.
    pub rows: u64,
    pub estimate: u64,
    /// The table is sent whole.
    pub table_done: bool,
}

/// Seeds the chosen tables (all synced tables when none are chosen) and returns what was
/// sent; `progress` is called after every chunk. An interrupted seed goes on from its last
/// durable chunk (see `seed_plan`).
pub async fn run_seed(
    settings: &CaptureSettings,
    options: &SeedOptions,
    mut progress: impl FnMut(SeedStatus<'_>),
) -> Result<SeedReport, CaptureError> {
    let state = StateDir::open(&settings.state_dir)?;
    let outbox = settings.open_outbox()?;
    let key = SiteKey::load(&settings.key_file)?;
    let existing = state.load()?;
    if !options.restart_stream {
        refuse_inside_parts(settings, existing.as_ref(), "seed")?;
    }

    let mut conn = source::connect(&settings.source).await?;
    let server = source::preflight(&mut conn, &settings.database).await?;
    let snapshot = consistent_snapshot::open(&mut conn, &settings.database, server.flavour).await?;
    let schema = SchemaMap::build(&snapshot.catalog, &settings.policy)?;
    let ordered = select_tables(&schema, &options.tables)?;
    let history = SchemaHistory::new(&settings.state_dir);
    let saved_catalog = match existing.as_ref().and_then(|c| c.schema_version) {
        Some(version) if existing.as_ref().is_some_and(|c| c.seeding) => history.load(version).ok(),
        _ => None,
    };
    let start = seed_plan::plan(
        &settings.site_id,
        existing,
        options,
        &SnapshotPoint {
            position: &snapshot.position,
            binlog: &snapshot.binlog,
            catalog: &snapshot.catalog,
        },
        saved_catalog.as_ref(),
        ordered.iter().map(|t| t.name.clone()).collect(),
    )?;
    if start.new_stream
        && let Some(version) = start.checkpoint.schema_version
    {
        // The stream starts at the snapshot: the catalog read for it is the schema valid there.
        history.save(version, &snapshot.catalog)?;
    }
    let mut plan = start.progress;
    // Tables dropped since an interrupted seed recorded its list have nothing left to send.
    let tables: Vec<&TableMap> = plan
        .tables
        .iter()
        .map(|name| schema.table(name))
        .collect::<Option<Vec<_>>>()
        .unwrap_or_else(|| ordered.clone());
    if start.resumed {
        tracing::info!(
            table_index = plan.table_index,
            rows = plan.rows,
            "going on with an interrupted seed from its last durable chunk"
        );
    }
    state.save(&start.checkpoint)?;
    let mut report = SeedReport {
        tables: tables.len(),
        rows_before: plan.rows,
        resumed: start.resumed,
        new_stream: start.new_stream,
        epoch: start.checkpoint.epoch,
        snapshot_position: snapshot.position.clone(),
        first_sequence: start.checkpoint.next_sequence,
        ..SeedReport::default()
    };
    let mut publisher = snapshot_publisher(settings, state, outbox, key, start.checkpoint)?;
    let position = publisher.checkpoint().gtid_position.clone();
    let estimates = row_estimates(&mut conn, &settings.database).await?;
    let estimate: u64 = tables
        .iter()
        .map(|t| estimates.get(t.name.as_str()).copied().unwrap_or(0))
        .sum::<u64>()
        .max(plan.rows);

    let mut cache = IdentityCache::new(settings.identity_cache_entries);
    let mut formats = AttributeFormats::default();
    while let Some(table) = tables.get(plan.table_index) {
        let table_name: Arc<str> = Arc::from(table.name.as_str());
        let table_estimate = estimates.get(table.name.as_str()).copied().unwrap_or(0);
        let mut table_rows = 0;
        loop {
            let (rows, last_key) =
                read_chunk(&mut conn, settings, &schema, table, plan.after_key).await?;
            let count = rows.len() as u64;
            let table_done = count == 0 || last_key.is_none();
            if count > 0 {
                let txn = annotate(
                    snapshot_transaction(&table_name, rows),
                    &schema,
                    &mut cache,
                    &mut formats,
                    &mut conn,
                    &settings.database,
                )
                .await?;
                plan.rows += count;
                plan.after_key = last_key;
                if table_done {
                    plan.table_index += 1;
                    plan.after_key = None;
                }
                publisher.set_seed_progress(Some(plan.clone()));
                publisher.add(txn, position.clone())?;
                report.rows += count;
                table_rows += count;
            } else {
                plan.table_index += 1;
                plan.after_key = None;
                publisher.set_seed_progress(Some(plan.clone()));
            }
            crate::metrics::seed_progress(
                plan.rows,
                estimate.max(plan.rows),
                plan.table_index,
                plan.tables.len(),
            );
            progress(SeedStatus {
                table: &table.name,
                table_rows,
                table_estimate: table_estimate.max(table_rows),
                rows: plan.rows,
                estimate: estimate.max(plan.rows),
                table_done,
            });
            if table_done {
                break;
            }
        }
    }
    publisher.set_seed_progress(None);
    publisher.flush()?;
    publisher.sync()?;
    if publisher.checkpoint().seeding {
        publisher.update_checkpoint(|c| c.seeding = false)?;
    }
    conn.query_drop("COMMIT").await?;
    report.next_sequence = publisher.checkpoint().next_sequence;
    Ok(report)
}

/// Rows per table as the server's statistics estimate them (InnoDB: approximate).
async fn row_estimates(
    conn: &mut Conn,
    database: &str,
) -> Result<std::collections::HashMap<String, u64>, CaptureError> {
    let rows: Vec<(String, Option<u64>)> = conn
        .exec(
            "SELECT TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
            (database,),
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(name, rows)| (name, rows.unwrap_or(0)))
        .collect())
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
    let mut shape: Option<(Arc<[ColumnInfo]>, Option<ColumnNames>)> = None;
    for row in rows {
        let (columns, travelling) = shape.get_or_insert_with(|| {
            let columns: Arc<[ColumnInfo]> = row
                .columns_ref()
                .iter()
                .map(|c| {
                    let name = c.name_str();
                    ColumnInfo {
                        kind: table.column(&name).map_or(ColumnKind::Other, |c| c.kind),
                        role: ColumnRole::of(Some((schema, table)), &name),
                        name: name.as_ref().into(),
                    }
                })
                .collect();
            let travelling = travelling_names(&columns);
            (columns, travelling)
        });
        images.push(RawImage::shaped(
            Arc::clone(columns),
            travelling.clone(),
            row.unwrap(),
        ));
    }
    images
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
