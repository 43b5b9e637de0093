//! Verification: does HQ hold every synced row of a site, equal to the site's, when rows are
//! compared by identity and references are compared as identities?
//!
//! Each side is read with its own schema map (binary protocol, UTC). A row becomes its
//! *canonical* form: travelling columns only (the surrogate key is left out), every integer
//! reference (declared, undeclared, polymorphic) replaced by the referenced row's identity
//! looked up in that side's own tables. Its *digest* is a hash per column and a hash of the
//! row over them ([`digest`]); two rows match when their digests do, and differ in the columns
//! whose hashes differ. HQ's integer ids therefore never matter: a row matches only if the
//! applier translated every reference correctly.
//!
//! **Memory is bounded** whatever the table size: the site's table is streamed (one
//! statement, unordered) and cut into pages of [`VERIFY_PAGE_ROWS`]; for each page the
//! references are resolved with batched lookups, and HQ is asked for exactly the page's rows
//! by identity (`uuid IN (...)`, the root's uuid for inherited identities, the key columns
//! for natural keys). This is a lookup join rather than a merge join of two ordered streams:
//! ordering by identity in SQL would follow each server's collation, which need not agree
//! with byte order (or with the other server's), and uuids stored in mixed case would
//! interleave differently; looking rows up needs no common order, and uses HQ's uuid index.
//! Only the type tables of polymorphic columns (metadata) are held whole.
//!
//! **Extra rows.** HQ holds rows of many sites and its own, and keeps no record of which site
//! wrote a row (not built yet), so "rows HQ holds that this site lacks" is defined only when
//! the operator says HQ's rows of the compared tables all come from this site (a single-site
//! HQ, or tables only this site writes): `extra = true` then streams HQ's table the same way
//! and looks each page up at the site. Otherwise extra rows are reported as not checked.
//!
//! Reports name tables, columns and counts, never values. Identities are only handed to the
//! [`Findings`] sink (`findings.rs`), which prints them when the operator asked (`--list`,
//! `--out`).

use anyhow::{Context, Result, bail};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder, Row, Value as Sql};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tributary_model::{Identity, RowRef, Value};

pub use crate::findings::{Finding, Findings, Listed, read_findings};
use tributary_schema::{
    Catalog, CatalogColumn, IdentityRule, Policy, PolymorphicColumn, SchemaMap, TableMap,
    quote_ident, to_value,
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

/// Rows compared per page: the bound on what verification holds of a table at once.
pub const VERIFY_PAGE_ROWS: usize = 1_000;

/// Keys per lookup statement (references to identities).
const LOOKUP_KEYS: usize = 1_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableReport {
    pub table: String,
    pub site_rows: u64,
    pub matched: u64,
    pub missing_at_hq: u64,
    pub different: u64,
    /// Columns that differed, with how many rows differed in each.
    pub differing_columns: BTreeMap<String, u64>,
    /// Rows at HQ the site does not hold; `None` when not checked (see the module docs).
    pub extra_at_hq: Option<u64>,
    /// Site rows without an identity (a NULL uuid): they cannot travel, so are not compared.
    pub unidentified: u64,
    /// HQ's database has no such table (every site row is missing).
    pub hq_lacks_table: bool,
}

impl TableReport {
    pub fn ok(&self) -> bool {
        self.missing_at_hq == 0 && self.different == 0 && self.extra_at_hq.unwrap_or(0) == 0
    }
}

/// What to compare.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Tables to compare; empty: every synced table of the site's schema map.
    pub tables: Vec<String>,
    /// Also look for rows HQ holds that the site lacks (only meaningful when HQ's rows of
    /// these tables all come from this site; see the module docs).
    pub extra: bool,
    pub page_rows: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            tables: Vec::new(),
            extra: false,
            page_rows: VERIFY_PAGE_ROWS,
        }
    }
}

/// Compares `tables` of the site with HQ (no listing, no extra rows): the demo's and the
/// tests' check of the clinical core.
pub async fn verify(
    site: &Opts,
    site_db: &str,
    hq: &Opts,
    hq_db: &str,
    policy: &Policy,
    tables: &[&str],
) -> Result<Vec<TableReport>> {
    let options = VerifyOptions {
        tables: tables.iter().map(|t| (*t).to_owned()).collect(),
        ..VerifyOptions::default()
    };
    verify_tables(
        site,
        site_db,
        hq,
        hq_db,
        policy,
        &options,
        &mut Findings::none(),
    )
    .await
}

