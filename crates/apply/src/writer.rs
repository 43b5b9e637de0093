//! Writing one row change into HQ: resolve its references, find its HQ row by identity, and
//! insert, update or delete it with HQ-local ids.
//!
//! Inserts and updates are upserts by identity: a row HQ already has (a re-sent or seeded row,
//! or one whose insert happened before capture started) is updated to the travelling image,
//! which makes re-delivery harmless. Columns the schema map excludes never travel, so they keep
//! HQ's value on update and take the column default on insert.

use crate::resolver::Resolver;
use mysql_async::prelude::*;
use mysql_async::{Transaction, Value as Sql};
use std::collections::BTreeMap;
use tributary_model::{Op, RowChange, RowRef, Value};
use tributary_schema::{IdentityRule, SchemaMap, TableMap, quote_ident};

/// Prefix capture gives identities it could not resolve at the source.
const MISSING_AT_SOURCE: &str = "missing-at-source:";

/// Whether a row can be written now.
pub enum Resolution {
    /// Every reference resolved: the column values to write, ids already HQ-local.
    Ready(ResolvedRow),
    /// Some referenced rows are not at HQ yet: park until they arrive.
    Waiting(Vec<RowRef>),
    /// The row cannot be written by waiting (unknown table or column at HQ, a reference the
    /// source could not resolve): park with this reason for an operator.
    Blocked(String),
}

/// A row ready to be written.
pub struct ResolvedRow {
    pub values: BTreeMap<String, Sql>,
    /// Columns that refer to the row itself (a user who created their own account) while the
    /// row is not at HQ yet: filled in with the row's new id right after it is inserted.
    pub self_references: Vec<String>,
}

pub async fn resolve_row(
    tx: &mut Transaction<'_>,
    schema: &SchemaMap,
    resolver: &mut Resolver,
    change: &RowChange,
) -> mysql_async::Result<Resolution> {
    let Some(map) = schema.table(&change.table) else {
        return Ok(Resolution::Blocked(format!(
            "table `{}` is not a synced table at HQ (missing, or excluded by the schema map)",
            change.table
        )));
    };
    // A delete needs only what finds the row; its other columns and references (the rows it
    // referred to may be long gone at the site) do not matter.
    let key_columns = locator_columns(map);
    let needed = |column: &str| change.op != Op::Delete || key_columns.iter().any(|k| k == column);
    if let Some(column) = change
        .columns
        .keys()
        .filter(|c| needed(c))
        .find(|c| map.column(c).is_none())
    {
        return Ok(Resolution::Blocked(format!(
            "HQ table `{}` has no column `{column}`; upgrade HQ's schema",
            change.table
        )));
    }
    let mut values = BTreeMap::new();
    let mut waiting = Vec::new();
    let mut self_references = Vec::new();
    let own = change.row_ref();
    for (column, value) in change.columns.iter().filter(|(c, _)| needed(c)) {
        let sql = match value {
            Value::Ref(target) if target.identity.as_str().starts_with(MISSING_AT_SOURCE) => {
                return Ok(Resolution::Blocked(format!(
                    "column `{column}` refers to a `{}` row the site no longer had when it was captured",
                    target.table
                )));
            }
            Value::Ref(target) => match resolver.resolve(tx, schema, target).await? {
                Some(id) => Sql::Int(id),
                // What identifies the row is not at HQ, so neither is the row: nothing to delete.
                None if change.op == Op::Delete => continue,
                None if *target == own => {
                    self_references.push(column.to_string());
                    continue;
                }
                None => {
                    waiting.push(target.clone());
                    continue;
                }
            },
            other => to_sql(other),
        };
        values.insert(column.to_string(), sql);
    }
    if waiting.is_empty() {
        Ok(Resolution::Ready(ResolvedRow {
            values,
            self_references,
        }))
    } else {
        waiting.sort();
        waiting.dedup();
        Ok(Resolution::Waiting(waiting))
    }
}

