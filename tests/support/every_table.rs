//! Writes one new row into every table of a database that the schema map syncs, the way a
//! clinic's use would: foreign keys point at rows that exist (a table's own new row first, then
//! any existing row), a subtype row gets a fresh parent row of its own, unique columns get
//! unique values, and every column is filled (nullable ones too), so that each reference and
//! each column type travels.
//!
//! Used by `tests/whole_schema.rs` to show that the whole OpenMRS core schema syncs.

use anyhow::{Context, Result, bail};
use mysql_async::prelude::*;
use mysql_async::{Conn, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use tributary_schema::{Catalog, Policy, SchemaMap};

/// table, column, data type, column type, maximum length, nullable, extra.
type ColumnRow = (String, String, String, String, Option<u64>, String, String);

/// A boxed future: inserting a row may first insert its parents (recursion).
type Inserting<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<HashMap<String, Value>>> + Send + 'a>>;

/// One column as information_schema describes it.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    data_type: String,
    column_type: String,
    max_length: Option<u64>,
    nullable: bool,
    auto_increment: bool,
}

#[derive(Debug, Clone)]
struct Table {
    columns: Vec<Column>,
    primary_key: Vec<String>,
    /// Column -> (parent table, parent column): declared keys and the schema map's undeclared
    /// references (to the target's primary key).
    references: BTreeMap<String, (String, String)>,
}

/// Fills every synced table of one database with a row of its own.
pub struct EveryTable {
    tables: BTreeMap<String, Table>,
    synced: Vec<String>,
    /// Rows this filler inserted, per table: column -> value.
    inserted: HashMap<String, Vec<HashMap<String, Value>>>,
    counter: u64,
}

impl EveryTable {
    /// Reads the database's tables and the schema map `policy` resolves for it.
    pub async fn read(conn: &mut Conn, database: &str, policy: &Policy) -> Result<EveryTable> {
        let catalog = Catalog::introspect(conn, database).await?;
        let map = SchemaMap::build(&catalog, policy)?;
        let synced: Vec<String> = map.tables().map(|t| t.name.clone()).collect();
        let rows: Vec<ColumnRow> = conn
            .exec(
                "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_MAXIMUM_LENGTH,
                        IS_NULLABLE, EXTRA
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ?
                 ORDER BY TABLE_NAME, ORDINAL_POSITION",
                (database,),
            )
            .await?;
        let mut tables: BTreeMap<String, Table> = BTreeMap::new();
        for (table, name, data_type, column_type, max_length, nullable, extra) in rows {
            let Some(catalog_table) = catalog.tables.get(&table) else {
                continue;
            };
            let entry = tables.entry(table.clone()).or_insert_with(|| Table {
                columns: Vec::new(),
                primary_key: catalog_table.primary_key.clone(),
                references: catalog_table
                    .foreign_keys
                    .iter()
                    .map(|fk| {
                        (
                            fk.column.clone(),
                            (fk.parent_table.clone(), fk.parent_column.clone()),
                        )
                    })
                    .collect(),
            });
            entry.columns.push(Column {
                name,
                data_type,
                column_type,
                max_length,
                nullable: nullable == "YES",
                auto_increment: extra.contains("auto_increment"),
            });
        }
        for reference in &policy.references {
            let target_key = catalog
                .tables
                .get(&reference.target)
                .and_then(|t| t.primary_key.first().cloned());
            if let (Some(table), Some(key)) = (tables.get_mut(&reference.table), target_key)
                && table.columns.iter().any(|c| c.name == reference.column)
            {
                table
                    .references
                    .insert(reference.column.clone(), (reference.target.clone(), key));
            }
        }
        Ok(EveryTable {
            tables,
            synced,
            inserted: HashMap::new(),
            counter: 0,
        })
    }

    /// The synced tables.
    pub fn synced(&self) -> &[String] {
        &self.synced
    }

    /// Inserts a row into every synced table that has none of this filler's rows yet.
    pub async fn fill(&mut self, conn: &mut Conn) -> Result<()> {
        for table in self.synced.clone() {
            if !self.inserted.contains_key(&table) {
                self.insert(conn, &table, &mut HashSet::new())
                    .await
                    .with_context(|| format!("filling `{table}`"))?;
            }
        }
        Ok(())
    }

    /// Changes one plain text column (not a key, reference or uuid) of every row this filler
    /// inserted; returns how many rows were changed.
    pub async fn touch(&mut self, conn: &mut Conn) -> Result<u64> {
        let mut changed = 0;
        for (table, rows) in &self.inserted {
            let Some(info) = self.tables.get(table) else {
                continue;
            };
            let Some(column) = info.columns.iter().find(|c| {
                matches!(
                    c.data_type.as_str(),
                    "varchar" | "text" | "mediumtext" | "longtext"
                ) && c.name != "uuid"
                    && !info.primary_key.contains(&c.name)
                    && !info.references.contains_key(&c.name)
                    && !self.tables.values().any(|t| {
                        t.references
                            .values()
                            .any(|(p, pc)| p == table && *pc == c.name)
                    })
            }) else {
                continue;
            };
            for row in rows {
                let keys: Vec<&String> = if info.primary_key.is_empty() {
                    info.columns.iter().map(|c| &c.name).collect()
                } else {
                    info.primary_key.iter().collect()
                };
                let clause: Vec<String> = keys.iter().map(|k| format!("`{k}` <=> ?")).collect();
                let max = column.max_length.unwrap_or(255) as usize;
                let edited: String = format!("e{changed}").chars().take(max).collect();
                let mut params: Vec<Value> = vec![Value::from(edited)];
                params.extend(
                    keys.iter()
                        .map(|k| row.get(*k).cloned().unwrap_or(Value::NULL)),
                );
                conn.exec_drop(
                    format!(
                        "UPDATE `{table}` SET `{}` = ? WHERE {}",
                        column.name,
                        clause.join(" AND ")
                    ),
                    params,
                )
                .await
                .with_context(|| format!("updating `{table}`"))?;
                changed += conn.affected_rows();
            }
        }
        Ok(changed)
    }

