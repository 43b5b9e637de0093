//! What the applier last wrote, per row and site (invariant 5): `tributary_row_state` keeps,
//! for every HQ row a site's change was written to, a hash of the row as it stood right after.
//! When that site's next change arrives, HQ's row is hashed again: the same hash means nobody
//! changed the row since, anything else means it was edited at HQ or written from another site
//! in between, and the change is a conflict.
//!
//! Hashes are computed by HQ itself over the synced columns (HQ's own surrogate key left out),
//! each column length-prefixed so no two rows share a rendering, so they compare exactly
//! whatever the column types.
//!
//! Where a state is kept depends on the table ([`Keeping`]): a row whose identity is a uuid
//! (its own, or its root's for a subtype row) and that has an integer key at HQ (a surrogate
//! key, or the key a subtype row shares with its root) is kept by table and that key in
//! `tributary_row_state_by_id`, so new rows' states are appended in key order and found with
//! the row itself; the other rows (natural keys, uuid tables without an integer key) by
//! `SHA1(table ':' identity)` in `tributary_row_state`.
//!
//! Within one HQ transaction, states are recorded at the end ([`RowStates::flush`]), in bulk
//! per table, so writing a new row costs one statement per table per batch, not one per row.
//! A row written earlier in the same transaction for the same site needs no check: the
//! applier itself is the last writer.

use crate::locator::{Locator, travelling_uuid};
use mysql_async::prelude::*;
use mysql_async::{Transaction, Value as Sql};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use tributary_model::{RowChange, RowRef};
use tributary_schema::{CatalogColumn, ColumnKind, IdentityRule, SchemaMap, TableMap, quote_ident};

/// Rows per bulk state statement.
const ROWS_PER_STATEMENT: usize = 500;
/// The alias of the HQ row in the statements here.
pub(crate) const ROW: &str = "hq_row";
/// The key of a row's states by identity, from the table name and identity parameters.
const ENTITY_KEY: &str = "UNHEX(SHA1(CONCAT(?, ':', ?)))";
/// States of rows kept by HQ's integer key.
pub(crate) const BY_ID: &str = "tributary_row_state_by_id";
/// States of rows kept by a hash of their identity.
pub(crate) const BY_IDENTITY: &str = "tributary_row_state";

/// Where the states of a table's rows are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keeping<'m> {
    /// By table and HQ's integer key of the row, this column (`tributary_row_state_by_id`).
    ById(&'m str),
    /// By `SHA1(table ':' identity)` (`tributary_row_state`).
    ByIdentity,
}

impl Keeping<'_> {
    /// Rows whose identity is a uuid (their own or their root's) and that have an integer key
    /// of HQ's own are kept by id; the rest by identity.
    pub(crate) fn of(map: &TableMap) -> Keeping<'_> {
        match (
            &map.identity,
            &map.surrogate_key,
            map.primary_key.as_slice(),
        ) {
            (IdentityRule::OwnUuid { .. }, Some(key), _) => Keeping::ById(key),
            (IdentityRule::Inherited { .. }, _, [key])
                if map
                    .columns
                    .iter()
                    .any(|c| c.name == *key && c.kind.is_integer()) =>
            {
                Keeping::ById(key)
            }
            _ => Keeping::ByIdentity,
        }
    }

    /// The HQ id in `locator`, when it finds the row by it.
    fn id_in<'l>(&self, locator: &'l Locator) -> Option<&'l Sql> {
        match (self, locator.single_value()) {
            (Keeping::ById(key), Some((column, id))) if column == *key => Some(id),
            _ => None,
        }
    }

    /// The states of one row (alias `s`) for a statement reading [`ROW`]: the table, and
    /// the condition with its parameters.
    fn row_states(&self, entity: &RowRef) -> (&'static str, String, Vec<Sql>) {
        match self {
            Keeping::ById(key) => (
                BY_ID,
                format!("s.table_name = ? AND s.hq_id = {ROW}.{}", quote_ident(key)),
                vec![Sql::from(&*entity.table)],
            ),
            Keeping::ByIdentity => (
                BY_IDENTITY,
                format!("s.entity_key = {ENTITY_KEY}"),
                vec![
                    Sql::from(&*entity.table),
                    Sql::from(entity.identity.as_str()),
                ],
            ),
        }
    }
}

