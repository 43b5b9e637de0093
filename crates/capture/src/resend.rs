//! Re-sending chosen rows: the site reads rows named by identity (typically the missing and
//! different rows `tributary verify --site` listed) and publishes them as snapshot batches,
//! exactly like a seed of those rows only.
//!
//! The rows take the next sequence numbers of the site's stream through the same publisher,
//! sealer and outbox as capture (so the state directory's lock keeps capture and a re-send
//! from writing the stream at the same time), and the checkpoint's stream position is left
//! alone. HQ applies them once, in sequence order, through its normal upsert by identity
//! (invariant 2); a re-sent row that refers to rows HQ lacks parks like any other.
//!
//! Rows are read as they are now, not from a consistent snapshot: a change the stream sends
//! later is applied after the re-sent row, in sequence order, so HQ still ends at the site's
//! state. A requested identity with no row at the site is reported back and sends nothing: in
//! particular no delete, because HQ keeps no record of which site wrote a row, and a row HQ
//! holds that this site lacks may be another site's or HQ's own.
//!
//! Rows are located with SQL that may match more than asked (case-insensitive uuids, natural
//! keys compared as text); every row read is annotated exactly as capture does and kept only
//! when its identity is one that was asked for. Memory is bounded by [`RESEND_CHUNK`]
//! identities at a time, plus the request itself.

use crate::annotate::annotate;
use crate::attribute_formats::AttributeFormats;
use crate::checkpoint::StateDir;
use crate::error::CaptureError;
use crate::identities::IdentityCache;
use crate::settings::CaptureSettings;
use crate::snapshot::{
    image_columns, refuse_inside_parts, snapshot_publisher, snapshot_transaction, to_images,
};
use crate::source;
use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value as Sql};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use tributary_batch::SiteKey;
use tributary_model::Identity;
use tributary_schema::{ColumnKind, IdentityRule, SchemaMap, TableMap, quote_ident};

/// Identities located per query (and rows per snapshot transaction at most this many).
pub const RESEND_CHUNK: usize = 500;

/// What a re-send did, per table in the order the tables were sent (dependency order).
#[derive(Debug, Clone, Default)]
pub struct ResendReport {
    pub tables: Vec<TableResend>,
    /// The first sequence number the re-sent rows took, and the next one after them.
    pub first_sequence: u64,
    pub next_sequence: u64,
}

#[derive(Debug, Clone, Default)]
pub struct TableResend {
    pub table: String,
    pub requested: u64,
    pub sent: u64,
    /// Requested identities with no row at the site (nothing was sent for them).
    pub not_at_site: Vec<Identity>,
}

/// Reads the rows of `requests` (table -> identities) at the site and publishes them as
/// snapshot batches. Fails before sending anything when a table is not synced.
pub async fn run_resend(
    settings: &CaptureSettings,
    requests: &BTreeMap<String, Vec<Identity>>,
) -> Result<ResendReport, CaptureError> {
    let state = StateDir::open(&settings.state_dir)?;
    let Some(checkpoint) = state.load()? else {
        return Err(CaptureError::State {
            path: settings.state_dir.display().to_string(),
            detail: "holds no checkpoint: this site has not been seeded or captured yet; run \
                     'tributary seed' (which sends every row) instead of resend"
                .into(),
        });
    };
    if checkpoint.seeding {
        return Err(CaptureError::State {
            path: settings.state_dir.display().to_string(),
            detail: "a first seed of this site was interrupted; run 'tributary seed' again \
                     (it sends every row) instead of resend"
                .into(),
        });
    }
    if checkpoint.site_id != settings.site_id {
        return Err(CaptureError::State {
            path: settings.state_dir.display().to_string(),
            detail: format!(
                "belongs to site '{}', not '{}'; use the site's own configuration",
                checkpoint.site_id, settings.site_id
            ),
        });
    }
    refuse_inside_parts(settings, Some(&checkpoint), "resend")?;
    let outbox = settings.open_outbox()?;
    let key = SiteKey::load(&settings.key_file)?;

    let mut conn = source::connect(&settings.source).await?;
    source::preflight(&mut conn, &settings.database).await?;
    let catalog = tributary_schema::Catalog::introspect(&mut conn, &settings.database).await?;
    let schema = SchemaMap::build(&catalog, &settings.policy)?;
    for table in requests.keys() {
        if schema.table(table).is_none() {
            return Err(CaptureError::State {
                path: format!("table `{table}`"),
                detail: "is not a synced table of the site database (excluded by the schema \
                         map, or it does not exist); nothing was sent"
                    .into(),
            });
        }
    }

    let first_sequence = checkpoint.next_sequence;
    let mut publisher = snapshot_publisher(settings, state, outbox, key, checkpoint)?;
    let position = publisher.checkpoint().gtid_position.clone();
    let mut cache = IdentityCache::new(settings.identity_cache_entries);
    let mut formats = AttributeFormats::default();
    let mut report = ResendReport {
        first_sequence,
        ..ResendReport::default()
    };
    // Parents before children, as a seed sends them, so fewer rows park at HQ.
    for table in schema.dependency_order() {
        let Some(identities) = requests.get(&table.name) else {
            continue;
        };
        let mut outcome = TableResend {
            table: table.name.clone(),
            ..TableResend::default()
        };
        let table_name: Arc<str> = Arc::from(table.name.as_str());
        let mut seen = HashSet::new();
        let unique: Vec<&Identity> = identities.iter().filter(|i| seen.insert(*i)).collect();
        outcome.requested = unique.len() as u64;
        for chunk in unique.chunks(RESEND_CHUNK) {
            let rows = locate(&mut conn, &settings.database, &schema, table, chunk).await?;
            let raw = snapshot_transaction(&table_name, to_images(&schema, table, rows));
            let mut txn = annotate(
                raw,
                &schema,
                &mut cache,
                &mut formats,
                &mut conn,
                &settings.database,
            )
            .await?;
            let wanted: HashSet<&Identity> = chunk.iter().copied().collect();
            let mut found = HashSet::new();
            txn.retain(|identity| wanted.contains(identity) && found.insert(identity.clone()));
            outcome.sent += txn.row_count() as u64;
            outcome.not_at_site.extend(
                chunk
                    .iter()
                    .filter(|i| !found.contains(**i))
                    .map(|i| (*i).clone()),
            );
            publisher.add(txn, position.clone())?;
        }
        report.tables.push(outcome);
    }
    publisher.flush()?;
    publisher.sync()?;
    report.next_sequence = publisher.checkpoint().next_sequence;
    Ok(report)
}