/// Compares the site with HQ table by table, page by page, reporting counts and handing
/// every disagreeing row's identity to `findings`.
pub async fn verify_tables(
    site: &Opts,
    site_db: &str,
    hq: &Opts,
    hq_db: &str,
    policy: &Policy,
    options: &VerifyOptions,
    findings: &mut Findings,
) -> Result<Vec<TableReport>> {
    let mut site = Side::open(site, site_db, policy)
        .await
        .context("site database")?;
    let mut hq = Side::open(hq, hq_db, policy).await.context("HQ database")?;
    let tables: Vec<String> = if options.tables.is_empty() {
        site.schema.tables().map(|t| t.name.clone()).collect()
    } else {
        for table in &options.tables {
            if site.schema.table(table).is_none() {
                bail!(
                    "`{table}` is not a synced table of the site database `{}` (excluded by \
                     the schema map, or it does not exist); `tributary schema show` lists them",
                    site.database
                );
            }
        }
        options.tables.clone()
    };
    let page_rows = options.page_rows.max(1);
    let mut site_scan = scan_connection(&site.opts).await?;
    let mut hq_scan = scan_connection(&hq.opts).await?;
    let mut reports = Vec::new();
    for table in &tables {
        let mut report = TableReport {
            table: table.clone(),
            hq_lacks_table: hq.schema.table(table).is_none(),
            ..TableReport::default()
        };
        compare_forward(
            &mut site_scan,
            &mut site,
            &mut hq,
            table,
            page_rows,
            &mut report,
            findings,
        )
        .await
        .with_context(|| format!("comparing `{table}`"))?;
        if options.extra && !report.hq_lacks_table {
            report.extra_at_hq = Some(
                compare_extra(&mut hq_scan, &mut hq, &mut site, table, page_rows, findings)
                    .await
                    .with_context(|| format!("looking for extra rows of `{table}` at HQ"))?,
            );
        }
        reports.push(report);
    }
    Ok(reports)
}

/// The site's rows of `table`, page by page, looked up at HQ.
async fn compare_forward(
    scan: &mut Conn,
    site: &mut Side,
    hq: &mut Side,
    table: &str,
    page_rows: usize,
    report: &mut TableReport,
    findings: &mut Findings,
) -> Result<()> {
    let map = site.map(table)?;
    let hq_map = hq.schema.table(table).cloned();
    let names = column_names(&map);
    let mut result = scan.exec_iter(select_all(&map, &site.database), ()).await?;
    loop {
        let (page, end) = next_page(&mut result, page_rows).await?;
        let rows = travelling(&map, site.canonical_page(&map, page).await?);
        report.site_rows += rows.len() as u64;
        let site_digests: Vec<Digest> = rows
            .iter()
            .filter_map(|row| {
                let identity = map.identity_of(|c| row.get(c))?;
                Some(digest(identity, row, &names))
            })
            .collect();
        report.unidentified += (rows.len() - site_digests.len()) as u64;
        let at_hq = match &hq_map {
            Some(hq_map) => {
                let found = hq.find(hq_map, &rows).await?;
                found
                    .into_iter()
                    .map(|(identity, row)| {
                        let d = digest(identity.clone(), &row, &names);
                        (identity, d)
                    })
                    .collect()
            }
            None => HashMap::new(),
        };
        for outcome in compare_page(&site_digests, &at_hq) {
            match outcome {
                Outcome::Matched => report.matched += 1,
                Outcome::Missing(identity) => {
                    report.missing_at_hq += 1;
                    findings.add(Listed {
                        table: table.to_owned(),
                        finding: Finding::Missing,
                        identity,
                        columns: Vec::new(),
                    })?;
                }
                Outcome::Different(identity, columns) => {
                    report.different += 1;
                    for c in &columns {
                        *report.differing_columns.entry(c.to_string()).or_default() += 1;
                    }
                    findings.add(Listed {
                        table: table.to_owned(),
                        finding: Finding::Different,
                        identity,
                        columns: columns.iter().map(|c| c.to_string()).collect(),
                    })?;
                }
            }
        }
        if end {
            return Ok(());
        }
    }
}