    /// Inserts one row into `table` and returns its values (the new id included).
    fn insert<'a>(
        &'a mut self,
        conn: &'a mut Conn,
        table: &'a str,
        path: &'a mut HashSet<String>,
    ) -> Inserting<'a> {
        Box::pin(async move {
            let Some(info) = self.tables.get(table).cloned() else {
                bail!("no table `{table}`");
            };
            path.insert(table.to_owned());
            let mut values: Vec<(String, Value)> = Vec::new();
            for column in &info.columns {
                if column.auto_increment {
                    continue;
                }
                let value = match info.references.get(&column.name) {
                    Some((parent, parent_column)) => {
                        let key_part = info.primary_key.contains(&column.name);
                        self.parent_value(conn, parent, parent_column, key_part, column, path)
                            .await?
                    }
                    None => self.value_for(column),
                };
                values.push((column.name.clone(), value));
            }
            path.remove(table);
            let columns: Vec<String> = values.iter().map(|(c, _)| format!("`{c}`")).collect();
            let marks = vec!["?"; values.len()].join(", ");
            let params: Vec<Value> = values.iter().map(|(_, v)| v.clone()).collect();
            conn.exec_drop(
                format!(
                    "INSERT INTO `{table}` ({}) VALUES ({marks})",
                    columns.join(", ")
                ),
                params,
            )
            .await
            .with_context(|| format!("inserting into `{table}`"))?;
            let mut row: HashMap<String, Value> = values.into_iter().collect();
            if let Some(column) = info.columns.iter().find(|c| c.auto_increment) {
                let id = conn.last_insert_id().context("no id for a new row")?;
                row.insert(column.name.clone(), Value::UInt(id));
            }
            self.inserted
                .entry(table.to_owned())
                .or_default()
                .push(row.clone());
            Ok(row)
        })
    }

    /// The value of a reference column: a fresh parent for a key column (a subtype row or a
    /// join row), else this filler's row of the parent, else a new one, else any existing row.
    async fn parent_value(
        &mut self,
        conn: &mut Conn,
        parent: &str,
        parent_column: &str,
        key_part: bool,
        column: &Column,
        path: &mut HashSet<String>,
    ) -> Result<Value> {
        let cycle = path.contains(parent);
        if key_part && !cycle {
            let row = self.insert(conn, parent, path).await?;
            return row
                .get(parent_column)
                .cloned()
                .with_context(|| format!("new `{parent}` row lacks `{parent_column}`"));
        }
        if let Some(value) = self
            .inserted
            .get(parent)
            .and_then(|rows| rows.first())
            .and_then(|row| row.get(parent_column))
        {
            return Ok(value.clone());
        }
        if !cycle && self.synced.iter().any(|t| t == parent) {
            let row = self.insert(conn, parent, path).await?;
            if let Some(value) = row.get(parent_column) {
                return Ok(value.clone());
            }
        }
        let existing: Option<Value> = conn
            .query_first(format!(
                "SELECT `{parent_column}` FROM `{parent}` ORDER BY 1 LIMIT 1"
            ))
            .await?;
        match existing {
            Some(value) => Ok(value),
            None if column.nullable => Ok(Value::NULL),
            None => bail!("`{}` needs a `{parent}` row and none exists", column.name),
        }
    }

    /// A value of the column's type, unique among this filler's values.
    fn value_for(&mut self, column: &Column) -> Value {
        self.counter += 1;
        let n = self.counter;
        let text = |s: String| {
            let max = column.max_length.unwrap_or(255) as usize;
            Value::from(s.chars().take(max).collect::<String>())
        };
        match column.data_type.as_str() {
            _ if column.name == "uuid" => {
                Value::from(format!("f111{n:04x}-0000-4000-8000-{n:012x}"))
            }
            "tinyint" if column.column_type.starts_with("tinyint(1)") => Value::Int(1),
            "tinyint" => Value::Int((n % 100) as i64),
            "smallint" | "mediumint" | "int" | "bigint" => Value::Int(7_000 + n as i64),
            "decimal" => Value::from(format!("{}.25", n % 1_000)),
            "double" | "float" => Value::Double(n as f64 + 0.5),
            "date" => Value::from("2024-03-04"),
            "datetime" | "timestamp" => Value::from("2024-03-04 05:06:07"),
            "time" => Value::from("05:06:07"),
            "year" => Value::Int(2024),
            "enum" => {
                let first = column
                    .column_type
                    .split('\'')
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                Value::from(first)
            }
            "bit" => Value::Bytes(vec![1]),
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                Value::Bytes(vec![0, 1, 2, (n % 256) as u8])
            }
            _ => text(format!("w{n} Ünïcödé")),
        }
    }
}