/// Writes a resolved row, remembering the HQ id a new row received.
pub async fn write_row(
    tx: &mut Transaction<'_>,
    schema: &SchemaMap,
    resolver: &mut Resolver,
    change: &RowChange,
    row: ResolvedRow,
) -> mysql_async::Result<()> {
    let Some(map) = schema.table(&change.table) else {
        return Ok(());
    };
    let ResolvedRow {
        values,
        self_references,
    } = row;
    // A new row whose uuid HQ keeps unique is inserted straight away: one round trip
    // instead of a lookup and an insert. When HQ has the row already (shared metadata, a
    // re-sent row), the database refuses the duplicate and the row is found and updated.
    if change.op == Op::Insert && map.identity_is_unique && self_references.is_empty() {
        match insert(tx, map, &values).await {
            Ok(id) => {
                remember_new_id(map, resolver, change, id);
                return Ok(());
            }
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(e),
        }
    }
    let existing = locate(tx, map, change, &values).await?;
    let table = quote_ident(&map.name);
    match (change.op, existing) {
        (Op::Delete, None) => {}
        (Op::Delete, Some(locator)) => {
            let (clause, params) = locator.where_clause();
            tx.exec_drop(format!("DELETE FROM {table} WHERE {clause}"), params)
                .await?;
            resolver.forget(&change.row_ref());
        }
        (Op::Insert | Op::Update, Some(locator)) => {
            let (clause, mut params) = locator.where_clause();
            if values.is_empty() {
                return Ok(());
            }
            let assignments: Vec<String> = values
                .keys()
                .map(|c| format!("{} = ?", quote_ident(c)))
                .collect();
            let mut all: Vec<Sql> = values.into_values().collect();
            all.append(&mut params);
            tx.exec_drop(
                format!(
                    "UPDATE {table} SET {} WHERE {clause}",
                    assignments.join(", ")
                ),
                all,
            )
            .await?;
        }
        (Op::Insert | Op::Update, None) if self_references.is_empty() => {
            let id = insert(tx, map, &values).await?;
            remember_new_id(map, resolver, change, id);
        }
        (Op::Insert | Op::Update, None) => {
            // Several statements make one row here: a savepoint keeps a refused row from
            // leaving half of itself behind.
            tx.query_drop("SAVEPOINT tributary_row").await?;
            let written = insert_referring_to_itself(tx, map, values, &self_references).await;
            if written.is_err() {
                tx.query_drop("ROLLBACK TO SAVEPOINT tributary_row").await?;
            }
            remember_new_id(map, resolver, change, written?);
        }
    }
    Ok(())
}

/// Whether the server refused a statement for a duplicate unique key (ER_DUP_ENTRY).
fn is_duplicate_key(error: &mysql_async::Error) -> bool {
    const ER_DUP_ENTRY: u16 = 1062;
    matches!(error, mysql_async::Error::Server(e) if e.code == ER_DUP_ENTRY)
}

/// Inserts a row; returns the id HQ gave it, for tables with an auto-increment key.
async fn insert(
    tx: &mut Transaction<'_>,
    map: &TableMap,
    values: &BTreeMap<String, Sql>,
) -> mysql_async::Result<Option<u64>> {
    let columns: Vec<String> = values.keys().map(|c| quote_ident(c)).collect();
    let marks = vec!["?"; columns.len()].join(", ");
    tx.exec_drop(
        format!(
            "INSERT INTO {} ({}) VALUES ({marks})",
            quote_ident(&map.name),
            columns.join(", ")
        ),
        values.values().cloned().collect::<Vec<_>>(),
    )
    .await?;
    Ok(tx.last_insert_id().filter(|id| *id > 0))
}

/// Inserts a row whose `self_references` columns must hold its own new id: inserted with NULL
/// there, then updated. A NOT NULL self-reference cannot be NULL for that instant, so only
/// then are FK checks paused, for the insert alone, and switched back on before anything else.
async fn insert_referring_to_itself(
    tx: &mut Transaction<'_>,
    map: &TableMap,
    mut values: BTreeMap<String, Sql>,
    self_references: &[String],
) -> mysql_async::Result<Option<u64>> {
    let Some(key) = &map.surrogate_key else {
        return insert(tx, map, &values).await;
    };
    let mut pause_fk_checks = false;
    for column in self_references {
        let nullable = map.column(column).is_none_or(|c| c.nullable);
        pause_fk_checks |= !nullable;
        values.insert(
            column.clone(),
            if nullable { Sql::NULL } else { Sql::Int(0) },
        );
    }
    if pause_fk_checks {
        tx.query_drop("SET SESSION foreign_key_checks = 0").await?;
    }
    let inserted = insert(tx, map, &values).await;
    if pause_fk_checks {
        tx.query_drop("SET SESSION foreign_key_checks = 1").await?;
    }
    let Some(id) = inserted? else {
        return Ok(None);
    };
    let assignments: Vec<String> = self_references
        .iter()
        .map(|c| format!("{} = ?", quote_ident(c)))
        .collect();
    let mut params = vec![Sql::UInt(id); self_references.len()];
    params.push(Sql::UInt(id));
    tx.exec_drop(
        format!(
            "UPDATE {} SET {} WHERE {} = ?",
            quote_ident(&map.name),
            assignments.join(", "),
            quote_ident(key)
        ),
        params,
    )
    .await?;
    Ok(Some(id))
}

