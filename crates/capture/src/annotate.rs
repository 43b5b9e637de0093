//! Annotation: raw source rows become travelling row changes, written straight into their
//! payload JSON ([`CapturedTransaction`]).
//!
//! For each row: keep the synced columns, drop the surrogate key, convert values by column
//! kind, and replace every integer reference with the referenced row's identity. The
//! transaction's rows first teach the cache their own keys (a visit inserted in the same
//! transaction as its encounter needs no lookup), then the rows are written, each reference
//! looked up once. When a row refers to a key the cache lacks, writing stops there: the keys
//! the rest of the rows lack are gathered and fetched from the source in one batched pass, and
//! writing resumes at that row.
//!
//! A reference the source can no longer resolve (the parent was deleted before capture got
//! here) travels as an identity marked `missing-at-source:`; HQ parks the row with that reason
//! rather than inventing a parent.

use crate::attribute_formats::AttributeFormats;
use crate::binlog::{RawImage, RawRow, RawTransaction};
use crate::captured::CapturedTransaction;
use crate::error::CaptureError;
use crate::identities::IdentityCache;
use crate::table_layout::{ColumnInfo, ColumnRole};
use mysql_async::Value as Sql;
use std::collections::BTreeSet;
use std::sync::Arc;
use tributary_model::json::{self, write_row_head};
use tributary_model::{Columns, Identity, RowRef, Value};
use tributary_schema::{
    ColumnKind, IdentityRule, IdentitySource, SchemaMap, TableMap, to_value, write_json,
};

/// Turns raw rows into row changes, resolving references through `cache`.
pub struct Annotator<'a> {
    schema: &'a SchemaMap,
    cache: &'a mut IdentityCache,
    formats: &'a AttributeFormats,
    /// Set when a reference the source could resolve was not in the cache (since cleared).
    missed: bool,
}

/// What writing does at a row referring to a key the cache lacks (and the source may have).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnknownKey {
    /// Stop before the row, so the keys can be fetched first.
    Stop,
    /// Write the reference as unresolved (the keys were fetched already).
    WriteUnresolved,
}

/// Where writing a transaction's rows stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Every row is written.
    All,
    /// The row at this index refers to a key the cache lacks: it and the rows after it are
    /// not written yet.
    UnknownKeyAt(usize),
}

impl<'a> Annotator<'a> {
    pub fn new(
        schema: &'a SchemaMap,
        cache: &'a mut IdentityCache,
        formats: &'a AttributeFormats,
    ) -> Self {
        Annotator {
            schema,
            cache,
            formats,
            missed: false,
        }
    }

    /// Teaches the cache the keys of uuid rows in `rows`, and returns each row's identity
    /// where its own uuid gives it (the usual case), so [`Annotator::write_rows`] does not
    /// work it out again.
    pub fn learn(&mut self, rows: &[RawRow]) -> Vec<Option<Identity>> {
        let mut tables = TableLookup::new(self.schema);
        let mut places = UuidRowPlaces::default();
        rows.iter()
            .map(|row| {
                let map = tables.get(&row.table)?;
                let IdentityRule::OwnUuid { column } = &map.identity else {
                    return None;
                };
                let identifying = row.identifying_image();
                let identity = identifying.and_then(|image| {
                    let (_, uuid) = places.of(image, map, column);
                    own_uuid_at(image, uuid)
                });
                self.learn_keys(map, column, row, identity.as_ref(), &mut places);
                identity
            })
            .collect()
    }

