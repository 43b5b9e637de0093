//! Writing one row change into HQ: resolve its references, find its HQ row by identity, and
//! insert, update or delete it with HQ-local ids.
//!
//! Inserts and updates are upserts by identity: a row HQ already has (a re-sent or seeded row,
//! or one whose insert happened before capture started) is updated to the travelling image,
//! which makes re-delivery harmless. Columns the schema map excludes never travel, so they keep
//! HQ's value on update and take the column default on insert.

use crate::conflict_policy::{ConflictPolicies, ConflictPolicy, DATE_CHANGED};
use crate::conflicts::{self, Decision, Detected, Origin};
use crate::dropped_columns::DroppedColumns;
use crate::integration::AppliedChanges;
use crate::locator::{Locator, locate, locator_columns};
use crate::resolver::Resolver;
use crate::row_state::{self, RowSnapshot, RowStates, Standing};
pub use crate::sql_row::SqlRow;
use crate::usernames::{self, Clash, USERS};
use mysql_async::prelude::*;
use mysql_async::{Transaction, Value as Sql};
use rustc_hash::FxHashSet;
use tributary_model::{ColumnName, Op, RowChange, RowRef, Value};
use tributary_schema::{IdentityRule, SchemaMap, TableMap, quote_ident};

/// Prefix capture gives identities it could not resolve at the source.
const MISSING_AT_SOURCE: &str = "missing-at-source:";

/// Whether an insert or update refers to a row capture could not identify at the site (gone
/// there when it was read): such a change can never be written as it is.
pub fn refers_to_rows_gone_at_source(change: &RowChange) -> bool {
    change.op != Op::Delete
        && change.columns.values().any(|value| {
            matches!(value, Value::Ref(target) if target.identity.as_str().starts_with(MISSING_AT_SOURCE))
        })
}

/// Whether a row can be written now.
pub enum Resolution {
    /// Every reference resolved: the column values to write, ids already HQ-local.
    Ready(ResolvedRow),
    /// Some referenced rows are not at HQ yet: park until they arrive.
    Waiting(Vec<RowRef>),
    /// The row cannot be written by waiting (unknown table or column at HQ, a reference the
    /// source could not resolve): park with this reason for an operator.
    Blocked(String),
    /// A delete of a subtype row (`drug_order`, `patient`) whose base row was already gone at
    /// the site when capture read it, so the site could not say which row it was. Nothing is
    /// lost by setting it aside with this reason: the site deletes the base row after it
    /// (its foreign key says so), and that delete takes the subtype row with it at HQ.
    Unidentifiable(String),
}

/// A row ready to be written.
pub struct ResolvedRow {
    pub values: SqlRow,
    /// Columns that refer to the row itself (a user who created their own account) while the
    /// row is not at HQ yet: filled in with the row's new id right after it is inserted.
    pub self_references: Vec<String>,
    /// Columns that refer to rows queued to be inserted in this batch (`new_rows`): their
    /// HQ ids are filled in once those rows are written.
    pub deferred: Vec<(ColumnName, RowRef)>,
    /// Columns the site sent that HQ's table lacks, dropped by the schema map's rule.
    pub dropped_columns: Vec<String>,
}

pub async fn resolve_row(
    tx: &mut Transaction<'_>,
    schema: &SchemaMap,
    resolver: &mut Resolver,
    change: &RowChange,
) -> mysql_async::Result<Resolution> {
    resolve_row_deferring(tx, schema, resolver, change, &FxHashSet::default()).await
}

