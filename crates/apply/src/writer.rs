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
    Ready(BTreeMap<String, Sql>),
    /// Some referenced rows are not at HQ yet: park until they arrive.
    Waiting(Vec<RowRef>),
    /// The row cannot be written by waiting (unknown table or column at HQ, a reference the
    /// source could not resolve): park with this reason for an operator.
    Blocked(String),
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
    if let Some(column) = change.columns.keys().find(|c| map.column(c).is_none()) {
        return Ok(Resolution::Blocked(format!(
            "HQ table `{}` has no column `{column}`; upgrade HQ's schema",
            change.table
        )));
    }
    let mut values = BTreeMap::new();
    let mut waiting = Vec::new();
    for (column, value) in &change.columns {
        let sql = match value {
            Value::Ref(target) if target.identity.as_str().starts_with(MISSING_AT_SOURCE) => {
                return Ok(Resolution::Blocked(format!(
                    "column `{column}` refers to a `{}` row the site no longer had when it was captured",
                    target.table
                )));
            }
            Value::Ref(target) => match resolver.resolve(tx, schema, target).await? {
                Some(id) => Sql::Int(id),
                None => {
                    waiting.push(target.clone());
                    continue;
                }
            },
            other => to_sql(other),
        };
        values.insert(column.clone(), sql);
    }
    if waiting.is_empty() {
        Ok(Resolution::Ready(values))
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
    values: BTreeMap<String, Sql>,
) -> mysql_async::Result<()> {
    let Some(map) = schema.table(&change.table) else {
        return Ok(());
    };
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
        (Op::Insert | Op::Update, None) => {
            let columns: Vec<String> = values.keys().map(|c| quote_ident(c)).collect();
            let marks = vec!["?"; columns.len()].join(", ");
            tx.exec_drop(
                format!(
                    "INSERT INTO {table} ({}) VALUES ({marks})",
                    columns.join(", ")
                ),
                values.into_values().collect::<Vec<_>>(),
            )
            .await?;
            if map.surrogate_key.is_some()
                && let Some(id) = tx.last_insert_id().and_then(|id| i64::try_from(id).ok())
            {
                resolver.remember(change.row_ref(), id);
            }
        }
    }
    Ok(())
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