/// A row as HQ holds it, column by column, as text (binary columns as `0x` and hex), for
/// showing both versions of a conflict and naming the columns that differ.
pub type RowSnapshot = BTreeMap<String, Option<String>>;

/// How an HQ row stands against the site about to change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Unchanged since this site's last write (or written by it earlier in this transaction).
    Unchanged,
    /// Changed since, or never written from this site.
    Diverged {
        /// The row's hash now.
        hash: Vec<u8>,
        /// Who the row's present state is known to come from, for the reason.
        last_writer: LastWriter,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LastWriter {
    /// Another site's change was the last write, and this site had written it before.
    OtherSite { site: String, had_written: bool },
    /// Nobody Tributary knows of: edited at HQ (or created there).
    Hq { had_written: bool },
}

impl LastWriter {
    /// Why the change is a conflict, for operators (no values, no identities).
    pub fn reason(&self, site: &str) -> String {
        match self {
            LastWriter::OtherSite {
                site: other,
                had_written: true,
            } => format!("HQ's row was written from site {other} since site {site} last wrote it"),
            LastWriter::OtherSite {
                site: other,
                had_written: false,
            } => format!("HQ's row was written from site {other}; site {site} never wrote it"),
            LastWriter::Hq { had_written: true } => {
                format!("HQ's row was edited at HQ since site {site} last wrote it")
            }
            LastWriter::Hq { had_written: false } => format!(
                "HQ's row was not written from site {site} (created or edited at HQ, or by \
                 another site before conflicts were tracked)"
            ),
        }
    }
}

/// The row's hash now, this site's last state of it, and another site whose last state it is.
type StandingRow = (Vec<u8>, Option<Vec<u8>>, Option<String>);

/// Where a written row is found again when its state is recorded.
enum Place {
    /// By HQ's integer key (kept by id).
    Id(Sql),
    /// By its uuid (kept by identity).
    Uuid { column: String, value: String },
    /// By its key columns.
    Key(Locator),
}

struct Pending {
    site: String,
    place: Place,
}

/// The states of one HQ transaction: rows written (to record at the end) per entity.
#[derive(Default)]
pub struct RowStates {
    pending: FxHashMap<RowRef, Pending>,
}

impl RowStates {
    pub fn new() -> RowStates {
        RowStates::default()
    }

    /// Notes that `site`'s change was written to the row at `locator`; its state is recorded
    /// at [`RowStates::flush`]. A later writer of the same row in this transaction replaces
    /// the earlier (only the last writer's state is true at commit).
    pub fn wrote(&mut self, site: &str, map: &TableMap, change: &RowChange, locator: Locator) {
        let keeping = Keeping::of(map);
        let place = match (keeping.id_in(&locator), &map.identity) {
            (Some(id), _) => Place::Id(signed(id)),
            (None, IdentityRule::OwnUuid { column }) if keeping == Keeping::ByIdentity => {
                Place::Uuid {
                    column: column.clone(),
                    value: travelling_uuid(change, column).to_owned(),
                }
            }
            _ => Place::Key(locator),
        };
        self.pending.insert(
            change.row_ref(),
            Pending {
                site: site.to_owned(),
                place,
            },
        );
    }

    /// Whether `site` wrote the row earlier in this transaction.
    fn written_by(&self, site: &str, entity: &RowRef) -> bool {
        self.pending.get(entity).is_some_and(|p| p.site == site)
    }

    /// Forgets every state of a deleted row; `hq_id` is what [`state_id`] said before the
    /// row was deleted.
    pub async fn deleted(
        &mut self,
        tx: &mut Transaction<'_>,
        map: &TableMap,
        entity: &RowRef,
        hq_id: Option<Sql>,
    ) -> mysql_async::Result<()> {
        self.pending.remove(entity);
        match (Keeping::of(map), hq_id) {
            (Keeping::ById(_), Some(id)) => {
                tx.exec_drop(
                    format!("DELETE FROM {BY_ID} WHERE table_name = ? AND hq_id = ?"),
                    (&*entity.table, id),
                )
                .await
            }
            (Keeping::ById(_), None) => Ok(()),
            (Keeping::ByIdentity, _) => {
                tx.exec_drop(
                    format!("DELETE FROM {BY_IDENTITY} WHERE entity_key = {ENTITY_KEY}"),
                    (&*entity.table, entity.identity.as_str()),
                )
                .await
            }
        }
    }

    /// How the row at `locator` stands against `site`'s change.
    pub async fn standing(
        &self,
        tx: &mut Transaction<'_>,
        map: &TableMap,
        site: &str,
        entity: &RowRef,
        locator: &Locator,
    ) -> mysql_async::Result<Standing> {
        if self.written_by(site, entity) {
            return Ok(Standing::Unchanged);
        }
        let hash = hash_sql(map);
        let (clause, locator_params) = locator.where_clause();
        let (states, this_row, row_params) = Keeping::of(map).row_states(entity);
        let sql = format!(
            "SELECT {hash},
                (SELECT s.state_hash FROM {states} s WHERE {this_row} AND s.site_id = ?),
                (SELECT s.site_id FROM {states} s
                  WHERE {this_row} AND s.site_id <> ? AND s.state_hash = {hash}
                  ORDER BY s.written_at DESC LIMIT 1)
             FROM {} AS {ROW} WHERE {clause} LIMIT 1",
            quote_ident(&map.name)
        );
        let mut params: Vec<Sql> = Vec::with_capacity(6 + locator_params.len());
        for _ in 0..2 {
            params.extend(row_params.iter().cloned());
            params.push(Sql::from(site));
        }
        params.extend(locator_params);
        let row: Option<StandingRow> = tx.exec_first(sql, params).await?;
        let Some((now, mine, other)) = row else {
            // Gone since it was located: nothing to compare, nothing to protect.
            return Ok(Standing::Unchanged);
        };
        if mine.as_deref() == Some(&now[..]) {
            return Ok(Standing::Unchanged);
        }
        let had_written = mine.is_some();
        let last_writer = match other {
            Some(site) => LastWriter::OtherSite { site, had_written },
            None => LastWriter::Hq { had_written },
        };
        Ok(Standing::Diverged {
            hash: now,
            last_writer,
        })
    }

    /// Records the state of every row written in this transaction, as it stands now.
    pub async fn flush(
        &mut self,
        tx: &mut Transaction<'_>,
        schema: &SchemaMap,
    ) -> mysql_async::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // (table, site) -> HQ ids; (table, column, site) -> uuids, and -> (identity, key value).
        let mut by_id: BTreeMap<(String, String), Vec<Sql>> = BTreeMap::new();
        let mut by_uuid: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
        let mut by_key: BTreeMap<(String, String, String), Vec<(String, Sql)>> = BTreeMap::new();
        for (entity, pending) in std::mem::take(&mut self.pending) {
            let Some(map) = schema.table(&entity.table) else {
                continue;
            };
            match pending.place {
                Place::Id(id) => by_id
                    .entry((map.name.clone(), pending.site))
                    .or_default()
                    .push(id),
                Place::Uuid { column, value } => by_uuid
                    .entry((map.name.clone(), column, pending.site))
                    .or_default()
                    .push(value),
                Place::Key(locator) => match locator.single_value() {
                    Some((column, value)) => by_key
                        .entry((map.name.clone(), column.to_owned(), pending.site))
                        .or_default()
                        .push((entity.identity.as_str().to_owned(), value.clone())),
                    None => record_one(tx, map, &entity, &pending.site, &locator).await?,
                },
            }
        }
        for ((table, site), mut ids) in by_id {
            let Some(map) = schema.table(&table) else {
                continue;
            };
            let Keeping::ById(key) = Keeping::of(map) else {
                continue;
            };
            // In key order, so new rows' states are appended where the last ones ended.
            ids.sort_by_key(sortable_id);
            for chunk in ids.chunks(ROWS_PER_STATEMENT) {
                record_by_id(tx, map, key, &site, chunk).await?;
            }
        }
        for ((table, column, site), uuids) in by_uuid {
            let Some(map) = schema.table(&table) else {
                continue;
            };
            for chunk in uuids.chunks(ROWS_PER_STATEMENT) {
                record_by_uuid(tx, map, &column, &site, chunk).await?;
            }
        }
        for ((table, column, site), rows) in by_key {
            let Some(map) = schema.table(&table) else {
                continue;
            };
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                record_by_key(tx, map, &column, &site, chunk).await?;
            }
        }
        Ok(())
    }
}