/// Resolves a row whose references to `queued` rows (new rows of this batch, not written yet)
/// are left to fill in later ([`ResolvedRow::deferred`]).
pub async fn resolve_row_deferring(
    tx: &mut Transaction<'_>,
    schema: &SchemaMap,
    resolver: &mut Resolver,
    change: &RowChange,
    queued: &FxHashSet<RowRef>,
) -> mysql_async::Result<Resolution> {
    let Some(map) = schema.table(&change.table) else {
        return Ok(Resolution::Blocked(format!(
            "table `{}` is not a synced table at HQ (missing, or excluded by the schema map)",
            change.table
        )));
    };
    if let Some(filter) = &map.row_filter {
        let name = change
            .columns
            .get(&filter.column)
            .and_then(tributary_model::Value::as_text);
        if name.and_then(|name| filter.matching(name)).is_none() {
            return Ok(Resolution::Blocked(format!(
                "`{}` rows travel by name only, and HQ's [sync] global_properties does not \
                 list `{}`: add it at HQ (as the site has), or drop the row",
                change.table,
                name.unwrap_or("?")
            )));
        }
    }
    // A delete needs only what finds the row; its other columns and references (the rows it
    // referred to may be long gone at the site) do not matter.
    let key_columns = locator_columns(map);
    let wanted = |column: &str| change.op != Op::Delete || key_columns.iter().any(|k| k == column);
    // Columns HQ's table lacks: dropped when the schema map says so (reported), else the row
    // cannot be written as it is.
    let mut dropped_columns = Vec::new();
    for column in change.columns.keys().filter(|c| wanted(c)) {
        if map.column(column).is_some() {
            continue;
        }
        if !schema.drops_missing_column(&map.name, column)
            || key_columns.iter().any(|k| k == &**column)
        {
            return Ok(Resolution::Blocked(format!(
                "HQ table `{}` has no column `{column}`; upgrade HQ's schema, or list the column \
                 under [dropped_at_hq] in the schema map to write such rows without it \
                 (reported)",
                change.table
            )));
        }
        dropped_columns.push(column.to_string());
    }
    let needed = |column: &str| wanted(column) && !dropped_columns.iter().any(|d| d == column);
    let mut values = SqlRow::with_capacity(change.columns.len());
    let mut waiting = Vec::new();
    let mut self_references = Vec::new();
    let mut deferred = Vec::new();
    let own = change.row_ref();
    for (column, value) in change.columns.iter().filter(|(c, _)| needed(c)) {
        let sql = match value {
            Value::Ref(target) if target.identity.as_str().starts_with(MISSING_AT_SOURCE) => {
                if change.op == Op::Delete
                    && matches!(&map.identity, IdentityRule::Inherited { root } if *root == *target.table)
                {
                    return Ok(Resolution::Unidentifiable(format!(
                        "the site deleted this `{}` row after its `{}` row was gone there, so \
                         capture could not identify it; the site's delete of the `{}` row \
                         removes it at HQ",
                        change.table, target.table, target.table
                    )));
                }
                return Ok(Resolution::Blocked(format!(
                    "column `{column}` refers to a `{}` row the site no longer had when it was captured",
                    target.table
                )));
            }
            Value::Ref(target) if queued.contains(target) => {
                deferred.push((column.clone(), target.clone()));
                Sql::NULL
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
        values.insert(column.clone(), sql);
    }
    if waiting.is_empty() {
        Ok(Resolution::Ready(ResolvedRow {
            values,
            self_references,
            deferred,
            dropped_columns,
        }))
    } else {
        waiting.sort();
        waiting.dedup();
        Ok(Resolution::Waiting(waiting))
    }
}

/// What one HQ transaction writes with: HQ's schema, the id resolver, the states of the rows
/// it writes, and the conflict policies.
pub struct Scope<'a> {
    pub schema: &'a SchemaMap,
    pub resolver: &'a mut Resolver,
    /// The states of the rows this transaction writes (recorded at its end).
    pub states: RowStates,
    pub policies: &'a ConflictPolicies,
    /// Columns rows were written without (recorded with the transaction).
    pub dropped: DroppedColumns,
    /// The changes written, for the integration topics (recorded with the transaction).
    pub applied: AppliedChanges,
}

impl<'a> Scope<'a> {
    /// The scope of one new HQ transaction.
    pub fn new(
        schema: &'a SchemaMap,
        resolver: &'a mut Resolver,
        policies: &'a ConflictPolicies,
        record_applied: bool,
    ) -> Scope<'a> {
        Scope {
            schema,
            resolver,
            states: RowStates::new(),
            policies,
            dropped: DroppedColumns::default(),
            applied: AppliedChanges::new(record_applied),
        }
    }
}