/// The next page of up to `page_rows` rows of a streamed scan, and whether the scan ended.
async fn next_page(
    result: &mut mysql_async::QueryResult<'_, 'static, mysql_async::BinaryProtocol>,
    page_rows: usize,
) -> Result<(Vec<Row>, bool)> {
    let mut page = Vec::with_capacity(page_rows);
    while page.len() < page_rows {
        match result.next().await? {
            Some(row) => page.push(row),
            None => return Ok((page, true)),
        }
    }
    Ok((page, false))
}

/// HQ's rows of `table`, page by page, looked up at the site: those it lacks are extra.
async fn compare_extra(
    scan: &mut Conn,
    hq: &mut Side,
    site: &mut Side,
    table: &str,
    page_rows: usize,
    findings: &mut Findings,
) -> Result<u64> {
    let map = hq.map(table)?;
    let site_map = site.map(table)?;
    let mut extra = 0;
    let mut result = scan.exec_iter(select_all(&map, &hq.database), ()).await?;
    loop {
        let (page, end) = next_page(&mut result, page_rows).await?;
        let rows = travelling(&map, hq.canonical_page(&map, page).await?);
        let at_site = site.find(&site_map, &rows).await?;
        for row in &rows {
            let Some(identity) = map.identity_of(|c| row.get(c)) else {
                continue;
            };
            if !at_site.contains_key(&identity) {
                extra += 1;
                findings.add(Listed {
                    table: table.to_owned(),
                    finding: Finding::Extra,
                    identity,
                    columns: Vec::new(),
                })?;
            }
        }
        if end {
            return Ok(extra);
        }
    }
}

/// A row's canonical columns: name -> travelling value, references as identities.
type Canonical = BTreeMap<String, Value>;

/// The rows that travel: all, except in a table whose rows travel by name
/// (`[sync] global_properties`).
fn travelling(map: &TableMap, mut rows: Vec<Canonical>) -> Vec<Canonical> {
    if let Some(filter) = &map.row_filter {
        rows.retain(|row| {
            row.get(&filter.column)
                .and_then(Value::as_text)
                .and_then(|name| filter.matching(name))
                .is_some()
        });
    }
    rows
}

/// A row reduced to its identity and hashes: one per compared column, one over them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub identity: Identity,
    pub hash: u64,
    pub columns: Vec<(Arc<str>, u64)>,
}

/// Hash of a column the row does not have (HQ lacking a column the site sends).
const ABSENT: u64 = 0x9e37_79b9_7f4a_7c15;

/// The digest of `row` over the columns `names` (the site's travelling columns, in name
/// order, so both sides hash the same list).
pub fn digest(identity: Identity, row: &Canonical, names: &[Arc<str>]) -> Digest {
    let columns: Vec<(Arc<str>, u64)> = names
        .iter()
        .map(|name| {
            let hash = row.get(&**name).map_or(ABSENT, value_hash);
            (Arc::clone(name), hash)
        })
        .collect();
    let mut row_hash = Fnv::new();
    for (name, hash) in &columns {
        row_hash.write(name.as_bytes());
        row_hash.write(&[0]);
        row_hash.write(&hash.to_le_bytes());
    }
    Digest {
        identity,
        hash: row_hash.finish(),
        columns,
    }
}

/// A stable 64-bit hash of a travelling value (FNV-1a over a tagged encoding): the same on
/// every run and machine, so digests can be compared across processes. A reference hashes its
/// target table and identity, never an integer id.
pub fn value_hash(value: &Value) -> u64 {
    let mut h = Fnv::new();
    match value {
        Value::Null => h.write(b"n"),
        Value::Int(v) => {
            h.write(b"i");
            h.write(&v.to_le_bytes());
        }
        Value::UInt(v) => {
            h.write(b"u");
            h.write(&v.to_le_bytes());
        }
        Value::Float(v) => {
            h.write(b"f");
            h.write(&v.to_bits().to_le_bytes());
        }
        Value::Text(s) => {
            h.write(b"t");
            h.write(s.as_bytes());
        }
        Value::Bytes(b) => {
            h.write(b"b");
            h.write(b);
        }
        Value::Ref(r) => {
            h.write(b"r");
            h.write(r.table.as_bytes());
            h.write(&[0]);
            h.write(r.identity.as_str().as_bytes());
        }
    }
    h.finish()
}

struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// How one site row compares with HQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Matched,
    Missing(Identity),
    /// With the columns whose hashes differ, in name order.
    Different(Identity, Vec<Arc<str>>),
}

/// Compares one page of the site's digests with HQ's digests of the same identities.
pub fn compare_page(site: &[Digest], hq: &HashMap<Identity, Digest>) -> Vec<Outcome> {
    site.iter()
        .map(|s| match hq.get(&s.identity) {
            None => Outcome::Missing(s.identity.clone()),
            Some(h) if h.hash == s.hash && h.columns == s.columns => Outcome::Matched,
            Some(h) => {
                let theirs: HashMap<&str, u64> =
                    h.columns.iter().map(|(n, v)| (&**n, *v)).collect();
                let differing: Vec<Arc<str>> = s
                    .columns
                    .iter()
                    .filter(|(n, v)| theirs.get(&**n) != Some(v))
                    .map(|(n, _)| Arc::clone(n))
                    .collect();
                if differing.is_empty() {
                    Outcome::Matched
                } else {
                    Outcome::Different(s.identity.clone(), differing)
                }
            }
        })
        .collect()
}

/// The compared columns of a table: its travelling columns without the surrogate key.
fn column_names(map: &TableMap) -> Vec<Arc<str>> {
    let mut names: Vec<Arc<str>> = map
        .columns
        .iter()
        .filter(|c| map.surrogate_key.as_deref() != Some(c.name.as_str()))
        // Rows found by name keep each database's own uuid (`[sync] global_properties`).
        .filter(|c| map.row_filter.is_none() || c.name != "uuid")
        .map(|c| Arc::from(c.name.as_str()))
        .collect();
    names.sort();
    names
}

fn select_all(map: &TableMap, database: &str) -> String {
    let columns: Vec<String> = map.columns.iter().map(|c| quote_ident(&c.name)).collect();
    format!(
        "SELECT {} FROM {}.{}",
        columns.join(", "),
        quote_ident(database),
        quote_ident(&map.name)
    )
}

fn session_opts(opts: &Opts) -> Opts {
    OptsBuilder::from_opts(opts.clone())
        .init(vec!["SET time_zone = '+00:00'"])
        .into()
}

/// The connection a table is streamed on: the server may wait while a page is compared, so
/// its write timeout is generous.
async fn scan_connection(opts: &Opts) -> Result<Conn> {
    let opts = OptsBuilder::from_opts(session_opts(opts)).init(vec![
        "SET time_zone = '+00:00'",
        "SET SESSION net_write_timeout = 3600",
    ]);
    Ok(Conn::new(opts).await?)
}

/// One database, read with its own schema map, through its lookup connection (tables are
/// streamed on a connection of their own).
struct Side {
    opts: Opts,
    conn: Conn,
    database: String,
    schema: SchemaMap,
    /// (type table, key) -> format, for polymorphic references, loaded on first use.
    formats: HashMap<String, HashMap<i64, String>>,
}

impl Side {
    async fn open(opts: &Opts, database: &str, policy: &Policy) -> Result<Side> {
        let opts = session_opts(opts);
        let mut conn = Conn::new(opts.clone()).await?;
        let catalog = Catalog::introspect(&mut conn, database).await?;
        let schema = SchemaMap::build(&catalog, policy)?;
        Ok(Side {
            opts,
            conn,
            database: database.to_owned(),
            schema,
            formats: HashMap::new(),
        })
    }

    fn map(&self, table: &str) -> Result<TableMap> {
        self.schema
            .table(table)
            .cloned()
            .with_context(|| format!("`{table}` is not a synced table of `{}`", self.database))
    }

