//! New rows written together: a batch's inserts of rows HQ does not have yet are queued per
//! table and written as multi-row INSERTs, so a batch costs a statement per group of rows
//! rather than one per row.
//!
//! A queued row's references resolve to rows HQ has, or to rows queued before it: those are
//! filled in when the queue is written, level by level (a row is written after every queued
//! row it refers to), which keeps every foreign key satisfied. The queue is written out before
//! any change to a queued row, any delete, and any row that refers to a queued row but cannot
//! be queued itself, so every entity's changes stay in order. HQ ids of the new
//! rows come from the statement: InnoDB gives the rows of one multi-row INSERT consecutive
//! auto-increment values (`innodb_autoinc_lock_mode` 0 or 1, checked at start; with mode 2
//! nothing is queued), spaced by `auto_increment_increment`.

use crate::locator::Locator;
use crate::writer::{ResolvedRow, Scope, SqlRow, remember_new_id};
use mysql_async::prelude::*;
use mysql_async::{Conn, Transaction, Value as Sql};
use rustc_hash::{FxHashMap, FxHashSet};
use tributary_model::{ColumnName, Op, RowChange, RowRef};
use tributary_schema::{IdentityRule, TableMap, quote_ident};

/// Rows per statement, largest first: a few statement shapes per table, so prepared
/// statements are reused (see [`STATEMENT_CACHE`]).
const CHUNK_ROWS: [usize; 5] = [256, 64, 16, 4, 1];
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

/// The rows of one table with the same columns, at one level: level 0 refers only to rows HQ
/// has; level n + 1 refers to a queued row of level n at most.
struct Group<'c> {
    level: usize,
    table: String,
    columns: Vec<ColumnName>,
    rows: Vec<Queued<'c>>,
}

impl Group<'_> {
    /// Whether a row of `table` at `level` with these values belongs here.
    fn takes(&self, level: usize, table: &str, values: &SqlRow) -> bool {
        self.level == level
            && self.table == table
            && self.columns.len() == values.len()
            && self.columns.iter().zip(values.keys()).all(|(a, b)| a == b)
    }
}

/// What writing the queue did.
#[derive(Default)]
pub struct Written<'c> {
    /// Rows written.
    pub rows: Vec<&'c RowChange>,
    /// Rows a group statement could not take (the database refused the group, or a row they
    /// refer to was refused): to be resolved and written alone, in this order.
    pub refused: Vec<&'c RowChange>,
}

/// The queue of one batch's new rows.
pub struct NewRows<'c> {
    numbering: Option<IdNumbering>,
    /// A batch has a few groups (tables times levels), so they are searched in turn, the one
    /// that took the last row first.
    groups: Vec<Group<'c>>,
    last_group: usize,
    entities: FxHashSet<RowRef>,
    levels: FxHashMap<RowRef, usize>,
    /// Tables with queued rows.
    tables: FxHashSet<String>,
}