/// Whether a change to an HQ row that changed since its site last wrote it is a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The applier's path: compare and follow the table's policy.
    Conflicts,
    /// An operator chose the site's version (`tributary conflicts resolve --take-site`).
    Override,
}

/// What became of a resolved row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Written at HQ (also when it won a conflict by policy).
    Done,
    /// A conflict the table's policy decided for HQ: recorded, not written.
    KeptHq,
    /// A conflict waiting for a person: recorded open, not written.
    Queued,
    /// Cannot be written as it is (a declared policy says so): park it with this reason.
    Refused(String),
}

/// Writes a resolved row, remembering the HQ id a new row received and the state the site's
/// change left the row in.
pub async fn write_row(
    tx: &mut Transaction<'_>,
    scope: &mut Scope<'_>,
    origin: Origin<'_>,
    change: &RowChange,
    row: ResolvedRow,
    check: Check,
) -> mysql_async::Result<Written> {
    let Some(map) = scope.schema.table(&change.table) else {
        return Ok(Written::Done);
    };
    let ResolvedRow {
        mut values,
        self_references,
        ..
    } = row;
    if map.name == USERS && change.op != Op::Delete {
        let policy = scope.policies.usernames;
        if let Clash::Park(reason) =
            usernames::settle(tx, policy, origin.site_id, change, &mut values).await?
        {
            return Ok(Written::Refused(reason));
        }
    }
    // A new row whose uuid HQ keeps unique is inserted straight away: one round trip
    // instead of a lookup and an insert. When HQ has the row already (shared metadata, a
    // re-sent row), the database refuses the duplicate and the row is found and updated.
    if change.op == Op::Insert && map.identity_is_unique && self_references.is_empty() {
        match insert(tx, map, &values).await {
            Ok(id) => {
                wrote_new(scope, origin, map, change, &values, id);
                return Ok(Written::Done);
            }
            Err(e) if is_duplicate_key(&e) => {}
            Err(e) => return Err(e),
        }
    }
    let existing = locate(tx, map, change, &values).await?;
    match (change.op, existing) {
        (Op::Delete, None) => {}
        (_, Some(locator)) => {
            if check == Check::Conflicts {
                let entity = change.row_ref();
                if let Standing::Diverged { hash, last_writer } = scope
                    .states
                    .standing(tx, map, origin.site_id, &entity, &locator)
                    .await?
                {
                    let diverged = Diverged {
                        map,
                        locator,
                        hash,
                        reason: last_writer.reason(origin.site_id),
                    };
                    return settle(tx, scope, origin, change, values, diverged).await;
                }
            }
            write_existing(tx, scope, origin, map, change, &locator, values).await?;
        }
        (Op::Insert | Op::Update, None) if self_references.is_empty() => {
            let id = insert(tx, map, &values).await?;
            wrote_new(scope, origin, map, change, &values, id);
        }
        (Op::Insert | Op::Update, None) => {
            // Several statements make one row here: a savepoint keeps a refused row from
            // leaving half of itself behind.
            tx.query_drop("SAVEPOINT tributary_row").await?;
            let written =
                insert_referring_to_itself(tx, map, values.clone(), &self_references).await;
            if written.is_err() {
                tx.query_drop("ROLLBACK TO SAVEPOINT tributary_row").await?;
            }
            wrote_new(scope, origin, map, change, &values, written?);
        }
    }
    Ok(Written::Done)
}

/// Updates or deletes the HQ row at `locator` as the change says, and notes its new state.
async fn write_existing(
    tx: &mut Transaction<'_>,
    scope: &mut Scope<'_>,
    origin: Origin<'_>,
    map: &TableMap,
    change: &RowChange,
    locator: &Locator,
    values: SqlRow,
) -> mysql_async::Result<()> {
    if change.op == Op::Delete {
        // For a table with an integer key of HQ's own (every table subtypes extend), the
        // row's state is kept by that key: this is the row's HQ id.
        let state_id = row_state::state_id(tx, map, locator).await?;
        if let Some(id) = &state_id {
            delete_inheriting_rows(tx, scope, origin, map, change, id).await?;
        }
        let (clause, params) = locator.where_clause();
        tx.exec_drop(
            format!("DELETE FROM {} WHERE {clause}", quote_ident(&map.name)),
            params,
        )
        .await?;
        let entity = change.row_ref();
        scope.resolver.forget(&entity);
        return scope.states.deleted(tx, map, &entity, state_id).await;
    }
    update(tx, map, locator, values).await?;
    scope
        .states
        .wrote(origin.site_id, map, change, locator.clone());
    Ok(())
}