    /// Canonical forms of rows selected with [`select_all`]: references resolved with one
    /// lookup per referenced root (and page of keys).
    async fn canonical_page(&mut self, map: &TableMap, rows: Vec<Row>) -> Result<Vec<Canonical>> {
        for column in &map.polymorphic {
            self.load_formats(column).await?;
        }
        let rows: Vec<Vec<Sql>> = rows.into_iter().map(Row::unwrap).collect();
        // Which keys of which root the page refers to.
        let mut wanted: BTreeMap<String, HashSet<i64>> = BTreeMap::new();
        for values in &rows {
            for (column, sql) in map.columns.iter().zip(values) {
                if let (Some(target), Sql::Int(key)) = (map.references.get(&column.name), sql) {
                    wanted.entry(self.root_of(target)).or_default().insert(*key);
                }
                if let (Some(target), Sql::UInt(key)) = (map.references.get(&column.name), sql)
                    && let Ok(key) = i64::try_from(*key)
                {
                    wanted.entry(self.root_of(target)).or_default().insert(key);
                }
            }
            for column in &map.polymorphic {
                if let Some((target, key)) = self.polymorphic_target(map, column, values) {
                    wanted.entry(self.root_of(target)).or_default().insert(key);
                }
            }
        }
        let mut identities: HashMap<String, HashMap<i64, Identity>> = HashMap::new();
        for (root, keys) in wanted {
            let found = self.identities_of(&root, keys).await?;
            identities.insert(root, found);
        }
        Ok(rows
            .iter()
            .map(|values| self.canonical(map, values, &identities))
            .collect())
    }

    fn canonical(
        &self,
        map: &TableMap,
        values: &[Sql],
        identities: &HashMap<String, HashMap<i64, Identity>>,
    ) -> Canonical {
        let reference = |target: &str, key: i64| {
            let identity = identities
                .get(&self.root_of(target))
                .and_then(|m| m.get(&key))
                .cloned()
                .unwrap_or_else(|| Identity::from_raw(format!("dangling:{key}")));
            Value::Ref(RowRef::new(target, identity))
        };
        let mut columns = BTreeMap::new();
        for (column, sql) in map.columns.iter().zip(values) {
            if map.surrogate_key.as_deref() == Some(column.name.as_str()) {
                continue;
            }
            let polymorphic = map
                .polymorphic
                .iter()
                .find(|p| p.column == column.name)
                .and_then(|p| self.polymorphic_target(map, p, values));
            let value = match (map.references.get(&column.name), sql, polymorphic) {
                (Some(target), Sql::Int(key), _) => reference(target, *key),
                (Some(target), Sql::UInt(key), _) if i64::try_from(*key).is_ok() => {
                    reference(target, *key as i64)
                }
                (None, _, Some((target, key))) => reference(target, key),
                _ => to_value(sql.clone(), column.kind),
            };
            columns.insert(column.name.clone(), value);
        }
        columns
    }

    /// The rows of `map`'s table at this side whose identities are those of `rows` (canonical
    /// rows of the other side), by identity.
    async fn find(
        &mut self,
        map: &TableMap,
        rows: &[Canonical],
    ) -> Result<HashMap<Identity, Canonical>> {
        let mut found = HashMap::new();
        for chunk in rows.chunks(LOOKUP_KEYS) {
            let Some((condition, params)) = self.locator(map, chunk) else {
                continue;
            };
            let sql = format!("{} WHERE {condition}", select_all(map, &self.database));
            let fetched: Vec<Row> = self.conn.exec(sql, params).await?;
            for row in self.canonical_page(map, fetched).await? {
                if let Some(identity) = map.identity_of(|c| row.get(c)) {
                    found.insert(identity, row);
                }
            }
        }
        Ok(found)
    }

