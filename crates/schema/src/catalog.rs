//! The source of truth about a database's structure: what `information_schema` says.
//!
//! Read once per start (and again after DDL); everything else about identity is derived from
//! this plus the policy file. Only the catalog is trusted for table and column names; they are
//! still quoted wherever they reach SQL.

use crate::error::SchemaError;
use mysql_async::consts::ColumnType;
use mysql_async::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a column's values are represented, as far as replication cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColumnKind {
    Integer,
    Float,
    Double,
    Decimal,
    Text,
    Binary,
    Date,
    DateTime,
    Timestamp,
    Time,
    Year,
    Other,
}

impl ColumnKind {
    fn from_data_type(data_type: &str) -> ColumnKind {
        match data_type {
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => {
                ColumnKind::Integer
            }
            "float" => ColumnKind::Float,
            "double" | "real" => ColumnKind::Double,
            "decimal" | "numeric" => ColumnKind::Decimal,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum"
            | "set" | "json" => ColumnKind::Text,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" | "bit" => {
                ColumnKind::Binary
            }
            "date" => ColumnKind::Date,
            "datetime" => ColumnKind::DateTime,
            "timestamp" => ColumnKind::Timestamp,
            "time" => ColumnKind::Time,
            "year" => ColumnKind::Year,
            _ => ColumnKind::Other,
        }
    }

    /// The kind a binlog TABLE_MAP gives a column (its type code and, for strings, whether the
    /// charset is `binary`, 63): rows are decoded with the schema of their own position.
    pub fn from_column_type(column_type: ColumnType, charset: u16) -> ColumnKind {
        use ColumnType::*;
        const BINARY_CHARSET: u16 = 63;
        match column_type {
            MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG
            | MYSQL_TYPE_LONGLONG => ColumnKind::Integer,
            MYSQL_TYPE_FLOAT => ColumnKind::Float,
            MYSQL_TYPE_DOUBLE => ColumnKind::Double,
            MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => ColumnKind::Decimal,
            MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => ColumnKind::Date,
            MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => ColumnKind::DateTime,
            MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => ColumnKind::Timestamp,
            MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => ColumnKind::Time,
            MYSQL_TYPE_YEAR => ColumnKind::Year,
            MYSQL_TYPE_BIT | MYSQL_TYPE_GEOMETRY => ColumnKind::Binary,
            MYSQL_TYPE_VARCHAR
            | MYSQL_TYPE_VAR_STRING
            | MYSQL_TYPE_STRING
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB
            | MYSQL_TYPE_BLOB => {
                if charset == BINARY_CHARSET {
                    ColumnKind::Binary
                } else {
                    ColumnKind::Text
                }
            }
            MYSQL_TYPE_JSON | MYSQL_TYPE_ENUM | MYSQL_TYPE_SET => ColumnKind::Text,
            _ => ColumnKind::Other,
        }
    }

    pub fn is_integer(self) -> bool {
        self == ColumnKind::Integer
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatalogColumn {
    pub name: String,
    pub kind: ColumnKind,
    pub nullable: bool,
    pub auto_increment: bool,
    /// An UNSIGNED integer: a binlog written without `binlog_row_metadata=FULL` does not say so.
    #[serde(default)]
    pub unsigned: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForeignKey {
    pub column: String,
    pub parent_table: String,
    pub parent_column: String,
    /// `ON DELETE` / `ON UPDATE` rules other than RESTRICT / NO ACTION. InnoDB carries out
    /// cascades inside the engine, so their effects never reach the binlog: HQ must have the
    /// same rules to stay equal (`tributary schema show` lists them).
    #[serde(default)]
    pub cascades: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatalogTable {
    pub name: String,
    /// In ordinal order.
    pub columns: Vec<CatalogColumn>,
    /// Primary key columns in key order; empty when the table has none.
    pub primary_key: Vec<String>,
    pub foreign_keys: Vec<ForeignKey>,
    /// Columns that are a unique key on their own (catalogs saved before this was read have
    /// none, which only costs the applier a lookup).
    #[serde(default)]
    pub unique_columns: Vec<String>,
}

impl CatalogTable {
    pub fn column(&self, name: &str) -> Option<&CatalogColumn> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// (table, constraint, column, referenced table, referenced column) from KEY_COLUMN_USAGE.
type KeyColumnUsage = (String, String, String, Option<String>, Option<String>);

/// All base tables of one database schema.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Catalog {
    pub database: String,
    pub tables: BTreeMap<String, CatalogTable>,
}

impl Catalog {
    /// Reads tables, columns, primary keys and single-column foreign keys of `database`.
    pub async fn introspect(
        conn: &mut mysql_async::Conn,
        database: &str,
    ) -> Result<Catalog, SchemaError> {
        let introspection = |source| SchemaError::Introspection {
            database: database.to_owned(),
            source,
        };
        let mut tables: BTreeMap<String, CatalogTable> = BTreeMap::new();
        let names: Vec<String> = conn
            .exec(
                "SELECT TABLE_NAME FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE'",
                (database,),
            )
            .await
            .map_err(introspection)?;
        for name in names {
            tables.insert(
                name.clone(),
                CatalogTable {
                    name,
                    columns: Vec::new(),
                    primary_key: Vec::new(),
                    foreign_keys: Vec::new(),
                    unique_columns: Vec::new(),
                },
            );
        }
        if tables.is_empty() {
            return Err(SchemaError::EmptyDatabase(database.to_owned()));
        }

        let columns: Vec<mysql_async::Row> = conn
            .exec(
                "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, IS_NULLABLE, EXTRA, COLUMN_TYPE \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? \
                 ORDER BY TABLE_NAME, ORDINAL_POSITION",
                (database,),
            )
            .await
            .map_err(introspection)?;
        for row in columns {
            let text = |i: usize| row.get::<String, _>(i).unwrap_or_default();
            if let Some(t) = tables.get_mut(&text(0)) {
                t.columns.push(CatalogColumn {
                    name: text(1),
                    kind: ColumnKind::from_data_type(&text(2).to_ascii_lowercase()),
                    nullable: text(3) == "YES",
                    auto_increment: text(4).to_ascii_lowercase().contains("auto_increment"),
                    unsigned: text(5).to_ascii_lowercase().contains("unsigned"),
                });
            }
        }

        let keys: Vec<KeyColumnUsage> = conn
            .exec(
                "SELECT TABLE_NAME, CONSTRAINT_NAME, COLUMN_NAME, \
                        REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME \
                 FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = ? \
                 ORDER BY TABLE_NAME, CONSTRAINT_NAME, ORDINAL_POSITION",
                (database,),
            )
            .await
            .map_err(introspection)?;
        let mut fk_columns: BTreeMap<(String, String), Vec<ForeignKey>> = BTreeMap::new();
        let mut unique_keys: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for (table, constraint, column, parent_table, parent_column) in keys {
            let Some(t) = tables.get_mut(&table) else {
                continue;
            };
            if constraint == "PRIMARY" {
                t.primary_key.push(column);
            } else if parent_table.is_none() {
                // Key columns without a referenced table: a unique constraint.
                unique_keys
                    .entry((table, constraint))
                    .or_default()
                    .push(column);
            } else if let (Some(parent_table), Some(parent_column)) = (parent_table, parent_column)
            {
                fk_columns
                    .entry((table, constraint))
                    .or_default()
                    .push(ForeignKey {
                        column,
                        parent_table,
                        parent_column,
                        cascades: Vec::new(),
                    });
            }
        }
        let rules: Vec<(String, String, String, String)> = conn
            .exec(
                "SELECT TABLE_NAME, CONSTRAINT_NAME, DELETE_RULE, UPDATE_RULE \
                 FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = ?",
                (database,),
            )
            .await
            .map_err(introspection)?;
        for (table, constraint, on_delete, on_update) in rules {
            if let Some(parts) = fk_columns.get_mut(&(table, constraint)) {
                let mut cascades = Vec::new();
                for (event, rule) in [("DELETE", on_delete), ("UPDATE", on_update)] {
                    if !matches!(rule.as_str(), "RESTRICT" | "NO ACTION") {
                        cascades.push(format!("ON {event} {rule}"));
                    }
                }
                for part in parts.iter_mut() {
                    part.cascades.clone_from(&cascades);
                }
            }
        }
        for ((table, _), mut columns) in unique_keys {
            if columns.len() == 1
                && let Some(t) = tables.get_mut(&table)
            {
                t.unique_columns.push(columns.remove(0));
            }
        }
        for ((table, _), mut parts) in fk_columns {
            // Composite foreign keys do not occur in OpenMRS; a single-column key is what
            // identity translation can carry, so only those are recorded.
            if parts.len() == 1
                && let Some(t) = tables.get_mut(&table)
            {
                t.foreign_keys.push(parts.remove(0));
            }
        }
        Ok(Catalog {
            database: database.to_owned(),
            tables,
        })
    }
}