    /// Teaches the cache the key of each image of `row`, a row of uuid table `map` (uuid in
    /// `column`); `identity` is the identifying image's, when already worked out.
    fn learn_keys<'r, 's>(
        &mut self,
        map: &'s TableMap,
        column: &str,
        row: &'r RawRow,
        identity: Option<&Identity>,
        places: &mut UuidRowPlaces<'r, 's>,
    ) {
        if map.surrogate_key.is_none() {
            return;
        }
        let identifying = row.identifying_image();
        for image in row.before.iter().chain(row.after.iter()) {
            let (key, uuid) = places.of(image, map, column);
            let Some(key) = key.and_then(|k| image.at(k)).and_then(|(_, v)| sql_int(v)) else {
                continue;
            };
            let learned = match identity {
                Some(identity) if identifying.is_some_and(|i| std::ptr::eq(i, image)) => {
                    Some(identity.clone())
                }
                _ => uuid
                    .and_then(|u| image.at(u))
                    .and_then(|(_, v)| sql_str(v))
                    .map(Identity::from_uuid),
            };
            if let Some(learned) = learned {
                self.cache.learn(&map.name, key, learned);
            }
        }
    }

    /// The (identity source, key) pairs `rows` refer to that the cache does not hold yet.
    pub fn wanted<'r>(
        &mut self,
        rows: impl Iterator<Item = (&'r str, &'r RawImage)>,
    ) -> BTreeSet<(IdentitySource, i64)> {
        let mut wanted = BTreeSet::new();
        let mut tables = TableLookup::new(self.schema);
        for (table, image) in rows {
            let Some(map) = tables.get(table) else {
                continue;
            };
            // Declared references know their identity root: a cached key costs one lookup.
            for (column, value) in image.iter() {
                if let ColumnRole::Reference {
                    target,
                    root: Some(root),
                    ..
                } = &column.role
                    && let Some(key) = sql_int(value)
                    && !self.cache.pin_shared(root, key)
                    && let Some(source) = self
                        .schema
                        .table(target)
                        .and_then(|t| t.identity_source.as_ref())
                {
                    wanted.insert((source.clone(), key));
                }
            }
            let polymorphic: Vec<(&str, i64)> = map
                .polymorphic
                .iter()
                .filter_map(|column| self.formats.target(column, image))
                .collect();
            for (target, key) in polymorphic {
                let Some(source) = self
                    .schema
                    .table(target)
                    .and_then(|t| t.identity_source.as_ref())
                else {
                    continue;
                };
                // A cached key is pinned now, so the lookups of this same transaction cannot
                // evict it before it is used.
                if !self.cache.pin(&source.root, key) {
                    wanted.insert((source.clone(), key));
                }
            }
        }
        wanted
    }

    /// The captured form of a transaction (or part, or snapshot chunk): each row written as
    /// its payload JSON, references the cache lacks as unresolved. `identities` are what
    /// [`Annotator::learn`] found for the same rows.
    #[cfg(any(test, fuzzing))]
    pub fn transaction(
        &mut self,
        raw: &RawTransaction,
        identities: &[Option<Identity>],
    ) -> CapturedTransaction {
        let mut captured = CapturedTransaction::for_rows_of(raw);
        self.write_rows(
            raw,
            identities,
            0,
            OnUnknownKey::WriteUnresolved,
            &mut captured,
        );
        captured
    }

    /// Writes the rows of `raw` from index `from` on into `captured`; at a row referring to
    /// a key the cache lacks, does what `unknown` says.
    pub fn write_rows(
        &mut self,
        raw: &RawTransaction,
        identities: &[Option<Identity>],
        from: usize,
        unknown: OnUnknownKey,
        captured: &mut CapturedTransaction,
    ) -> Written {
        let mut tables = TableLookup::new(self.schema);
        for (index, row) in raw.rows.iter().enumerate().skip(from) {
            let Some(map) = tables.get(&row.table) else {
                continue;
            };
            let known = identities.get(index).cloned().flatten();
            let rows_before = captured.row_count();
            self.missed = false;
            self.row(map, row, known, captured);
            if unknown == OnUnknownKey::Stop && self.missed {
                captured.truncate_rows(rows_before);
                return Written::UnknownKeyAt(index);
            }
        }
        Written::All
    }

    /// Adds the change of one raw row of table `map` (snapshot rows arrive as inserts), with
    /// its identity when already `known`. Rows without an identity and rows the table's
    /// filter leaves home are left out.
    fn row(
        &mut self,
        map: &TableMap,
        row: &RawRow,
        known: Option<Identity>,
        into: &mut CapturedTransaction,
    ) {
        let (Some(identifying), Some(image)) = (row.identifying_image(), row.changed_image())
        else {
            return;
        };
        let Some(identity) = known.or_else(|| self.identity(map, identifying)) else {
            return;
        };
        if let Some(filter) = &map.row_filter {
            // Only the named settings travel (`[sync] global_properties`).
            let name = image.get(&filter.column).and_then(sql_str);
            if name.and_then(|name| filter.matching(name)).is_none() {
                return;
            }
        }
        into.push_row(identity.clone(), |out| {
            write_row_head(out, &map.name, row.op, identity.as_str());
            self.write_columns(out, map, image);
            out.push(b'}');
        });
    }

    /// The identity of the row `image` shows: from the columns the identity rule reads,
    /// converted as they travel.
    fn identity(&mut self, map: &TableMap, image: &RawImage) -> Option<Identity> {
        if let Some(identity) = own_uuid_identity(map, image) {
            return Some(identity);
        }
        let columns = self.columns_of(map, image, Some(&map.identity_columns()));
        map.identity_of(|c| columns.get(c))
    }

    /// Writes the columns object of one image: the travelling columns by name, values
    /// converted by the kind the row's own TABLE_MAP gives (not today's catalog), every
    /// integer reference as the referenced row's identity. A column the catalog does not
    /// know (added or dropped by DDL since) still travels as a plain value, unless the policy
    /// keeps it home.
    fn write_columns(&mut self, out: &mut Vec<u8>, map: &TableMap, image: &RawImage) {
        let Some(names) = image.travelling() else {
            // Images whose columns are not in name order: sorted through a row of values.
            json::write_columns(out, &self.columns_of(map, image, None));
            return;
        };
        let polymorphic = self.polymorphic_targets(map, image);
        let keys = names.json_keys();
        out.push(b'{');
        let mut travelling = 0;
        for (column, value) in image.iter() {
            if column.role == ColumnRole::Local {
                continue;
            }
            out.extend_from_slice(keys.key(travelling));
            travelling += 1;
            match &column.role {
                ColumnRole::Plain => write_json(out, value, column.kind),
                // Declared references are written from the cache's own copy of the identity.
                ColumnRole::Reference {
                    root, json_prefix, ..
                } if let Some(key) = sql_int(value) => {
                    let identity = match root {
                        Some(root) => {
                            let found = self.cache.get_ref_shared(root, key);
                            self.missed |= found.is_none();
                            found
                        }
                        None => None,
                    };
                    write_reference(out, json_prefix, identity, key);
                }
                // A NULL (or non-integer) reference travels as the value it is.
                ColumnRole::Reference { .. } => write_json(out, value, column.kind),
                _ => match self.travelling_reference(column, value, &polymorphic) {
                    Some(reference) => {
                        json::write_ref(out, &reference.table, reference.identity.as_str())
                    }
                    None => write_json(out, value, column.kind),
                },
            }
        }
        out.push(b'}');
    }

    /// The travelling columns of one image, or of those named in `only`, as values.
    fn columns_of(&mut self, map: &TableMap, image: &RawImage, only: Option<&[&str]>) -> Columns {
        let polymorphic = self.polymorphic_targets(map, image);
        image
            .iter()
            .filter(|(column, _)| column.role != ColumnRole::Local)
            .filter(|(column, _)| only.is_none_or(|only| only.contains(&&*column.name)))
            .map(|(column, value)| {
                let value = match self.travelling_reference(column, value, &polymorphic) {
                    Some(reference) => Value::Ref(reference),
                    None => to_value(value.clone(), column.kind),
                };
                (Arc::clone(&column.name), value)
            })
            .collect()
    }

    /// Where the polymorphic columns of `image` point (they read other columns of the image,
    /// such as the attribute type).
    fn polymorphic_targets<'m>(
        &self,
        map: &'m TableMap,
        image: &RawImage,
    ) -> Vec<(&'m str, (&'m str, i64))> {
        map.polymorphic
            .iter()
            .filter_map(|c| Some((c.column.as_str(), self.formats.target(c, image)?)))
            .collect()
    }

    /// The reference a column's value travels as, when it holds one.
    fn travelling_reference(
        &mut self,
        column: &ColumnInfo,
        value: &Sql,
        polymorphic: &[(&str, (&str, i64))],
    ) -> Option<RowRef> {
        match &column.role {
            ColumnRole::Reference { target, root, .. } => {
                let key = sql_int(value)?;
                Some(self.reference_by_root(target, root.as_deref(), key))
            }
            ColumnRole::Polymorphic => {
                let (_, (target, key)) = polymorphic.iter().find(|(c, _)| *c == &*column.name)?;
                Some(self.reference((*target).into(), *key))
            }
            ColumnRole::Plain | ColumnRole::Local => None,
        }
    }

    /// A reference whose identity root is already known (declared references).
    fn reference_by_root(&mut self, target: &Arc<str>, root: Option<&str>, key: i64) -> RowRef {
        let identity = root.and_then(|root| self.cached(root, key));
        RowRef::new(
            Arc::clone(target),
            identity.unwrap_or_else(|| unresolved(key)),
        )
    }

    fn reference(&mut self, target: Arc<str>, key: i64) -> RowRef {
        let identity = self
            .schema
            .table(&target)
            .and_then(|t| t.identity_source.as_ref())
            .and_then(|source| self.cached(&source.root, key));
        RowRef::new(target, identity.unwrap_or_else(|| unresolved(key)))
    }

    /// The cached identity of `root` row `key`, noting a miss.
    fn cached(&mut self, root: &str, key: i64) -> Option<Identity> {
        let found = self.cache.get(root, key);
        self.missed |= found.is_none();
        found
    }
}