    /// A WHERE condition selecting (a superset of) the rows with the identities of `rows`;
    /// `None` when none can match. Rows are then matched by their computed identity.
    fn locator(&self, map: &TableMap, rows: &[Canonical]) -> Option<(String, Vec<Sql>)> {
        let marks = |n: usize| vec!["?"; n].join(", ");
        match &map.identity {
            IdentityRule::OwnUuid { column } => {
                let uuids: Vec<Sql> = rows
                    .iter()
                    .filter_map(|row| match row.get(column) {
                        Some(Value::Text(uuid)) => Some(Sql::Bytes(uuid.as_bytes().to_vec())),
                        _ => None,
                    })
                    .collect();
                (!uuids.is_empty()).then(|| {
                    (
                        format!("{} IN ({})", quote_ident(column), marks(uuids.len())),
                        uuids,
                    )
                })
            }
            IdentityRule::Inherited { .. } => {
                let source = map.identity_source.as_ref()?;
                let key = map.primary_key.first()?;
                let uuids: Vec<Sql> = rows
                    .iter()
                    .filter_map(|row| match row.get(key) {
                        Some(Value::Ref(parent)) => {
                            Some(Sql::Bytes(parent.identity.as_str().as_bytes().to_vec()))
                        }
                        _ => None,
                    })
                    .collect();
                (!uuids.is_empty()).then(|| {
                    (
                        format!(
                            "{} IN (SELECT {} FROM {}.{} WHERE {} IN ({}))",
                            quote_ident(key),
                            quote_ident(&source.key_column),
                            quote_ident(&self.database),
                            quote_ident(&source.root),
                            quote_ident(&source.uuid_column),
                            marks(uuids.len())
                        ),
                        uuids,
                    )
                })
            }
            IdentityRule::Natural { columns } => {
                let mut alternatives = Vec::new();
                let mut params = Vec::new();
                for row in rows {
                    let mut terms = Vec::new();
                    for column in columns {
                        let name = quote_ident(column);
                        match row.get(column).unwrap_or(&Value::Null) {
                            Value::Null => terms.push(format!("{name} IS NULL")),
                            Value::Ref(parent) => {
                                let source = map
                                    .references
                                    .get(column)
                                    .and_then(|t| self.schema.table(t))
                                    .and_then(|t| t.identity_source.as_ref());
                                if let Some(source) = source {
                                    terms.push(format!(
                                        "{name} IN (SELECT {} FROM {}.{} WHERE {} = ?)",
                                        quote_ident(&source.key_column),
                                        quote_ident(&self.database),
                                        quote_ident(&source.root),
                                        quote_ident(&source.uuid_column),
                                    ));
                                    params.push(Sql::Bytes(
                                        parent.identity.as_str().as_bytes().to_vec(),
                                    ));
                                }
                            }
                            // Floats are left to the identity check (text forms may differ).
                            Value::Float(_) => {}
                            value => {
                                terms.push(format!("{name} = ?"));
                                params.push(plain_sql(value));
                            }
                        }
                    }
                    alternatives.push(if terms.is_empty() {
                        "TRUE".to_owned()
                    } else {
                        format!("({})", terms.join(" AND "))
                    });
                }
                (!alternatives.is_empty()).then(|| (alternatives.join(" OR "), params))
            }
        }
    }

    /// key -> identity for `keys` of `root` (looked up in pages of [`LOOKUP_KEYS`]).
    async fn identities_of(
        &mut self,
        root: &str,
        keys: HashSet<i64>,
    ) -> Result<HashMap<i64, Identity>> {
        let Some(source) = self
            .schema
            .table(root)
            .and_then(|t| t.identity_source.clone())
        else {
            return Ok(HashMap::new());
        };
        let keys: Vec<i64> = keys.into_iter().collect();
        let mut out = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(LOOKUP_KEYS) {
            let sql = format!(
                "SELECT {}, {} FROM {}.{} WHERE {} IN ({})",
                quote_ident(&source.key_column),
                quote_ident(&source.uuid_column),
                quote_ident(&self.database),
                quote_ident(&source.root),
                quote_ident(&source.key_column),
                vec!["?"; chunk.len()].join(", ")
            );
            let params: Vec<Sql> = chunk.iter().map(|k| Sql::Int(*k)).collect();
            let pairs: Vec<(i64, Option<String>)> = self.conn.exec(sql, params).await?;
            out.extend(
                pairs
                    .into_iter()
                    .filter_map(|(k, u)| u.map(|u| (k, Identity::from_uuid(&u)))),
            );
        }
        Ok(out)
    }

