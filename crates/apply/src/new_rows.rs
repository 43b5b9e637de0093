//! New rows written together: a batch's inserts of rows HQ does not have yet are queued per
//! table and written as multi-row INSERTs, so a batch costs a statement per group of rows
//! rather than one per row.
//!
//! A queued row's references all resolved already, so its parents are at HQ; the queue is
//! written out before any row that refers to a queued row or changes one is resolved, which
//! keeps every foreign key satisfied and every entity's changes in order. HQ ids of the new
//! rows come from the statement: InnoDB gives the rows of one multi-row INSERT consecutive
//! auto-increment values (`innodb_autoinc_lock_mode` 0 or 1, checked at start; with mode 2
//! nothing is queued), spaced by `auto_increment_increment`.

use crate::locator::Locator;
use crate::writer::{ResolvedRow, Scope, remember_new_id};
use mysql_async::prelude::*;
use mysql_async::{Conn, Transaction, Value as Sql};
use std::collections::{BTreeMap, HashSet};
use tributary_model::{RowChange, RowRef};
use tributary_schema::{TableMap, quote_ident};

/// Rows per statement, largest first: a few statement shapes per table, so prepared
/// statements are reused (see [`STATEMENT_CACHE`]).
const CHUNK_ROWS: [usize; 4] = [64, 16, 4, 1];
/// Placeholders per statement stay under the protocol's 65,535.
const MAX_PLACEHOLDERS: usize = 60_000;
/// Rows queued before they are written anyway (bounded memory).
const MAX_QUEUED_ROWS: usize = 2_000;
/// Prepared statements the applier's connection keeps.
pub const STATEMENT_CACHE: usize = 512;

/// How HQ numbers the rows of a multi-row INSERT, read at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdNumbering {
    /// `auto_increment_increment`.
    pub step: u64,
}

impl IdNumbering {
    /// `Some` when HQ gives a multi-row INSERT consecutive ids.
    pub async fn of(conn: &mut Conn) -> mysql_async::Result<Option<IdNumbering>> {
        let row: Option<(u64, u64)> = conn
            .query_first("SELECT @@innodb_autoinc_lock_mode, @@auto_increment_increment")
            .await?;
        Ok(match row {
            Some((mode, step)) if mode <= 1 && step >= 1 => Some(IdNumbering { step }),
            _ => None,
        })
    }
}

struct Queued<'c> {
    change: &'c RowChange,
    row: ResolvedRow,
}

/// The rows of one table with the same columns.
struct Group<'c> {
    table: String,
    columns: Vec<String>,
    rows: Vec<Queued<'c>>,
}

/// A row the database refused as part of a group: to be written alone (and parked if refused
/// again), in the order it was queued.
pub struct Refused<'c> {
    pub change: &'c RowChange,
    pub row: ResolvedRow,
}

/// What writing the queue did.
#[derive(Default)]
pub struct Written<'c> {
    /// Rows written, in order.
    pub rows: Vec<&'c RowChange>,
    pub refused: Vec<Refused<'c>>,
}

/// The queue of one batch's new rows.
pub struct NewRows<'c> {
    numbering: Option<IdNumbering>,
    groups: BTreeMap<(String, String), Group<'c>>,
    entities: HashSet<RowRef>,
    queued: usize,
}