/// Deletes the subtype rows that share a row's identity (`drug_order` for `orders`, `patient`
/// for `person`) before the row itself. The site cannot hold them without the row (their key
/// is a foreign key to it), so its delete of the row implies theirs. Normally the site's own
/// deletes of them came first and there is nothing left; one capture could not identify
/// (its base row already gone at the site, see [`Resolution::Unidentifiable`]) would
/// otherwise leave a subtype row holding the delete back for good. `id` is the row's HQ key.
async fn delete_inheriting_rows(
    tx: &mut Transaction<'_>,
    scope: &mut Scope<'_>,
    origin: Origin<'_>,
    map: &TableMap,
    change: &RowChange,
    id: &Sql,
) -> mysql_async::Result<()> {
    let subtypes: Vec<&TableMap> = scope
        .schema
        .tables()
        .filter(|t| matches!(&t.identity, IdentityRule::Inherited { root } if *root == map.name))
        .collect();
    for subtype in subtypes {
        let [subtype_key] = subtype.primary_key.as_slice() else {
            continue;
        };
        let subtype_locator = Locator::Key(subtype_key.clone(), id.clone());
        let state_id = row_state::state_id(tx, subtype, &subtype_locator).await?;
        tx.exec_drop(
            format!(
                "DELETE FROM {} WHERE {} = ?",
                quote_ident(&subtype.name),
                quote_ident(subtype_key)
            ),
            (id.clone(),),
        )
        .await?;
        if tx.affected_rows() == 0 {
            continue;
        }
        let entity = RowRef::new(
            std::sync::Arc::from(subtype.name.as_str()),
            change.identity.clone(),
        );
        scope.resolver.forget(&entity);
        scope.states.deleted(tx, subtype, &entity, state_id).await?;
        tracing::info!(
            site = %origin.site_id,
            table = %subtype.name,
            base = %map.name,
            "deleted a subtype row with the row it extends (the site's own delete of it could not be identified)"
        );
    }
    Ok(())
}

/// Sets `values` on the HQ row at `locator` (nothing when there are none).
pub(crate) async fn update(
    tx: &mut Transaction<'_>,
    map: &TableMap,
    locator: &Locator,
    values: SqlRow,
) -> mysql_async::Result<()> {
    let mut values = values;
    if map.row_filter.is_some() {
        // A row found by name keeps HQ's own uuid: each database made its own for the same
        // setting, and several sites writing it must not make it change hands.
        values.remove("uuid");
    }
    if values.is_empty() {
        return Ok(());
    }
    let (clause, mut params) = locator.where_clause();
    let assignments: Vec<String> = values
        .keys()
        .map(|c| format!("{} = ?", quote_ident(c)))
        .collect();
    let mut all: Vec<Sql> = values.into_values().collect();
    all.append(&mut params);
    tx.exec_drop(
        format!(
            "UPDATE {} SET {} WHERE {clause}",
            quote_ident(&map.name),
            assignments.join(", ")
        ),
        all,
    )
    .await
}

/// Notes a new row: its HQ id for later references, its state for later conflicts.
fn wrote_new(
    scope: &mut Scope<'_>,
    origin: Origin<'_>,
    map: &TableMap,
    change: &RowChange,
    values: &SqlRow,
    id: Option<u64>,
) {
    remember_new_id(map, scope.resolver, change, id);
    if let Some(locator) = Locator::of_written(map, change, values, id) {
        scope.states.wrote(origin.site_id, map, change, locator);
    }
}