fn remember_new_id(map: &TableMap, resolver: &mut Resolver, change: &RowChange, id: Option<u64>) {
    if map.surrogate_key.is_some()
        && let Some(id) = id.and_then(|id| i64::try_from(id).ok())
    {
        resolver.remember(change.row_ref(), id);
    }
}

/// The columns that find a row at HQ (besides its uuid): the key of an inherited or
/// natural-key table.
fn locator_columns(map: &TableMap) -> Vec<String> {
    match &map.identity {
        IdentityRule::OwnUuid { column } => vec![column.clone()],
        IdentityRule::Inherited { .. } => map.primary_key.clone(),
        IdentityRule::Natural { columns } => columns.clone(),
    }
}

/// How an existing HQ row is addressed.
enum Locator {
    Key(String, Sql),
    Columns(Vec<(String, Sql)>),
}

impl Locator {
    fn where_clause(&self) -> (String, Vec<Sql>) {
        match self {
            Locator::Key(column, id) => (format!("{} = ?", quote_ident(column)), vec![id.clone()]),
            Locator::Columns(parts) => {
                let clause = parts
                    .iter()
                    .map(|(c, _)| format!("{} <=> ?", quote_ident(c)))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                (clause, parts.iter().map(|(_, v)| v.clone()).collect())
            }
        }
    }
}

/// Finds the HQ row with the change's identity.
async fn locate(
    tx: &mut Transaction<'_>,
    map: &TableMap,
    change: &RowChange,
    values: &BTreeMap<String, Sql>,
) -> mysql_async::Result<Option<Locator>> {
    let table = quote_ident(&map.name);
    match (&map.identity, &map.surrogate_key) {
        (IdentityRule::OwnUuid { column }, Some(key)) => {
            let id: Option<Sql> = tx
                .exec_first(
                    format!(
                        "SELECT {} FROM {table} WHERE {} = ?",
                        quote_ident(key),
                        quote_ident(column)
                    ),
                    (change.identity.as_str(),),
                )
                .await?;
            Ok(id.map(|id| Locator::Key(key.clone(), id)))
        }
        (IdentityRule::OwnUuid { column }, None) => {
            let found: Option<u8> = tx
                .exec_first(
                    format!("SELECT 1 FROM {table} WHERE {} = ?", quote_ident(column)),
                    (change.identity.as_str(),),
                )
                .await?;
            Ok(found.map(|_| Locator::Key(column.clone(), Sql::from(change.identity.as_str()))))
        }
        _ => {
            // Inherited and natural keys: the key columns themselves, already HQ-local.
            let columns = match &map.identity {
                IdentityRule::Natural { columns } => columns.clone(),
                _ => map.primary_key.clone(),
            };
            let mut parts = Vec::with_capacity(columns.len());
            for column in columns {
                let Some(value) = values.get(&column) else {
                    return Ok(None);
                };
                parts.push((column, value.clone()));
            }
            let locator = Locator::Columns(parts);
            let (clause, params) = locator.where_clause();
            let found: Option<u8> = tx
                .exec_first(
                    format!("SELECT 1 FROM {table} WHERE {clause} LIMIT 1"),
                    params,
                )
                .await?;
            Ok(found.map(|_| locator))
        }
    }
}

fn to_sql(value: &Value) -> Sql {
    match value {
        Value::Null => Sql::NULL,
        Value::Int(v) => Sql::Int(*v),
        Value::UInt(v) => Sql::UInt(*v),
        Value::Float(v) => Sql::Double(*v),
        Value::Text(s) => Sql::Bytes(s.as_bytes().to_vec()),
        Value::Bytes(b) => Sql::Bytes(b.clone()),
        // References are resolved before this is called.
        Value::Ref(_) => Sql::NULL,
    }
}