/// Reads the rows of `table` that may carry one of `identities` (a superset: the caller keeps
/// only rows whose computed identity was asked for).
async fn locate(
    conn: &mut Conn,
    database: &str,
    schema: &SchemaMap,
    table: &TableMap,
    identities: &[&Identity],
) -> Result<Vec<Row>, CaptureError> {
    let Some((condition, params)) = locator(schema, table, database, identities) else {
        return Ok(Vec::new());
    };
    let sql = format!(
        "SELECT {} FROM {}.{} WHERE {condition}",
        image_columns(table),
        quote_ident(database),
        quote_ident(&table.name)
    );
    Ok(conn.exec(sql, params).await?)
}

/// The WHERE condition that finds rows by identity, with its parameters; `None` when no
/// identity can match (a natural key that does not parse as one).
fn locator(
    schema: &SchemaMap,
    table: &TableMap,
    database: &str,
    identities: &[&Identity],
) -> Option<(String, Vec<Sql>)> {
    let marks = |n: usize| vec!["?"; n].join(", ");
    let texts = || -> Vec<Sql> {
        identities
            .iter()
            .map(|i| Sql::Bytes(i.as_str().as_bytes().to_vec()))
            .collect()
    };
    match &table.identity {
        IdentityRule::OwnUuid { column } => Some((
            format!("{} IN ({})", quote_ident(column), marks(identities.len())),
            texts(),
        )),
        IdentityRule::Inherited { .. } => {
            let source = table.identity_source.as_ref()?;
            let key = table.primary_key.first()?;
            Some((
                format!(
                    "{} IN (SELECT {} FROM {}.{} WHERE {} IN ({}))",
                    quote_ident(key),
                    quote_ident(&source.key_column),
                    quote_ident(database),
                    quote_ident(&source.root),
                    quote_ident(&source.uuid_column),
                    marks(identities.len())
                ),
                texts(),
            ))
        }
        IdentityRule::Natural { columns } => {
            let mut alternatives = Vec::new();
            let mut params = Vec::new();
            for identity in identities {
                let Ok(parts) = serde_json::from_str::<Vec<String>>(identity.as_str()) else {
                    continue;
                };
                if parts.len() != columns.len() {
                    continue;
                }
                let mut terms = Vec::new();
                for (column, part) in columns.iter().zip(parts) {
                    let name = quote_ident(column);
                    let source = table
                        .references
                        .get(column)
                        .and_then(|target| schema.table(target))
                        .and_then(|t| t.identity_source.as_ref());
                    match source {
                        _ if part.is_empty() => {
                            terms.push(format!("({name} IS NULL OR {name} = '')"))
                        }
                        Some(source) => {
                            terms.push(format!(
                                "{name} IN (SELECT {} FROM {}.{} WHERE {} = ?)",
                                quote_ident(&source.key_column),
                                quote_ident(database),
                                quote_ident(&source.root),
                                quote_ident(&source.uuid_column),
                            ));
                            params.push(Sql::Bytes(part.into_bytes()));
                        }
                        // Binary, float and other parts are not filtered in SQL: the identity
                        // check after annotation decides.
                        None if table
                            .column(column)
                            .is_some_and(|c| c.kind.is_integer() || c.kind == ColumnKind::Text) =>
                        {
                            terms.push(format!("{name} = ?"));
                            params.push(Sql::Bytes(part.into_bytes()));
                        }
                        None => {}
                    }
                }
                alternatives.push(if terms.is_empty() {
                    "TRUE".to_owned()
                } else {
                    format!("({})", terms.join(" AND "))
                });
            }
            if alternatives.is_empty() {
                return None;
            }
            Some((alternatives.join(" OR "), params))
        }
    }
}