/// An HQ row that changed since the change's site last wrote it.
struct Diverged<'m> {
    map: &'m TableMap,
    locator: Locator,
    /// HQ's row hash now.
    hash: Vec<u8>,
    reason: String,
}

/// Follows the table's policy for a change to a diverged row: an update that leaves the row
/// as HQ has it is no conflict at all; otherwise the conflict is recorded, decided by the
/// policy or left open for a person.
async fn settle(
    tx: &mut Transaction<'_>,
    scope: &mut Scope<'_>,
    origin: Origin<'_>,
    change: &RowChange,
    values: SqlRow,
    diverged: Diverged<'_>,
) -> mysql_async::Result<Written> {
    let Diverged {
        map,
        locator,
        hash,
        mut reason,
    } = diverged;
    let policy = scope.policies.for_table(&map.name);
    let Some((hq_row, _)) = row_state::snapshot(tx, map, &locator).await? else {
        return Ok(Written::Done);
    };
    let site_row = if change.op == Op::Delete {
        None
    } else {
        // Write the site's version under a savepoint to see it as HQ would hold it.
        tx.query_drop("SAVEPOINT tributary_conflict").await?;
        let written = update(tx, map, &locator, values).await;
        let read = match written {
            Ok(()) => row_state::snapshot(tx, map, &locator).await,
            Err(e) => Err(e),
        };
        match read {
            Ok(Some((_, after))) if after == hash => {
                // The site says what HQ already has: agreement, not a conflict.
                tx.query_drop("RELEASE SAVEPOINT tributary_conflict")
                    .await?;
                scope.states.wrote(origin.site_id, map, change, locator);
                return Ok(Written::Done);
            }
            Ok(Some((site_row, _))) => Some(site_row),
            Ok(None) => {
                tx.query_drop("RELEASE SAVEPOINT tributary_conflict")
                    .await?;
                return Ok(Written::Done);
            }
            Err(e) => {
                tx.query_drop("ROLLBACK TO SAVEPOINT tributary_conflict")
                    .await?;
                return Err(e);
            }
        }
    };
    let decision = decide(policy, map, &hq_row, site_row.as_ref(), &mut reason);
    let differing = match &site_row {
        Some(site_row) => row_state::differing_columns(&hq_row, site_row),
        None => hq_row.keys().cloned().collect(),
    };
    match (decision, change.op) {
        (Decision::SiteWon, Op::Delete) => {
            write_existing(tx, scope, origin, map, change, &locator, SqlRow::new()).await?;
        }
        (Decision::SiteWon, _) => {
            tx.query_drop("RELEASE SAVEPOINT tributary_conflict")
                .await?;
            scope.states.wrote(origin.site_id, map, change, locator);
        }
        (_, Op::Delete) => {}
        (_, _) => {
            tx.query_drop("ROLLBACK TO SAVEPOINT tributary_conflict")
                .await?;
        }
    }
    let detected = Detected {
        change,
        policy,
        reason,
        differing,
        hq_row: &hq_row,
        site_row: site_row.as_ref(),
    };
    conflicts::record(tx, origin, &detected, decision).await?;
    crate::metrics::conflict(origin.site_id, decision);
    Ok(match decision {
        Decision::SiteWon => Written::Done,
        Decision::HqWon => Written::KeptHq,
        Decision::Open => Written::Queued,
    })
}