impl<'c> NewRows<'c> {
    pub fn new(numbering: Option<IdNumbering>) -> NewRows<'c> {
        NewRows {
            numbering,
            groups: BTreeMap::new(),
            entities: HashSet::new(),
            queued: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Whether `change` must wait for the queue to be written: it changes a queued row, or
    /// refers to one, or the queue is full.
    pub fn must_write_before(&self, change: &RowChange) -> bool {
        if self.queued == 0 {
            return false;
        }
        self.queued >= MAX_QUEUED_ROWS
            || self.entities.contains(&change.row_ref())
            || change
                .references()
                .any(|(_, target)| self.entities.contains(target))
    }

    /// Queues a new row when it can be written in a group: an insert of a row HQ keeps unique
    /// by uuid (a duplicate is refused, not doubled), not referring to itself. Otherwise gives
    /// the row back.
    pub fn offer(
        &mut self,
        map: &TableMap,
        change: &'c RowChange,
        row: ResolvedRow,
    ) -> Option<ResolvedRow> {
        let eligible = self.numbering.is_some()
            && change.op == tributary_model::Op::Insert
            && map.identity_is_unique
            && row.self_references.is_empty()
            && !row.values.is_empty();
        if !eligible {
            return Some(row);
        }
        let columns: Vec<String> = row.values.keys().cloned().collect();
        let key = (map.name.clone(), columns.join(","));
        self.entities.insert(change.row_ref());
        self.queued += 1;
        self.groups
            .entry(key)
            .or_insert_with(|| Group {
                table: map.name.clone(),
                columns,
                rows: Vec::new(),
            })
            .rows
            .push(Queued { change, row });
        None
    }

    /// Writes every queued row. A group the database refuses (a duplicate, a constraint)
    /// is rolled back by the statement and its rows are handed back to be written alone.
    pub async fn write(
        &mut self,
        tx: &mut Transaction<'_>,
        scope: &mut Scope<'_>,
        site_id: &str,
    ) -> mysql_async::Result<Written<'c>> {
        let mut written = Written::default();
        self.entities.clear();
        self.queued = 0;
        let Some(numbering) = self.numbering else {
            return Ok(written);
        };
        for (_, group) in std::mem::take(&mut self.groups) {
            let Some(map) = scope.schema.table(&group.table) else {
                continue;
            };
            let mut rows = group.rows;
            while !rows.is_empty() {
                let take = chunk_rows(rows.len(), group.columns.len());
                let chunk: Vec<Queued<'c>> = rows.drain(..take).collect();
                match insert_rows(tx, map, &group.columns, &chunk).await {
                    Ok(first_id) => {
                        for (i, queued) in chunk.into_iter().enumerate() {
                            let id = first_id.map(|first| first + i as u64 * numbering.step);
                            wrote(scope, site_id, map, &queued, id);
                            written.rows.push(queued.change);
                        }
                    }
                    Err(mysql_async::Error::Server(e))
                        if !crate::error::is_transient_server_code(e.code) =>
                    {
                        written.refused.extend(chunk.into_iter().map(|q| Refused {
                            change: q.change,
                            row: q.row,
                        }));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(written)
    }
}

/// How many of `left` rows the next statement takes.
fn chunk_rows(left: usize, columns: usize) -> usize {
    let fits = (MAX_PLACEHOLDERS / columns.max(1)).max(1);
    CHUNK_ROWS
        .into_iter()
        .find(|n| *n <= left && *n <= fits)
        .unwrap_or(1)
}

/// One multi-row INSERT; the first new id when the table has an auto-increment key.
async fn insert_rows(
    tx: &mut Transaction<'_>,
    map: &TableMap,
    columns: &[String],
    rows: &[Queued<'_>],
) -> mysql_async::Result<Option<u64>> {
    let row_marks = format!("({})", vec!["?"; columns.len()].join(", "));
    let sql = format!(
        "INSERT INTO {} ({}) VALUES {}",
        quote_ident(&map.name),
        columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", "),
        vec![row_marks; rows.len()].join(", ")
    );
    let params: Vec<Sql> = rows
        .iter()
        .flat_map(|q| q.row.values.values().cloned())
        .collect();
    tx.exec_drop(sql, params).await?;
    Ok(tx.last_insert_id().filter(|id| *id > 0))
}

/// Notes a row written by a group: its HQ id, and its state for later conflicts.
fn wrote(
    scope: &mut Scope<'_>,
    site_id: &str,
    map: &TableMap,
    queued: &Queued<'_>,
    id: Option<u64>,
) {
    remember_new_id(map, scope.resolver, queued.change, id);
    if let Some(locator) = Locator::of_written(map, queued.change, &queued.row.values) {
        scope.states.wrote(site_id, map, queued.change, locator);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_take_few_shapes_and_respect_the_placeholder_limit() {
        assert_eq!(chunk_rows(200, 30), 64);
        assert_eq!(chunk_rows(63, 30), 16);
        assert_eq!(chunk_rows(5, 30), 4);
        assert_eq!(chunk_rows(3, 30), 1);
        assert_eq!(
            chunk_rows(200, 2_000),
            16,
            "30 columns x 64 would pass 60,000"
        );
        assert_eq!(chunk_rows(200, 100_000), 1);
    }
}
