//! Finding a row at HQ by its identity: its uuid, or the HQ-local key columns of an inherited
//! or natural-key table (already translated to HQ ids).

use crate::writer::SqlRow;
use mysql_async::prelude::*;
use mysql_async::{Transaction, Value as Sql};
use tributary_model::{RowChange, Value};
use tributary_schema::{IdentityRule, TableMap, quote_ident};

/// The columns that find a row at HQ (besides its uuid): the key of an inherited or
/// natural-key table.
pub fn locator_columns(map: &TableMap) -> Vec<String> {
    match &map.identity {
        IdentityRule::OwnUuid { column } => vec![column.clone()],
        IdentityRule::Inherited { .. } => map.primary_key.clone(),
        IdentityRule::Natural { columns } => columns.clone(),
    }
}

/// How an existing HQ row is addressed.
#[derive(Debug, Clone)]
pub enum Locator {
    Key(String, Sql),
    Columns(Vec<(String, Sql)>),
}

impl Locator {
    pub fn where_clause(&self) -> (String, Vec<Sql>) {
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

    /// The one column and its value, when the row is found by a single non-NULL value (a
    /// primary key, an inherited key, a one-column natural key).
    pub fn single_value(&self) -> Option<(&str, &Sql)> {
        match self {
            Locator::Key(column, value) => Some((column, value)),
            Locator::Columns(parts) => match parts.as_slice() {
                [(column, value)] if *value != Sql::NULL => Some((column, value)),
                _ => None,
            },
        }
    }

    /// Where a row just written with `values` is, without asking HQ: the `id` HQ gave it,
    /// else its uuid as it travelled, or its key columns. `None` when none is known.
    pub fn of_written(
        map: &TableMap,
        change: &RowChange,
        values: &SqlRow,
        id: Option<u64>,
    ) -> Option<Locator> {
        if let (Some(key), Some(id)) = (&map.surrogate_key, id) {
            return Some(Locator::Key(key.clone(), Sql::UInt(id)));
        }
        match &map.identity {
            IdentityRule::OwnUuid { column } => Some(Locator::Key(
                column.clone(),
                Sql::from(travelling_uuid(change, column)),
            )),
            _ => key_columns(map, values),
        }
    }
}

/// The uuid a row travelled with (HQ stores it as the site did), else its identity.
pub fn travelling_uuid<'a>(change: &'a RowChange, column: &str) -> &'a str {
    match change.columns.get(column) {
        Some(Value::Text(uuid)) => uuid,
        _ => change.identity.as_str(),
    }
}

/// Inherited and natural keys: the key columns themselves, already HQ-local.
fn key_columns(map: &TableMap, values: &SqlRow) -> Option<Locator> {
    let columns = match &map.identity {
        IdentityRule::Natural { columns } => columns,
        _ => &map.primary_key,
    };
    let mut parts = Vec::with_capacity(columns.len());
    for column in columns {
        parts.push((column.clone(), values.get(column.as_str())?.clone()));
    }
    Some(Locator::Columns(parts))
}

/// Finds the HQ row with the change's identity.
pub async fn locate(
    tx: &mut Transaction<'_>,
    map: &TableMap,
    change: &RowChange,
    values: &SqlRow,
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
            let Some(locator) = key_columns(map, values) else {
                return Ok(None);
            };
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