/// What the table's policy decides for a conflict (`site_row` is `None` for a delete).
fn decide(
    policy: ConflictPolicy,
    map: &TableMap,
    hq_row: &RowSnapshot,
    site_row: Option<&RowSnapshot>,
    reason: &mut String,
) -> Decision {
    match policy {
        ConflictPolicy::Queue => Decision::Open,
        ConflictPolicy::SiteWins => Decision::SiteWon,
        ConflictPolicy::HqWins => Decision::HqWon,
        ConflictPolicy::NewestDateChanged => {
            let Some(site_row) = site_row else {
                reason.push_str("; a delete has no date_changed to compare, so it waits");
                return Decision::Open;
            };
            if map.column(DATE_CHANGED).is_none() {
                reason.push_str("; the table has no date_changed to compare, so it waits");
                return Decision::Open;
            }
            // Both are HQ's own text rendering of the column: they compare as dates.
            let changed = |row: &RowSnapshot| row.get(DATE_CHANGED).cloned().flatten();
            if changed(site_row) > changed(hq_row) {
                Decision::SiteWon
            } else {
                Decision::HqWon
            }
        }
    }
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
    values: &SqlRow,
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
    mut values: SqlRow,
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
            ColumnName::from(column.as_str()),
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

pub(crate) fn remember_new_id(
    map: &TableMap,
    resolver: &mut Resolver,
    change: &RowChange,
    id: Option<u64>,
) {
    if map.surrogate_key.is_some()
        && let Some(id) = id.and_then(|id| i64::try_from(id).ok())
    {
        resolver.remember(change.row_ref(), id);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tributary_schema::{CatalogColumn, ColumnKind, IdentityRule};

    fn table(columns: &[&str]) -> TableMap {
        let column = |name: &str| CatalogColumn {
            name: name.to_owned(),
            kind: ColumnKind::Text,
            nullable: true,
            auto_increment: false,
            unsigned: false,
        };
        TableMap {
            name: "person_address".into(),
            columns: columns.iter().map(|c| column(c)).collect(),
            excluded_columns: Vec::new(),
            ordinal_columns: Vec::new(),
            surrogate_key: None,
            primary_key: vec!["uuid".into()],
            identity: IdentityRule::OwnUuid {
                column: "uuid".into(),
            },
            identity_source: None,
            references: BTreeMap::new(),
            polymorphic: Vec::new(),
            identity_is_unique: true,
            plain_key_parents: Vec::new(),
            row_filter: None,
        }
    }

    fn changed(at: Option<&str>) -> RowSnapshot {
        RowSnapshot::from([(DATE_CHANGED.to_owned(), at.map(str::to_owned))])
    }

    #[test]
    fn newest_date_changed_wins_and_hq_keeps_a_tie() {
        let map = table(&["uuid", DATE_CHANGED]);
        let decide_for = |hq: Option<&str>, site: Option<&str>| {
            let mut reason = String::new();
            decide(
                ConflictPolicy::NewestDateChanged,
                &map,
                &changed(hq),
                Some(&changed(site)),
                &mut reason,
            )
        };
        let (older, newer) = (Some("2024-01-01 00:00:00"), Some("2025-06-01 08:30:00"));
        assert_eq!(decide_for(older, newer), Decision::SiteWon);
        assert_eq!(decide_for(newer, older), Decision::HqWon);
        assert_eq!(decide_for(newer, newer), Decision::HqWon, "a tie keeps HQ");
        assert_eq!(decide_for(None, older), Decision::SiteWon);
        assert_eq!(decide_for(older, None), Decision::HqWon);
    }

    #[test]
    fn newest_date_changed_queues_what_it_cannot_compare() {
        let mut reason = String::new();
        let row = changed(Some("2024-01-01 00:00:00"));
        let without_column = table(&["uuid"]);
        let decision = decide(
            ConflictPolicy::NewestDateChanged,
            &without_column,
            &row,
            Some(&row),
            &mut reason,
        );
        assert_eq!(decision, Decision::Open);
        assert!(reason.contains("no date_changed"), "{reason}");
        let mut reason = String::new();
        let with_column = table(&["uuid", DATE_CHANGED]);
        let delete = decide(
            ConflictPolicy::NewestDateChanged,
            &with_column,
            &row,
            None,
            &mut reason,
        );
        assert_eq!(delete, Decision::Open);
        assert!(reason.contains("a delete"), "{reason}");
    }

    #[test]
    fn fixed_policies_decide_without_looking() {
        let map = table(&["uuid"]);
        let row = RowSnapshot::new();
        for (policy, expected) in [
            (ConflictPolicy::Queue, Decision::Open),
            (ConflictPolicy::SiteWins, Decision::SiteWon),
            (ConflictPolicy::HqWins, Decision::HqWon),
        ] {
            let mut reason = String::new();
            assert_eq!(decide(policy, &map, &row, None, &mut reason), expected);
        }
    }
}