/// The identity of a row of a table identified by its own uuid, read from the image's uuid
/// text (the usual case); None when the rule is another or the image gives no usable uuid.
fn own_uuid_identity(map: &TableMap, image: &RawImage) -> Option<Identity> {
    let IdentityRule::OwnUuid { column } = &map.identity else {
        return None;
    };
    own_uuid_at(image, image.position(column))
}

/// [`own_uuid_identity`] with the uuid column's place in the image already found.
fn own_uuid_at(image: &RawImage, uuid: Option<usize>) -> Option<Identity> {
    let (info, Sql::Bytes(uuid)) = image.at(uuid?)? else {
        return None;
    };
    if info.role == ColumnRole::Local || !matches!(info.kind, ColumnKind::Text | ColumnKind::Other)
    {
        return None;
    }
    let uuid = std::str::from_utf8(uuid).ok()?;
    (!uuid.is_empty()).then(|| Identity::from_uuid(uuid))
}

/// Where the surrogate key and the uuid of a uuid table's rows sit in their images, found once
/// per run of images of the same shape (the images of a rows event, and of the rows events of
/// one table, share their column list) rather than by name in every image.
#[derive(Default)]
struct UuidRowPlaces<'r, 's> {
    last: Option<(&'r RawImage, &'s TableMap, Option<usize>, Option<usize>)>,
}