/// The row's state hash, as HQ computes it from the synced columns of [`ROW`].
pub fn hash_sql(map: &TableMap) -> String {
    let parts: Vec<String> = hashed_columns(map)
        .map(|column| {
            let bytes = format!("CAST({ROW}.{} AS BINARY)", quote_ident(column));
            format!("IFNULL(CONCAT(LENGTH({bytes}), ':', {bytes}), '-')")
        })
        .collect();
    if parts.is_empty() {
        return "UNHEX(SHA1(''))".to_owned();
    }
    format!("UNHEX(SHA1(CONCAT_WS(',', {})))", parts.join(", "))
}

/// The synced columns a state covers: HQ's own surrogate key is not the site's business.
fn hashed_columns(map: &TableMap) -> impl Iterator<Item = &str> {
    map.columns
        .iter()
        .map(|c| c.name.as_str())
        .filter(move |name| map.surrogate_key.as_deref() != Some(*name))
}

/// Reads the row at `locator` as text, column by column (see [`RowSnapshot`]), with its hash.
pub async fn snapshot(
    tx: &mut Transaction<'_>,
    map: &TableMap,
    locator: &Locator,
) -> mysql_async::Result<Option<(RowSnapshot, Vec<u8>)>> {
    let columns: Vec<&CatalogColumn> = map
        .columns
        .iter()
        .filter(|c| map.surrogate_key.as_deref() != Some(c.name.as_str()))
        .collect();
    let rendered: Vec<String> = columns
        .iter()
        .map(|c| {
            let column = format!("{ROW}.{}", quote_ident(&c.name));
            match c.kind {
                ColumnKind::Binary | ColumnKind::Other => {
                    format!("CONCAT('0x', HEX({column}))")
                }
                _ => format!("CAST({column} AS CHAR CHARACTER SET utf8mb4)"),
            }
        })
        .collect();
    let (clause, params) = locator.where_clause();
    let select = if rendered.is_empty() {
        String::new()
    } else {
        format!(", {}", rendered.join(", "))
    };
    let row: Option<mysql_async::Row> = tx
        .exec_first(
            format!(
                "SELECT {}{select} FROM {} AS {ROW} WHERE {clause} LIMIT 1",
                hash_sql(map),
                quote_ident(&map.name)
            ),
            params,
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let mut values = row.unwrap().into_iter();
    let hash = match values.next() {
        Some(Sql::Bytes(hash)) => hash,
        _ => Vec::new(),
    };
    let snapshot = columns
        .iter()
        .zip(values)
        .map(|(c, value)| {
            let text = match value {
                Sql::Bytes(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
                Sql::NULL => None,
                other => Some(other.as_sql(true)),
            };
            (c.name.clone(), text)
        })
        .collect();
    Ok(Some((snapshot, hash)))
}

/// The columns whose text differs between two snapshots of a row.
pub fn differing_columns(a: &RowSnapshot, b: &RowSnapshot) -> Vec<String> {
    a.keys()
        .chain(b.keys())
        .filter(|c| a.get(*c) != b.get(*c))
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// How the states of rows read as [`ROW`] are inserted: the table and columns, and the SQL
/// of each row's key with its parameters.
struct StateTarget {
    insert: String,
    key: String,
    key_params: Vec<Sql>,
}

impl StateTarget {
    /// States kept by id, or by identity with `identity` the SQL of each row's identity.
    fn of(map: &TableMap, identity: (String, Vec<Sql>)) -> StateTarget {
        let table = Sql::from(map.name.as_str());
        match Keeping::of(map) {
            Keeping::ById(key) => StateTarget {
                insert: format!("{BY_ID} (table_name, hq_id, site_id, state_hash, written_at)"),
                key: format!("?, {ROW}.{}", quote_ident(key)),
                key_params: vec![table],
            },
            Keeping::ByIdentity => {
                let (identity, identity_params) = identity;
                let mut key_params = vec![table];
                key_params.extend(identity_params);
                StateTarget {
                    insert: format!("{BY_IDENTITY} (entity_key, site_id, state_hash, written_at)"),
                    key: format!("UNHEX(SHA1(CONCAT(?, ':', {identity})))"),
                    key_params,
                }
            }
        }
    }
}

/// Upserts, in one statement, the states of the rows of `map` that `condition` (on [`ROW`])
/// selects.
async fn insert_states(
    tx: &mut Transaction<'_>,
    map: &TableMap,
    target: StateTarget,
    site: &str,
    condition: (String, Vec<Sql>),
) -> mysql_async::Result<()> {
    let (condition, condition_params) = condition;
    let StateTarget {
        insert,
        key,
        mut key_params,
    } = target;
    key_params.push(Sql::from(site));
    key_params.extend(condition_params);
    tx.exec_drop(
        format!(
            "INSERT INTO {insert}
             SELECT {key}, ?, {}, UTC_TIMESTAMP(3) FROM {} AS {ROW} WHERE {condition}
             {UPSERT}",
            hash_sql(map),
            quote_ident(&map.name)
        ),
        key_params,
    )
    .await
}

/// `column IN (?, ...)` over `values`.
fn one_of(column: &str, values: Vec<Sql>) -> (String, Vec<Sql>) {
    let marks = vec!["?"; values.len()].join(", ");
    (format!("{column} IN ({marks})"), values)
}

/// Upserts the state of one row, found by its locator.
async fn record_one(
    tx: &mut Transaction<'_>,
    map: &TableMap,
    entity: &RowRef,
    site: &str,
    locator: &Locator,
) -> mysql_async::Result<()> {
    let target = StateTarget::of(
        map,
        ("?".to_owned(), vec![Sql::from(entity.identity.as_str())]),
    );
    let (clause, params) = locator.where_clause();
    insert_states(tx, map, target, site, (format!("{clause} LIMIT 1"), params)).await
}

/// Upserts the states of rows kept by id, found by their HQ ids, in one statement.
async fn record_by_id(
    tx: &mut Transaction<'_>,
    map: &TableMap,
    key: &str,
    site: &str,
    ids: &[Sql],
) -> mysql_async::Result<()> {
    let target = StateTarget::of(map, (String::new(), Vec::new()));
    let found_by = format!("{ROW}.{}", quote_ident(key));
    insert_states(tx, map, target, site, one_of(&found_by, ids.to_vec())).await
}

/// Upserts the states of rows of a uuid table kept by identity in one statement. The key is
/// computed from the stored uuid the way identities are made from it (trimmed, lower case).
async fn record_by_uuid(
    tx: &mut Transaction<'_>,
    map: &TableMap,
    column: &str,
    site: &str,
    uuids: &[String],
) -> mysql_async::Result<()> {
    let found_by = format!("{ROW}.{}", quote_ident(column));
    let target = StateTarget::of(map, (format!("LOWER(TRIM({found_by}))"), Vec::new()));
    let values = uuids.iter().map(|u| Sql::from(u.as_str())).collect();
    insert_states(tx, map, target, site, one_of(&found_by, values)).await
}

/// Upserts the states of rows kept by identity and found by a single-column key in one
/// statement; each row's identity is picked by the position of its key value in the list.
async fn record_by_key(
    tx: &mut Transaction<'_>,
    map: &TableMap,
    column: &str,
    site: &str,
    rows: &[(String, Sql)],
) -> mysql_async::Result<()> {
    let found_by = format!("{ROW}.{}", quote_ident(column));
    let marks = vec!["?"; rows.len()].join(", ");
    let keys: Vec<Sql> = rows.iter().map(|(_, key)| key.clone()).collect();
    let mut identity_params = keys.clone();
    identity_params.extend(rows.iter().map(|(id, _)| Sql::from(id.as_str())));
    let identity = format!("ELT(FIELD({found_by}, {marks}), {marks})");
    let target = StateTarget::of(map, (identity, identity_params));
    insert_states(tx, map, target, site, one_of(&found_by, keys)).await
}

/// The HQ id the states of the row at `locator` are kept under (`None` for a table kept by
/// identity, or when the row is not there), read before the row is deleted.
pub async fn state_id(
    tx: &mut Transaction<'_>,
    map: &TableMap,
    locator: &Locator,
) -> mysql_async::Result<Option<Sql>> {
    let keeping = Keeping::of(map);
    let Keeping::ById(key) = keeping else {
        return Ok(None);
    };
    if let Some(id) = keeping.id_in(locator) {
        return Ok(Some(id.clone()));
    }
    let (clause, params) = locator.where_clause();
    tx.exec_first(
        format!(
            "SELECT {} FROM {} WHERE {clause} LIMIT 1",
            quote_ident(key),
            quote_ident(&map.name)
        ),
        params,
    )
    .await
}

/// An HQ id as a signed integer when it is one: a statement's list of ids must be of one type,
/// or MariaDB compares them in a way no index serves and reads the whole table.
fn signed(id: &Sql) -> Sql {
    match id {
        Sql::UInt(n) => i64::try_from(*n).map_or(Sql::UInt(*n), Sql::Int),
        other => other.clone(),
    }
}

/// Orders HQ ids numerically (they arrive as signed or unsigned integers).
fn sortable_id(id: &Sql) -> (u8, i128) {
    match id {
        Sql::Int(n) => (0, i128::from(*n)),
        Sql::UInt(n) => (0, i128::from(*n)),
        _ => (1, 0),
    }
}

const UPSERT: &str =
    "ON DUPLICATE KEY UPDATE state_hash = VALUES(state_hash), written_at = VALUES(written_at)";

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(pairs: &[(&str, Option<&str>)]) -> RowSnapshot {
        pairs
            .iter()
            .map(|(c, v)| (c.to_string(), v.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn differing_columns_name_changed_nulled_and_missing_columns() {
        let hq = snapshot(&[
            ("family_name", Some("Otieno")),
            ("given_name", Some("Akinyi")),
            ("middle_name", None),
            ("voided", Some("0")),
        ]);
        let site = snapshot(&[
            ("family_name", Some("Otieno")),
            ("given_name", None),
            ("middle_name", Some("")),
            ("degree", Some("Dr")),
            ("voided", Some("0")),
        ]);
        assert_eq!(
            differing_columns(&hq, &site),
            ["degree", "given_name", "middle_name"]
        );
        assert!(differing_columns(&hq, &hq).is_empty());
    }

    #[test]
    fn reasons_say_who_wrote_last_without_values() {
        let other = LastWriter::OtherSite {
            site: "clinic-a".into(),
            had_written: true,
        };
        assert_eq!(
            other.reason("clinic-b"),
            "HQ's row was written from site clinic-a since site clinic-b last wrote it"
        );
        assert!(
            LastWriter::Hq { had_written: true }
                .reason("clinic-b")
                .contains("edited at HQ since site clinic-b last wrote it")
        );
        assert!(
            LastWriter::Hq { had_written: false }
                .reason("clinic-b")
                .contains("not written from site clinic-b")
        );
    }
}