    /// The (table, id) a polymorphic column refers to in this row, as capture reads it.
    fn polymorphic_target<'p>(
        &self,
        map: &TableMap,
        column: &'p PolymorphicColumn,
        values: &[Sql],
    ) -> Option<(&'p str, i64)> {
        let value_of = |name: &str| {
            map.columns
                .iter()
                .zip(values)
                .find(|(c, _): &(&CatalogColumn, &Sql)| c.name == name)
                .map(|(_, v)| v)
        };
        let type_id = match value_of(&column.type_column)? {
            Sql::Int(id) => *id,
            Sql::UInt(id) => i64::try_from(*id).ok()?,
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
}

/// A plain travelling value as a statement parameter (text forms compare with the column's
/// own type in MariaDB).
fn plain_sql(value: &Value) -> Sql {
    match value {
        Value::Null => Sql::NULL,
        Value::Int(v) => Sql::Int(*v),
        Value::UInt(v) => Sql::UInt(*v),
        Value::Float(v) => Sql::Double(*v),
        Value::Text(s) => Sql::Bytes(s.as_bytes().to_vec()),
        Value::Bytes(b) => Sql::Bytes(b.clone()),
        Value::Ref(r) => Sql::Bytes(r.identity.as_str().as_bytes().to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<Arc<str>> {
        list.iter().map(|n| Arc::from(*n)).collect()
    }

    fn row(pairs: &[(&str, Value)]) -> Canonical {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.clone()))
            .collect()
    }

    fn person(identity: &str) -> Value {
        Value::Ref(RowRef::new("person", Identity::from_uuid(identity)))
    }

    #[test]
    fn value_hashes_are_stable_across_runs() {
        // A changed hash function would make digests of two versions incomparable.
        assert_eq!(value_hash(&Value::Null), 0xaf63_e34c_8601_f871);
        assert_eq!(
            value_hash(&Value::Text(String::new())),
            0xaf63_e94c_8602_02a3
        );
    }

    #[test]
    fn hashes_tell_kinds_and_references_apart_but_not_integer_ids() {
        assert_ne!(
            value_hash(&Value::Int(1)),
            value_hash(&Value::Text("1".into()))
        );
        assert_ne!(
            value_hash(&Value::Null),
            value_hash(&Value::Text("".into()))
        );
        assert_ne!(value_hash(&person("a")), value_hash(&person("b")));
        // A reference is its identity: the same person under two ids hashes the same.
        assert_eq!(value_hash(&person("A-1")), value_hash(&person("a-1")));
        let other_table = Value::Ref(RowRef::new("users", Identity::from_uuid("a")));
        assert_ne!(value_hash(&person("a")), value_hash(&other_table));
    }

    #[test]
    fn equal_rows_match_and_a_changed_column_is_named() {
        let cols = names(&["given_name", "person_id", "uuid"]);
        let site = row(&[
            ("given_name", Value::Text("Amina".into())),
            ("person_id", person("p1")),
            ("uuid", Value::Text("n1".into())),
        ]);
        let same = digest(Identity::from_uuid("n1"), &site, &cols);
        let mut edited = site.clone();
        edited.insert("given_name".into(), Value::Text("Aminah".into()));
        let id = Identity::from_uuid("n1");
        let hq_same: HashMap<_, _> = [(id.clone(), same.clone())].into();
        assert_eq!(
            compare_page(std::slice::from_ref(&same), &hq_same),
            vec![Outcome::Matched]
        );
        let hq_edited: HashMap<_, _> = [(id.clone(), digest(id.clone(), &edited, &cols))].into();
        assert_eq!(
            compare_page(std::slice::from_ref(&same), &hq_edited),
            vec![Outcome::Different(id.clone(), names(&["given_name"]))]
        );
        assert_eq!(
            compare_page(&[same], &HashMap::new()),
            vec![Outcome::Missing(id)]
        );
    }

    #[test]
    fn a_column_hq_lacks_differs_and_hq_only_columns_are_ignored() {
        let cols = names(&["a", "b"]);
        let site = row(&[("a", Value::Int(1)), ("b", Value::Null)]);
        let hq_without_b = row(&[("a", Value::Int(1)), ("extra", Value::Int(9))]);
        let id = Identity::from_uuid("x");
        let s = digest(id.clone(), &site, &cols);
        let h = digest(id.clone(), &hq_without_b, &cols);
        assert_ne!(s.hash, h.hash);
        let hq: HashMap<_, _> = [(id.clone(), h)].into();
        assert_eq!(
            compare_page(&[s], &hq),
            vec![Outcome::Different(id, names(&["b"]))]
        );
    }

    #[test]
    fn a_reference_to_another_row_differs_even_when_everything_else_is_equal() {
        let cols = names(&["person_id"]);
        let id = Identity::from_uuid("n1");
        let s = digest(id.clone(), &row(&[("person_id", person("p1"))]), &cols);
        let h = digest(id.clone(), &row(&[("person_id", person("p2"))]), &cols);
        let hq: HashMap<_, _> = [(id.clone(), h)].into();
        assert_eq!(
            compare_page(&[s], &hq),
            vec![Outcome::Different(id, names(&["person_id"]))]
        );
    }
}