impl<'r, 's> UuidRowPlaces<'r, 's> {
    /// The places of `map`'s surrogate key and of its uuid `column` in `image`.
    fn of(
        &mut self,
        image: &'r RawImage,
        map: &'s TableMap,
        column: &str,
    ) -> (Option<usize>, Option<usize>) {
        match self.last {
            Some((seen, seen_map, key, uuid))
                if seen.same_columns(image) && std::ptr::eq(seen_map, map) =>
            {
                (key, uuid)
            }
            _ => {
                let key = map.surrogate_key.as_deref().and_then(|k| image.position(k));
                let uuid = image.position(column);
                self.last = Some((image, map, key, uuid));
                (key, uuid)
            }
        }
    }
}

/// The schema map's entry for a row's table, remembered while rows of the same table follow
/// each other (an encounter's obs, say): comparing a short name is cheaper than hashing it.
struct TableLookup<'s, 'r> {
    schema: &'s SchemaMap,
    last: Option<(&'r str, Option<&'s TableMap>)>,
}

impl<'s, 'r> TableLookup<'s, 'r> {
    fn new(schema: &'s SchemaMap) -> Self {
        TableLookup { schema, last: None }
    }

    fn get(&mut self, table: &'r str) -> Option<&'s TableMap> {
        match self.last {
            Some((name, map)) if name == table => map,
            _ => {
                let map = self.schema.table(table);
                self.last = Some((table, map));
                map
            }
        }
    }
}

/// The identity a reference travels with when the source no longer has the row it names.
fn unresolved(key: i64) -> Identity {
    Identity::from_raw(format!("{UNRESOLVED_PREFIX}{key}"))
}

const UNRESOLVED_PREFIX: &str = "missing-at-source:";

/// A reference to row `key` as JSON after its column's `json_prefix`: by its identity, or as
/// unresolved.
fn write_reference(out: &mut Vec<u8>, json_prefix: &[u8], identity: Option<&Identity>, key: i64) {
    match identity {
        Some(identity) => json::write_ref_after(out, json_prefix, identity.as_str()),
        None => json::write_ref_after(out, json_prefix, unresolved(key).as_str()),
    }
}

/// The value as an integer key (ints, or digits in text).
pub(crate) fn sql_int(value: &Sql) -> Option<i64> {
    match value {
        Sql::Int(v) => Some(*v),
        Sql::UInt(v) => i64::try_from(*v).ok(),
        Sql::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// The value as UTF-8 text, borrowed.
fn sql_str(value: &Sql) -> Option<&str> {
    match value {
        Sql::Bytes(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

/// The value as UTF-8 text.
pub(crate) fn sql_text(value: &Sql) -> Option<String> {
    match value {
        Sql::Bytes(b) => String::from_utf8(b.clone()).ok(),
        _ => None,
    }
}

/// Turns a transaction (or part, or snapshot chunk) into row changes: type formats for
/// polymorphic columns are made known and the rows teach the cache their own keys; then rows
/// are written until one refers to a key the cache lacks. Only then are the keys the rest of
/// the rows lack gathered and fetched from the site in one batched pass, and the rest written
/// (a warm cache costs one lookup per reference, not two).
pub async fn annotate(
    raw: RawTransaction,
    schema: &SchemaMap,
    cache: &mut IdentityCache,
    formats: &mut AttributeFormats,
    conn: &mut mysql_async::Conn,
    database: &str,
) -> Result<CapturedTransaction, CaptureError> {
    cache.begin_transaction();
    formats.prepare(&raw.rows, schema, conn, database).await?;
    let mut annotator = Annotator::new(schema, cache, formats);
    let identities = annotator.learn(&raw.rows);
    let mut captured = CapturedTransaction::for_rows_of(&raw);
    if let Written::UnknownKeyAt(at) =
        annotator.write_rows(&raw, &identities, 0, OnUnknownKey::Stop, &mut captured)
    {
        let rest = raw.rows.get(at..).unwrap_or_default();
        let wanted = annotator.wanted(images(rest));
        cache.fetch_missing(conn, database, &wanted).await?;
        Annotator::new(schema, cache, formats).write_rows(
            &raw,
            &identities,
            at,
            OnUnknownKey::WriteUnresolved,
            &mut captured,
        );
    }
    Ok(captured)
}

/// Every image of a raw row, with its table, for learning and lookups.
pub fn images(rows: &[RawRow]) -> impl Iterator<Item = (&str, &RawImage)> {
    rows.iter().flat_map(|r| {
        r.before
            .iter()
            .chain(r.after.iter())
            .map(move |image| (&*r.table, image))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::captured::payload_json;
    use crate::event_fuzzing::{recorded_transactions, schema};
    use tributary_model::{BatchPayload, Origin};

    /// The payload JSON of `raw`, annotated with what its own rows teach the cache (the
    /// recording's self-references), the other references unresolved.
    fn annotated(raw: &RawTransaction, cache: &mut IdentityCache) -> Vec<u8> {
        let formats = AttributeFormats::default();
        cache.begin_transaction();
        let mut annotator = Annotator::new(schema(), cache, &formats);
        let identities = annotator.learn(&raw.rows);
        let transaction = annotator.transaction(raw, &identities);
        payload_json(Origin::Binlog, &[transaction], None)
    }

    #[test]
    fn writing_stops_at_the_first_unknown_key_and_resumes_to_the_same_rows() {
        let formats = AttributeFormats::default();
        let mut stops = 0;
        for raw in recorded_transactions() {
            let in_one_go = annotated(&raw, &mut IdentityCache::new(1_000));
            let mut cache = IdentityCache::new(1_000);
            cache.begin_transaction();
            let mut annotator = Annotator::new(schema(), &mut cache, &formats);
            let identities = annotator.learn(&raw.rows);
            let mut captured = CapturedTransaction::for_rows_of(&raw);
            let written =
                annotator.write_rows(&raw, &identities, 0, OnUnknownKey::Stop, &mut captured);
            if let Written::UnknownKeyAt(at) = written {
                stops += 1;
                assert!(captured.row_count() <= at, "nothing from row {at} on");
                // What the lookups would bring is not there: the rest travels unresolved.
                let rest = annotator.write_rows(
                    &raw,
                    &identities,
                    at,
                    OnUnknownKey::WriteUnresolved,
                    &mut captured,
                );
                assert_eq!(rest, Written::All);
            }
            let resumed = payload_json(Origin::Binlog, &[captured], None);
            assert_eq!(
                String::from_utf8_lossy(&resumed),
                String::from_utf8_lossy(&in_one_go)
            );
        }
        assert!(stops > 0, "a recorded row refers to a key nothing taught");
    }

    #[test]
    fn rows_written_from_binlog_values_equal_rows_built_from_travelling_values() {
        let (mut rows, mut resolved) = (0, 0);
        let (mut direct_cache, mut values_cache) =
            (IdentityCache::new(1_000), IdentityCache::new(1_000));
        for raw in recorded_transactions() {
            let through_values = RawTransaction {
                rows: raw
                    .rows
                    .iter()
                    .cloned()
                    .map(|row| RawRow {
                        before: row.before.map(RawImage::without_travelling_names),
                        after: row.after.map(RawImage::without_travelling_names),
                        ..row
                    })
                    .collect(),
                gtid: raw.gtid.clone(),
                committed_at: raw.committed_at,
                part: raw.part,
            };
            let direct = annotated(&raw, &mut direct_cache);
            let expected = annotated(&through_values, &mut values_cache);
            assert_eq!(
                String::from_utf8_lossy(&direct),
                String::from_utf8_lossy(&expected)
            );
            let payload: BatchPayload = serde_json::from_slice(&direct).expect("payload JSON");
            rows += payload.row_count();
            resolved += payload.transactions[0]
                .rows
                .iter()
                .flat_map(|row| row.references())
                .filter(|(_, to)| !to.identity.as_str().starts_with(UNRESOLVED_PREFIX))
                .count();
        }
        assert_eq!(rows, 7, "every recorded row change travels");
        assert!(resolved > 0, "a self-reference resolves through the cache");
    }
}
