//! The formats of attribute types, for polymorphic references: `person_attribute.value` is a
//! location id when its type's format is `org.openmrs.Location`, plain text otherwise. Capture
//! learns formats from the type rows it streams and asks the site for the others; attribute
//! types are few (tens), so the cache is small and bounded by that.

use crate::annotate::{sql_int, sql_text};
use crate::binlog::{RawImage, RawRow};
use crate::error::CaptureError;
use mysql_async::Conn;
use mysql_async::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tributary_schema::{PolymorphicColumn, SchemaMap, TableMap, quote_ident};

/// At most this many type formats are cached; past it the cache starts over (types are few).
const CAPACITY: usize = 10_000;

#[derive(Default)]
pub struct AttributeFormats {
    formats: HashMap<(String, i64), Option<String>>,
}

impl AttributeFormats {
    pub fn get(&self, type_table: &str, id: i64) -> Option<&str> {
        self.formats
            .get(&(type_table.to_owned(), id))
            .and_then(|f| f.as_deref())
    }

    fn put(&mut self, type_table: &str, id: i64, format: Option<String>) {
        if self.formats.len() >= CAPACITY {
            self.formats.clear();
        }
        self.formats.insert((type_table.to_owned(), id), format);
    }

    /// Learns the formats of type rows in `rows` and fetches, in one query per type table,
    /// the formats the polymorphic columns of `rows` need.
    pub async fn prepare(
        &mut self,
        rows: &[RawRow],
        schema: &SchemaMap,
        conn: &mut Conn,
        database: &str,
    ) -> Result<(), CaptureError> {
        let columns: Vec<&PolymorphicColumn> =
            schema.tables().flat_map(|t| t.polymorphic.iter()).collect();
        if columns.is_empty() {
            return Ok(());
        }
        for row in rows {
            for column in columns.iter().filter(|c| c.type_table == *row.table) {
                if let Some(image) = &row.after
                    && let Some(id) = image.get(&column.type_key).and_then(sql_int)
                {
                    self.put(
                        &column.type_table,
                        id,
                        image.get(&column.format_column).and_then(sql_text),
                    );
                }
            }
        }
        // The few tables with polymorphic columns, compared by name: most rows are of
        // others, and finding them out costs no hashing.
        let polymorphic_tables: Vec<&TableMap> = schema
            .tables()
            .filter(|t| !t.polymorphic.is_empty())
            .collect();
        let mut wanted: BTreeMap<(&str, &str, &str), BTreeSet<i64>> = BTreeMap::new();
        for row in rows {
            let Some(map) = polymorphic_tables.iter().find(|t| *t.name == *row.table) else {
                continue;
            };
            for column in &map.polymorphic {
                for image in row.before.iter().chain(row.after.iter()) {
                    if let Some(id) = image.get(&column.type_column).and_then(sql_int)
                        && !self.formats.contains_key(&(column.type_table.clone(), id))
                    {
                        wanted
                            .entry((&column.type_table, &column.type_key, &column.format_column))
                            .or_default()
                            .insert(id);
                    }
                }
            }
        }
        for ((type_table, key, format), ids) in wanted {
            let ids: Vec<i64> = ids.into_iter().collect();
            let sql = format!(
                "SELECT {k}, {f} FROM {db}.{t} WHERE {k} IN ({marks})",
                k = quote_ident(key),
                f = quote_ident(format),
                db = quote_ident(database),
                t = quote_ident(type_table),
                marks = vec!["?"; ids.len()].join(","),
            );
            let found: Vec<mysql_async::Row> = conn.exec(sql, ids.clone()).await?;
            for id in &ids {
                self.put(type_table, *id, None);
            }
            for mut row in found {
                if let Some(Ok(id)) = row.take_opt::<i64, _>(0) {
                    let format = row
                        .take_opt::<Option<String>, _>(1)
                        .and_then(Result::ok)
                        .flatten();
                    self.put(type_table, id, format);
                }
            }
        }
        Ok(())
    }

    /// The (target table, id) a polymorphic column of `image` refers to, if its type's format
    /// makes it a reference and the value is an integer.
    pub fn target<'c>(
        &self,
        column: &'c PolymorphicColumn,
        image: &RawImage,
    ) -> Option<(&'c str, i64)> {
        let type_id = image.get(&column.type_column).and_then(sql_int)?;
        let target = column.target(self.get(&column.type_table, type_id)?)?;
        let id = image
            .get(&column.column)
            .and_then(sql_text)?
            .trim()
            .parse()
            .ok()?;
        Some((target, id))
    }
}
