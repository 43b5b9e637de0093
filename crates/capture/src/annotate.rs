//! Annotation: raw source rows become travelling [`RowChange`]s.
//!
//! For each row: keep the synced columns, drop the surrogate key, convert values by column
//! kind, and replace every integer reference with the referenced row's identity. The
//! transaction's rows first teach the cache their own keys (a visit inserted in the same
//! transaction as its encounter needs no lookup), then the keys still unknown are fetched from
//! the source in one batched pass, then the rows are built.
//!
//! A reference the source can no longer resolve (the parent was deleted before capture got
//! here) travels as an identity marked `missing-at-source:`; HQ parks the row with that reason
//! rather than inventing a parent.

use crate::attribute_formats::AttributeFormats;
use crate::binlog::{RawImage, RawRow, RawTransaction};
use crate::error::CaptureError;
use crate::identities::IdentityCache;
use crate::table_layout::{ColumnInfo, ColumnRole};
use mysql_async::Value as Sql;
use std::collections::BTreeSet;
use std::sync::Arc;
use tributary_model::{Columns, Identity, Op, RowChange, RowRef, SourceTransaction, Value};
use tributary_schema::{IdentityRule, IdentitySource, SchemaMap, TableMap, to_value};

/// Turns raw rows into row changes, resolving references through `cache` and `lookup`.
pub struct Annotator<'a> {
    pub schema: &'a SchemaMap,
    pub cache: &'a mut IdentityCache,
    pub formats: &'a AttributeFormats,
}