impl<'c> NewRows<'c> {
    pub fn new(numbering: Option<IdNumbering>) -> NewRows<'c> {
        NewRows {
            numbering,
            groups: Vec::new(),
            last_group: 0,
            entities: FxHashSet::default(),
            levels: FxHashMap::default(),
            tables: FxHashSet::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// The rows queued (references to them are filled in when they are written).
    pub fn queued(&self) -> &FxHashSet<RowRef> {
        &self.entities
    }

    /// Whether `change` must wait for the queue to be written: it changes a queued row,
    /// deletes anything (a delete may remove a row a queued row refers to), refers to a queued
    /// row without being queueable itself, has a foreign key through a plain value (a string
    /// key) into a table with queued rows, or the queue is full.
    pub fn must_write_before(&self, map: Option<&TableMap>, change: &RowChange) -> bool {
        if self.entities.is_empty() {
            return false;
        }
        let refers_to_queued = || {
            change
                .references()
                .any(|(_, target)| self.entities.contains(target))
        };
        let plain_parent_queued = map.is_some_and(|map| {
            map.plain_key_parents
                .iter()
                .any(|parent| self.tables.contains(parent))
        });
        self.entities.len() >= MAX_QUEUED_ROWS
            || change.op == Op::Delete
            || self.entities.contains(&change.row_ref())
            || plain_parent_queued
            || (!map.is_some_and(|map| self.can_queue(map, change)) && refers_to_queued())
    }

    /// An insert of a row HQ keeps unique by its identity, so a duplicate is refused, not
    /// doubled: a uuid HQ keeps unique, or the primary key an inherited row shares with its
    /// root (patient -> person).
    fn can_queue(&self, map: &TableMap, change: &RowChange) -> bool {
        let unique = map.identity_is_unique
            || (matches!(map.identity, IdentityRule::Inherited { .. })
                && map.primary_key.len() == 1);
        // A user's login names are checked against HQ's other users first (`usernames`).
        self.numbering.is_some()
            && change.op == Op::Insert
            && unique
            && map.name != crate::usernames::USERS
    }

    /// Queues a new row when it can be written in a group (and does not refer to itself).
    /// Otherwise gives the row back.
    pub fn offer(
        &mut self,
        map: &TableMap,
        change: &'c RowChange,
        row: ResolvedRow,
    ) -> Option<ResolvedRow> {
        if !self.can_queue(map, change) || !row.self_references.is_empty() || row.values.is_empty()
        {
            return Some(row);
        }
        let level = row
            .deferred
            .iter()
            .filter_map(|(_, target)| self.levels.get(target))
            .map(|level| level + 1)
            .max()
            .unwrap_or(0);
        let entity = change.row_ref();
        self.entities.insert(entity.clone());
        self.levels.insert(entity, level);
        if !self.tables.contains(&map.name) {
            self.tables.insert(map.name.clone());
        }
        let group = match self.group_taking(level, &map.name, &row.values) {
            Some(i) => i,
            None => {
                self.groups.push(Group {
                    level,
                    table: map.name.clone(),
                    columns: row.values.keys().cloned().collect(),
                    rows: Vec::new(),
                });
                self.groups.len() - 1
            }
        };
        self.last_group = group;
        self.groups[group].rows.push(Queued { change, row });
        None
    }

    /// The group a new row joins, when there is one.
    fn group_taking(&self, level: usize, table: &str, values: &SqlRow) -> Option<usize> {
        let takes = |i: &usize| self.groups[*i].takes(level, table, values);
        std::iter::once(self.last_group)
            .filter(|i| *i < self.groups.len())
            .chain(0..self.groups.len())
            .find(takes)
    }

    /// Writes every queued row, level by level, filling in the ids of the rows written before.
    /// A group the database refuses (a duplicate, a constraint) is rolled back by the statement
    /// and its rows are handed back, with the rows that refer to them.
    pub async fn write(
        &mut self,
        tx: &mut Transaction<'_>,
        scope: &mut Scope<'_>,
        site_id: &str,
    ) -> mysql_async::Result<Written<'c>> {
        let mut written = Written::default();
        self.entities.clear();
        self.levels.clear();
        self.tables.clear();
        let mut groups = std::mem::take(&mut self.groups);
        self.last_group = 0;
        let Some(numbering) = self.numbering else {
            return Ok(written);
        };
        // Level by level; within a level in a fixed order (table, then columns).
        groups
            .sort_by(|a, b| (a.level, &a.table, &a.columns).cmp(&(b.level, &b.table, &b.columns)));
        for group in groups {
            let Some(map) = scope.schema.table(&group.table) else {
                written.refused.extend(group.rows.iter().map(|q| q.change));
                continue;
            };
            let mut ready = Vec::with_capacity(group.rows.len());
            for mut queued in group.rows {
                if fill_deferred(scope, &mut queued.row) {
                    ready.push(queued);
                } else {
                    written.refused.push(queued.change);
                }
            }
            while !ready.is_empty() {
                let take = chunk_rows(ready.len(), group.columns.len());
                let mut chunk: Vec<Queued<'c>> = ready.drain(..take).collect();
                let params = take_params(map, &mut chunk);
                match insert_rows(tx, map, &group.columns, params).await {
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
                        written.refused.extend(chunk.iter().map(|q| q.change));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(written)
    }
}

/// Fills in the HQ ids of the queued rows this row refers to; `false` when one of them was
/// not written.
fn fill_deferred(scope: &mut Scope<'_>, row: &mut ResolvedRow) -> bool {
    for (column, target) in std::mem::take(&mut row.deferred) {
        match scope.resolver.known(&target) {
            Some(id) => {
                row.values.insert(column, Sql::Int(id));
            }
            None => return false,
        }
    }
    true
}

/// How many of `left` rows the next statement takes.
fn chunk_rows(left: usize, columns: usize) -> usize {
    let fits = (MAX_PLACEHOLDERS / columns.max(1)).max(1);
    CHUNK_ROWS
        .into_iter()
        .find(|n| *n <= left && *n <= fits)
        .unwrap_or(1)
}

/// Moves the values of a chunk's rows into one list of statement parameters, row after row,
/// leaving each row only its key columns: what [`wrote`] reads once the rows are in. (A row
/// the statement refuses is resolved again from its change.)
fn take_params(map: &TableMap, chunk: &mut [Queued<'_>]) -> Vec<Sql> {
    let natural: &[String] = match &map.identity {
        IdentityRule::Natural { columns } => columns,
        _ => &[],
    };
    let is_key = |column: &str| {
        map.primary_key
            .iter()
            .chain(natural)
            .any(|key| key == column)
    };
    let mut params = Vec::with_capacity(chunk.iter().map(|q| q.row.values.len()).sum());
    for queued in chunk {
        let mut keys = SqlRow::new();
        for (column, value) in std::mem::take(&mut queued.row.values) {
            if is_key(&column) {
                keys.insert(column, value.clone());
            }
            params.push(value);
        }
        queued.row.values = keys;
    }
    params
}

/// One multi-row INSERT of `params.len() / columns.len()` rows; the first new id when the
/// table has an auto-increment key.
async fn insert_rows(
    tx: &mut Transaction<'_>,
    map: &TableMap,
    columns: &[ColumnName],
    params: Vec<Sql>,
) -> mysql_async::Result<Option<u64>> {
    let rows = params.len() / columns.len().max(1);
    // Placeholders without spaces: the client library scans the whole text of every statement.
    let row_marks = format!("({})", vec!["?"; columns.len()].join(","));
    let sql = format!(
        "INSERT INTO {} ({}) VALUES {}",
        quote_ident(&map.name),
        columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", "),
        vec![row_marks; rows].join(",")
    );
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
    // An inherited row's id is its root's, already in its key column.
    if let (IdentityRule::Inherited { .. }, [key]) = (&map.identity, map.primary_key.as_slice())
        && let Some(Sql::Int(id)) = queued.row.values.get(key.as_str())
    {
        scope.resolver.remember(queued.change.row_ref(), *id);
    }
    if let Some(locator) = Locator::of_written(map, queued.change, &queued.row.values, id) {
        scope.states.wrote(site_id, map, queued.change, locator);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tributary_model::{Columns, Identity, Value};
    use tributary_schema::{CatalogColumn, ColumnKind};

    fn map(name: &str, identity: IdentityRule, unique: bool) -> TableMap {
        TableMap {
            name: name.into(),
            columns: vec![CatalogColumn {
                name: "uuid".into(),
                kind: ColumnKind::Text,
                nullable: false,
                auto_increment: false,
                unsigned: false,
            }],
            excluded_columns: Vec::new(),
            ordinal_columns: Vec::new(),
            surrogate_key: Some(format!("{name}_id")),
            primary_key: vec![format!("{name}_id")],
            identity,
            identity_source: None,
            references: BTreeMap::new(),
            polymorphic: Vec::new(),
            identity_is_unique: unique,
            plain_key_parents: Vec::new(),
            row_filter: None,
        }
    }

    fn own_uuid(name: &str) -> TableMap {
        map(
            name,
            IdentityRule::OwnUuid {
                column: "uuid".into(),
            },
            true,
        )
    }

    fn change(table: &str, op: Op, uuid: &str, refs: &[(&str, &str, &str)]) -> RowChange {
        let mut columns = Columns::new();
        columns.insert("uuid".into(), Value::Text(uuid.into()));
        for (column, target, identity) in refs {
            columns.insert(
                (*column).into(),
                Value::Ref(RowRef::new(*target, Identity::from_uuid(identity))),
            );
        }
        RowChange {
            table: table.into(),
            op,
            identity: Identity::from_uuid(uuid),
            columns,
        }
    }

    fn resolved(deferred: &[(&str, &RowChange)]) -> ResolvedRow {
        let mut values: SqlRow = [(ColumnName::from("uuid"), Sql::from("u"))]
            .into_iter()
            .collect();
        for (column, _) in deferred {
            values.insert(ColumnName::from(*column), Sql::NULL);
        }
        ResolvedRow {
            values,
            self_references: Vec::new(),
            deferred: deferred
                .iter()
                .map(|(c, target)| (ColumnName::from(*c), target.row_ref()))
                .collect(),
            dropped_columns: Vec::new(),
        }
    }

    const STEP: Option<IdNumbering> = Some(IdNumbering { step: 1 });

    #[test]
    fn new_rows_queue_in_levels_behind_the_rows_they_refer_to() {
        let (person_map, encounter_map, obs_map) =
            (own_uuid("person"), own_uuid("encounter"), own_uuid("obs"));
        let person = change("person", Op::Insert, "p1", &[]);
        let encounter = change(
            "encounter",
            Op::Insert,
            "e1",
            &[("patient_id", "person", "p1")],
        );
        let obs = change(
            "obs",
            Op::Insert,
            "o1",
            &[("encounter_id", "encounter", "e1")],
        );
        let mut queue = NewRows::new(STEP);
        assert!(queue.offer(&person_map, &person, resolved(&[])).is_none());
        assert!(!queue.must_write_before(Some(&encounter_map), &encounter));
        assert!(
            queue
                .offer(
                    &encounter_map,
                    &encounter,
                    resolved(&[("patient_id", &person)])
                )
                .is_none()
        );
        assert!(!queue.must_write_before(Some(&obs_map), &obs));
        assert!(
            queue
                .offer(&obs_map, &obs, resolved(&[("encounter_id", &encounter)]))
                .is_none()
        );
        let levels: Vec<(usize, &str)> = queue
            .groups
            .iter()
            .map(|group| (group.level, group.table.as_str()))
            .collect();
        assert_eq!(levels, [(0, "person"), (1, "encounter"), (2, "obs")]);
    }

    #[test]
    fn changes_to_queued_rows_deletes_and_unqueueable_dependants_wait_for_the_queue() {
        let person_map = own_uuid("person");
        let person = change("person", Op::Insert, "p1", &[]);
        let mut queue = NewRows::new(STEP);
        let empty = change("person", Op::Delete, "p9", &[]);
        assert!(
            !queue.must_write_before(Some(&person_map), &empty),
            "nothing queued"
        );
        assert!(queue.offer(&person_map, &person, resolved(&[])).is_none());
        let update = change("person", Op::Update, "p1", &[]);
        assert!(queue.must_write_before(Some(&person_map), &update));
        assert!(
            queue.must_write_before(Some(&person_map), &empty),
            "any delete"
        );
        let name_update = change(
            "person_name",
            Op::Update,
            "n1",
            &[("person_id", "person", "p1")],
        );
        assert!(queue.must_write_before(Some(&own_uuid("person_name")), &name_update));
        let natural = map(
            "users_roles",
            IdentityRule::Natural { columns: vec![] },
            false,
        );
        let role = change(
            "users_roles",
            Op::Insert,
            "r1",
            &[("user_id", "person", "p1")],
        );
        assert!(queue.must_write_before(Some(&natural), &role));
        let unrelated = change(
            "person_name",
            Op::Update,
            "n2",
            &[("person_id", "person", "p2")],
        );
        assert!(!queue.must_write_before(Some(&own_uuid("person_name")), &unrelated));
    }

    #[test]
    fn without_consecutive_ids_nothing_is_queued() {
        let person_map = own_uuid("person");
        let person = change("person", Op::Insert, "p1", &[]);
        let mut queue = NewRows::new(None);
        assert!(queue.offer(&person_map, &person, resolved(&[])).is_some());
        assert!(queue.is_empty());
    }

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
