//! Verification: does HQ hold every synced row of a site, equal to the site's, when rows are
//! compared by identity and references are compared as identities?
//!
//! Each side is read independently (binary protocol, UTC), every integer reference is turned
//! into the referenced row's identity using that side's own tables, and surrogate keys are
//! left out: so a row matches only if the applier translated every reference correctly. HQ
//! may hold more rows (other sites, HQ's own); only the site's rows are checked. Reports name
//! tables and columns, never values.
//!
//! Memory: each compared table and each referenced root's key -> uuid map is held whole; this
//! is a tool for demo- and test-sized data and for spot checks of chosen tables.

use anyhow::{Context, Result};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder, Row, Value as Sql};
use std::collections::{BTreeMap, HashMap};
use tributary_model::{Identity, RowRef, Value};
use tributary_schema::{
    Catalog, CatalogColumn, Policy, PolymorphicColumn, SchemaMap, TableMap, quote_ident, to_value,
};

/// Tables the demo and the tests check by default: the clinical core.
pub const CLINICAL_TABLES: &[&str] = &[
    "person",
    "person_name",
    "patient",
    "patient_identifier",
    "visit",
    "encounter",
    "obs",
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableReport {
    pub table: String,
    pub site_rows: u64,
    pub matched: u64,
    pub missing_at_hq: u64,
    pub different: u64,
    /// Columns that differed, with how many rows differed in each.
    pub differing_columns: BTreeMap<String, u64>,
}

impl TableReport {
    pub fn ok(&self) -> bool {
        self.missing_at_hq == 0 && self.different == 0
    }
}

pub async fn verify(
    site: &Opts,
    site_db: &str,
    hq: &Opts,
    hq_db: &str,
    policy: &Policy,
    tables: &[&str],
) -> Result<Vec<TableReport>> {
    let mut site = Side::open(site, site_db, policy)
        .await
        .context("site database")?;
    let mut hq = Side::open(hq, hq_db, policy).await.context("HQ database")?;
    let mut reports = Vec::new();
    for table in tables {
        let site_rows = site.rows(table).await?;
        let hq_rows = hq.rows(table).await?;
        let mut report = TableReport {
            table: (*table).to_owned(),
            site_rows: site_rows.len() as u64,
            ..TableReport::default()
        };
        for (identity, columns) in &site_rows {
            match hq_rows.get(identity) {
                None => report.missing_at_hq += 1,
                Some(hq_columns) => {
                    let differing: Vec<&String> = columns
                        .iter()
                        .filter(|(c, v)| hq_columns.get(*c) != Some(*v))
                        .map(|(c, _)| c)
                        .collect();
                    if differing.is_empty() {
                        report.matched += 1;
                    } else {
                        report.different += 1;
                        for c in differing {
                            *report.differing_columns.entry(c.clone()).or_default() += 1;
                        }
                    }
                }
            }
        }
        reports.push(report);
    }
    Ok(reports)
}

/// One database, read with its own schema map.
struct Side {
    conn: Conn,
    database: String,
    schema: SchemaMap,
    /// (root table, key) -> identity, loaded per root on first use.
    identities: HashMap<String, HashMap<i64, Identity>>,
    /// (type table, key) -> format, for polymorphic references, loaded on first use.
    formats: HashMap<String, HashMap<i64, String>>,
}

type Rows = HashMap<Identity, BTreeMap<String, Value>>;

impl Side {
    async fn open(opts: &Opts, database: &str, policy: &Policy) -> Result<Side> {
        let opts = OptsBuilder::from_opts(opts.clone()).init(vec!["SET time_zone = '+00:00'"]);
        let mut conn = Conn::new(opts).await?;
        let catalog = Catalog::introspect(&mut conn, database).await?;
        let schema = SchemaMap::build(&catalog, policy)?;
        Ok(Side {
            conn,
            database: database.to_owned(),
            schema,
            identities: HashMap::new(),
            formats: HashMap::new(),
        })
    }

    async fn rows(&mut self, table: &str) -> Result<Rows> {
        let map = self
            .schema
            .table(table)
            .with_context(|| format!("`{table}` is not a synced table of `{}`", self.database))?
            .clone();
        for target in map.references.values() {
            self.load_identities(target).await?;
        }
        for column in &map.polymorphic {
            for target in column.targets.values() {
                self.load_identities(target).await?;
            }
            self.load_formats(column).await?;
        }
        let columns: Vec<String> = map.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let sql = format!(
            "SELECT {} FROM {}.{}",
            columns.join(", "),
            quote_ident(&self.database),
            quote_ident(table)
        );
        let rows: Vec<Row> = self.conn.exec(sql, ()).await?;
        let mut out = HashMap::with_capacity(rows.len());
        for row in rows {
            let columns = self.canonical(&map, row);
            if let Some(identity) = map.identity_of(|c| columns.get(c)) {
                out.insert(identity, columns);
            }
        }
        Ok(out)
    }

    fn canonical(&self, map: &TableMap, row: Row) -> BTreeMap<String, Value> {
        let values: Vec<(&CatalogColumn, Sql)> = map.columns.iter().zip(row.unwrap()).collect();
        let mut columns = BTreeMap::new();
        for (column, sql) in &values {
            if map.surrogate_key.as_deref() == Some(column.name.as_str()) {
                continue;
            }
            let polymorphic = map
                .polymorphic
                .iter()
                .find(|p| p.column == column.name)
                .and_then(|p| self.polymorphic_target(p, &values));
            let value = match (map.references.get(&column.name), sql, polymorphic) {
                (Some(target), Sql::Int(key), _) => Value::Ref(self.reference(target, *key)),
                (None, _, Some((target, key))) => Value::Ref(self.reference(target, key)),
                _ => to_value(sql.clone(), column.kind),
            };
            columns.insert(column.name.clone(), value);
        }
        columns
    }

    fn reference(&self, target: &str, key: i64) -> RowRef {
        let identity = self
            .identities
            .get(&self.root_of(target))
            .and_then(|m| m.get(&key))
            .cloned()
            .unwrap_or_else(|| Identity::from_raw(format!("dangling:{key}")));
        RowRef::new(target, identity)
    }

    /// The (table, id) a polymorphic column refers to in this row, as capture reads it.
    fn polymorphic_target<'p>(
        &self,
        column: &'p PolymorphicColumn,
        values: &[(&CatalogColumn, Sql)],
    ) -> Option<(&'p str, i64)> {
        let value_of = |name: &str| values.iter().find(|(c, _)| c.name == name).map(|(_, v)| v);
        let type_id = match value_of(&column.type_column)? {
            Sql::Int(id) => *id,
            _ => return None,
        };
        let format = self.formats.get(&column.type_table)?.get(&type_id)?;
        let target = column.target(format)?;
        let id = match value_of(&column.column)? {
            Sql::Bytes(text) => std::str::from_utf8(text).ok()?.trim().parse().ok()?,
            _ => return None,
        };
        Some((target, id))
    }

    async fn load_formats(&mut self, column: &PolymorphicColumn) -> Result<()> {
        if self.formats.contains_key(&column.type_table) {
            return Ok(());
        }
        let sql = format!(
            "SELECT {}, {} FROM {}.{}",
            quote_ident(&column.type_key),
            quote_ident(&column.format_column),
            quote_ident(&self.database),
            quote_ident(&column.type_table)
        );
        let pairs: Vec<(i64, Option<String>)> = self.conn.exec(sql, ()).await?;
        let map = pairs
            .into_iter()
            .filter_map(|(k, f)| f.map(|f| (k, f)))
            .collect();
        self.formats.insert(column.type_table.clone(), map);
        Ok(())
    }

    fn root_of(&self, table: &str) -> String {
        self.schema
            .table(table)
            .and_then(|t| t.identity_source.as_ref())
            .map_or_else(|| table.to_owned(), |s| s.root.clone())
    }

    async fn load_identities(&mut self, target: &str) -> Result<()> {
        let Some(source) = self
            .schema
            .table(target)
            .and_then(|t| t.identity_source.clone())
        else {
            return Ok(());
        };
        if self.identities.contains_key(&source.root) {
            return Ok(());
        }
        let sql = format!(
            "SELECT {}, {} FROM {}.{}",
            quote_ident(&source.key_column),
            quote_ident(&source.uuid_column),
            quote_ident(&self.database),
            quote_ident(&source.root)
        );
        let pairs: Vec<(i64, Option<String>)> = self.conn.exec(sql, ()).await?;
        let map = pairs
            .into_iter()
            .filter_map(|(k, u)| u.map(|u| (k, Identity::from_uuid(&u))))
            .collect();
        self.identities.insert(source.root, map);
        Ok(())
    }
}