impl Annotator<'_> {
    /// Teaches the cache the keys of uuid rows in `rows`.
    pub fn learn<'r>(&mut self, rows: impl Iterator<Item = (&'r str, &'r RawImage)>) {
        for (table, image) in rows {
            let Some(map) = self.schema.table(table) else {
                continue;
            };
            let (Some(key), IdentityRule::OwnUuid { column }) = (&map.surrogate_key, &map.identity)
            else {
                continue;
            };
            let key = image.get(key).and_then(sql_int);
            let uuid = image.get(column).and_then(sql_str);
            if let (Some(key), Some(uuid)) = (key, uuid) {
                self.cache.learn(&map.name, key, Identity::from_uuid(uuid));
            }
        }
    }

    /// The (identity source, key) pairs `rows` refer to that the cache does not hold yet.
    pub fn wanted<'r>(
        &mut self,
        rows: impl Iterator<Item = (&'r str, &'r RawImage)>,
    ) -> BTreeSet<(IdentitySource, i64)> {
        let mut wanted = BTreeSet::new();
        for (table, image) in rows {
            let Some(map) = self.schema.table(table) else {
                continue;
            };
            // Declared references know their identity root: a cached key costs one lookup.
            for (column, value) in image.iter() {
                if let ColumnRole::Reference {
                    target,
                    root: Some(root),
                } = &column.role
                    && let Some(key) = sql_int(value)
                    && !self.cache.pin(root, key)
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

    pub fn transaction(&mut self, raw: RawTransaction) -> Result<SourceTransaction, CaptureError> {
        let mut rows = Vec::with_capacity(raw.rows.len());
        for row in raw.rows {
            if let Some(change) = self.row(row) {
                rows.push(change);
            }
        }
        Ok(SourceTransaction {
            gtid: raw.gtid.map(|g| g.to_string()),
            committed_at: raw.committed_at,
            rows,
            part: raw.part,
        })
    }

    /// Builds one row change from a full row image (snapshot rows arrive as inserts).
    pub fn row(&mut self, row: RawRow) -> Option<RowChange> {
        let schema = self.schema;
        let map = schema.table(&row.table)?;
        let (identity, columns) = match row.op {
            Op::Insert | Op::Delete => {
                let image = if row.op == Op::Insert {
                    row.after?
                } else {
                    row.before?
                };
                let columns = self.columns(map, image);
                (map.identity_of(|c| columns.get(c))?, columns)
            }
            Op::Update => {
                // The before image only identifies the row: just the columns the identity
                // rule reads are converted.
                let identifying = map.identity_columns();
                let before = self.columns_of(map, row.before?, Some(&identifying));
                let identity = map.identity_of(|c| before.get(c))?;
                (identity, self.columns(map, row.after?))
            }
        };
        if let Some(filter) = &map.row_filter {
            // Only the named settings travel (`[sync] global_properties`).
            let name = columns.get(&filter.column).and_then(Value::as_text);
            name.and_then(|name| filter.matching(name))?;
        }
        Some(RowChange {
            table: map.name.clone(),
            op: row.op,
            identity,
            columns,
        })
    }

    /// The travelling columns of one image. Values are converted by the kind the row's own
    /// TABLE_MAP gives (not today's catalog); a column the catalog does not know (added or
    /// dropped by DDL since) still travels as a plain value, unless the policy keeps it home.
    fn columns(&mut self, map: &TableMap, image: RawImage) -> Columns {
        self.columns_of(map, image, None)
    }

    /// The travelling columns of one image, or of those named in `only`.
    fn columns_of(&mut self, map: &TableMap, image: RawImage, only: Option<&[&str]>) -> Columns {
        // Polymorphic targets read other columns of the image: resolve them before the
        // values are taken apart.
        let polymorphic: Vec<(&str, (&str, i64))> = map
            .polymorphic
            .iter()
            .filter_map(|c| Some((c.column.as_str(), self.formats.target(c, &image)?)))
            .collect();
        // A subset of the columns does not line up with the shape's travelling names.
        let travelling = image.travelling().cloned().filter(|_| only.is_none());
        let (names, values) = image.into_parts();
        // The kept columns are listed only for images whose travelling names are not known.
        let mut kept: Option<Vec<&ColumnInfo>> = travelling
            .is_none()
            .then(|| Vec::with_capacity(values.len()));
        let mut kept_values = Vec::with_capacity(values.len());
        for (column, value) in names.iter().zip(values) {
            if only.is_some_and(|only| !only.contains(&&*column.name)) {
                continue;
            }
            let value = match &column.role {
                ColumnRole::Local => continue,
                ColumnRole::Reference { target, root } => match sql_int(&value) {
                    Some(key) => Value::Ref(self.reference_by_root(target, root.as_deref(), key)),
                    None => to_value(value, column.kind),
                },
                ColumnRole::Polymorphic => match polymorphic
                    .iter()
                    .find(|(c, _)| *c == &*column.name)
                    .map(|(_, target)| *target)
                {
                    Some((target, key)) => Value::Ref(self.reference(target.into(), key)),
                    None => to_value(value, column.kind),
                },
                ColumnRole::Plain => to_value(value, column.kind),
            };
            if let Some(kept) = &mut kept {
                kept.push(column);
            }
            kept_values.push(value);
        }
        // Binlog images come sorted by name with their travelling names worked out once per
        // shape: the row takes one reference to those names. Other images (snapshot rows)
        // are sorted here.
        let kept_values = match travelling {
            Some(travelling) => match Columns::with_names(travelling, kept_values) {
                Ok(columns) => return columns,
                Err(values) => values,
            },
            None => kept_values,
        };
        let kept = kept.unwrap_or_else(|| {
            names
                .iter()
                .filter(|c| c.role != ColumnRole::Local)
                .collect()
        });
        kept.into_iter()
            .map(|column| Arc::clone(&column.name))
            .zip(kept_values)
            .collect()
    }

    /// A reference whose identity root is already known (declared references).
    fn reference_by_root(&mut self, target: &Arc<str>, root: Option<&str>, key: i64) -> RowRef {
        let identity = root
            .and_then(|root| self.cache.get(root, key))
            .unwrap_or_else(|| Identity::from_raw(format!("missing-at-source:{key}")));
        RowRef::new(Arc::clone(target), identity)
    }

    fn reference(&mut self, target: Arc<str>, key: i64) -> RowRef {
        let identity = self
            .schema
            .table(&target)
            .and_then(|t| t.identity_source.as_ref())
            .and_then(|source| self.cache.get(&source.root, key))
            .unwrap_or_else(|| Identity::from_raw(format!("missing-at-source:{key}")));
        RowRef::new(target, identity)
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
/// polymorphic columns are made known, the rows teach the cache their own keys, the keys still
/// unknown are fetched from the site in one batched pass, then the rows are built.
pub async fn annotate(
    raw: RawTransaction,
    schema: &SchemaMap,
    cache: &mut IdentityCache,
    formats: &mut AttributeFormats,
    conn: &mut mysql_async::Conn,
    database: &str,
) -> Result<SourceTransaction, CaptureError> {
    cache.begin_transaction();
    formats.prepare(&raw.rows, schema, conn, database).await?;
    let mut annotator = Annotator {
        schema,
        cache,
        formats,
    };
    annotator.learn(images(&raw.rows));
    let wanted = annotator.wanted(images(&raw.rows));
    cache.fetch_missing(conn, database, &wanted).await?;
    Annotator {
        schema,
        cache,
        formats,
    }
    .transaction(raw)
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
