//! The schema map: for every synced table, how its rows are identified and which of its
//! columns are references, derived from the catalog and the policy.
//!
//! Identity rules (DESIGN.md, "Identity"):
//! 1. a `uuid` column: the row's own identity;
//! 2. inherited: a single-column primary key that is also a foreign key (patient -> person,
//!    drug_order -> orders) takes the identity of the row it extends, found through the same
//!    integer in the root table;
//! 3. otherwise a natural key: the primary key columns, or the whole row when there is none,
//!    with references replaced by identities.
//!
//! A column is a *reference* when it is an integer foreign key (declared, or listed in the
//! policy) into a table whose rows have a uuid or inherited identity. References to string
//! keys (`role.role`, `privilege.privilege`) are already the same at every site and travel as
//! plain values.

use crate::catalog::{Catalog, CatalogColumn, CatalogTable};
use crate::error::SchemaError;
use crate::policy::{Policy, RowFilter};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use tributary_model::{Identity, Value};

/// How the rows of one table are identified across databases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityRule {
    /// The table's own uuid column.
    OwnUuid { column: String },
    /// The row shares its primary key with a row of `root`, whose uuid is its identity.
    Inherited { root: String },
    /// The key columns (the whole row when the table has no primary key).
    Natural { columns: Vec<String> },
}

/// Where the identity of a row with a given integer key is looked up: `root.uuid_column`
/// where `root.key_column` equals that integer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IdentitySource {
    pub root: String,
    pub key_column: String,
    pub uuid_column: String,
}

#[derive(Debug, Clone)]
pub struct TableMap {
    pub name: String,
    /// Synced columns, in ordinal order (excluded columns removed).
    pub columns: Vec<CatalogColumn>,
    /// Columns the policy keeps at the site.
    pub excluded_columns: Vec<String>,
    /// Every column of the table in ordinal order, excluded ones included: how a binlog row
    /// written without column names (`binlog_row_metadata` below FULL) is read.
    pub ordinal_columns: Vec<CatalogColumn>,
    /// A single integer primary key that is local to each database (dropped on the wire,
    /// assigned by HQ).
    pub surrogate_key: Option<String>,
    /// Primary key columns in key order (empty when the table has none).
    pub primary_key: Vec<String>,
    pub identity: IdentityRule,
    /// For an integer-keyed table: where its identity lives (itself, or its root).
    pub identity_source: Option<IdentitySource>,
    /// Reference columns and the table they point at (shared: every reference a row carries
    /// names its target without a copy).
    pub references: BTreeMap<String, std::sync::Arc<str>>,
    /// Text columns that hold an id when the row's type says so.
    pub polymorphic: Vec<PolymorphicColumn>,
    /// The identity is a uuid column the database keeps unique on its own: a row can be
    /// inserted without looking for it first (a duplicate is refused by the database).
    pub identity_is_unique: bool,
    /// Tables this table's foreign keys point at through columns that travel as plain values
    /// (string keys such as `role.role`): HQ must have the parent row before this one.
    pub plain_key_parents: Vec<String>,
    /// Which rows travel, when only some do (`global_property` by name); all otherwise.
    pub row_filter: Option<RowFilter>,
}

/// A polymorphic reference resolved against the catalog (see
/// [`crate::PolymorphicReference`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolymorphicColumn {
    pub column: String,
    pub type_column: String,
    pub type_table: String,
    /// The integer primary key of `type_table`.
    pub type_key: String,
    pub format_column: String,
    pub targets: BTreeMap<String, String>,
}

impl PolymorphicColumn {
    /// The table the column refers into for a type of this `format`, if any.
    pub fn target(&self, format: &str) -> Option<&str> {
        self.targets.get(format).map(String::as_str)
    }
}

impl TableMap {
    pub fn column(&self, name: &str) -> Option<&CatalogColumn> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn is_reference(&self, column: &str) -> bool {
        self.references.contains_key(column)
    }

    /// The columns [`TableMap::identity_of`] reads.
    pub fn identity_columns(&self) -> Vec<&str> {
        match &self.identity {
            IdentityRule::OwnUuid { column } => vec![column.as_str()],
            IdentityRule::Inherited { .. } => self
                .primary_key
                .first()
                .map(String::as_str)
                .into_iter()
                .collect(),
            IdentityRule::Natural { columns } => columns.iter().map(String::as_str).collect(),
        }
    }

    /// The identity of a row from its travelling columns (references already identities),
    /// looked up by name with `column`. `None` when the identifying columns are missing or
    /// NULL.
    pub fn identity_of<'a>(&self, column: impl Fn(&str) -> Option<&'a Value>) -> Option<Identity> {
        match &self.identity {
            IdentityRule::OwnUuid { column: uuid } => match column(uuid.as_str())? {
                Value::Text(uuid) if !uuid.is_empty() => Some(Identity::from_uuid(uuid)),
                _ => None,
            },
            IdentityRule::Inherited { .. } => {
                let key = self.primary_key.first()?;
                match column(key.as_str())? {
                    Value::Ref(parent) => Some(parent.identity.clone()),
                    _ => None,
                }
            }
            IdentityRule::Natural { columns: key } => {
                let parts: Vec<String> = key
                    .iter()
                    .map(|c| key_part(column(c.as_str()).unwrap_or(&Value::Null)))
                    .collect();
                Some(Identity::from_natural_key(&parts))
            }
        }
    }
}

fn key_part(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Int(v) => v.to_string(),
        Value::UInt(v) => v.to_string(),
        Value::Float(v) => v.to_string(),
        Value::Text(s) => s.clone(),
        Value::Bytes(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Value::Ref(r) => r.identity.as_str().to_owned(),
    }
}

/// The synced tables of one database.
#[derive(Debug, Clone)]
pub struct SchemaMap {
    pub database: String,
    /// Sorted by name (the order [`SchemaMap::tables`] lists them in).
    tables: Vec<TableMap>,
    /// Where each table is in `tables`: capture looks a table up several times per row.
    by_name: FxHashMap<String, usize>,
    /// The policy's `dropped_at_hq`: columns HQ writes rows without when its table lacks them.
    dropped_at_hq: BTreeMap<String, Vec<String>>,
}

impl SchemaMap {
    pub fn build(catalog: &Catalog, policy: &Policy) -> Result<SchemaMap, SchemaError> {
        let mut tables = BTreeMap::new();
        for table in catalog.tables.values() {
            if policy.excludes_table(&table.name) {
                continue;
            }
            tables.insert(table.name.clone(), map_table(catalog, policy, table)?);
        }
        let tables: Vec<TableMap> = tables.into_values().collect();
        let by_name = tables
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(SchemaMap {
            database: catalog.database.clone(),
            tables,
            by_name,
            dropped_at_hq: policy.dropped_at_hq.clone(),
        })
    }

    /// Whether a row may be written without `table.column`, which HQ's table lacks (declared
    /// under `dropped_at_hq` in the schema map).
    pub fn drops_missing_column(&self, table: &str, column: &str) -> bool {
        self.dropped_at_hq
            .get(table)
            .is_some_and(|columns| columns.iter().any(|c| c == column || c == "*"))
    }

    pub fn table(&self, name: &str) -> Option<&TableMap> {
        self.by_name.get(name).and_then(|&i| self.tables.get(i))
    }

    /// Every synced table, by name.
    pub fn tables(&self) -> impl Iterator<Item = &TableMap> {
        self.tables.iter()
    }

    /// Synced tables ordered so that, ignoring audit columns and self-references, a table
    /// comes after the tables it refers to (the order a snapshot is best sent in).
    pub fn dependency_order(&self) -> Vec<&TableMap> {
        let mut placed: Vec<&TableMap> = Vec::new();
        let mut remaining: Vec<&TableMap> = self.tables.iter().collect();
        while !remaining.is_empty() {
            let before = remaining.len();
            remaining.retain(|table| {
                let ready = table.references.iter().all(|(column, target)| {
                    **target == *table.name
                        || is_audit_column(column)
                        || !self.by_name.contains_key(&**target)
                        || placed.iter().any(|p| *p.name == **target)
                });
                if ready {
                    placed.push(table);
                }
                !ready
            });
            if remaining.len() == before {
                // A cycle that audit columns do not explain: keep going in name order; parking
                // at HQ resolves whatever arrives early.
                placed.push(remaining.remove(0));
            }
        }
        placed
    }
}

/// Columns that point at `users` for bookkeeping; they close the only FK cycle in OpenMRS.
fn is_audit_column(column: &str) -> bool {
    matches!(
        column,
        "creator" | "changed_by" | "voided_by" | "retired_by"
    )
}

fn map_table(
    catalog: &Catalog,
    policy: &Policy,
    table: &CatalogTable,
) -> Result<TableMap, SchemaError> {
    let columns: Vec<CatalogColumn> = table
        .columns
        .iter()
        .filter(|c| !policy.excludes_column(&table.name, &c.name))
        .cloned()
        .collect();

    let mut references = BTreeMap::new();
    let declared = table
        .foreign_keys
        .iter()
        .map(|fk| (fk.column.clone(), fk.parent_table.clone()));
    let undeclared = policy
        .references
        .iter()
        .filter(|r| r.table == table.name && table.column(&r.column).is_some())
        .map(|r| (r.column.clone(), r.target.clone()));
    for (column, target) in declared.chain(undeclared) {
        let Some(column_info) = table.column(&column) else {
            continue;
        };
        if !column_info.kind.is_integer() || policy.excludes_column(&table.name, &column) {
            continue;
        }
        if policy.excludes_table(&target) {
            // A reference into a table that is never synced cannot be resolved at HQ.
            return Err(SchemaError::BadReference {
                table: table.name.clone(),
                column,
                problem: format!(
                    "its target `{target}` is excluded from sync; exclude the column too"
                ),
            });
        }
        if !catalog.tables.contains_key(&target) {
            return Err(SchemaError::BadReference {
                table: table.name.clone(),
                column,
                problem: format!("table `{target}` does not exist"),
            });
        }
        if identity_source(catalog, &target).is_none() {
            return Err(SchemaError::UnidentifiableTarget {
                table: table.name.clone(),
                column,
                target,
            });
        }
        references.insert(column, target.into());
    }

    let mut polymorphic = Vec::new();
    for rule in policy
        .polymorphic_references
        .iter()
        .filter(|r| r.table == table.name)
    {
        let type_table = catalog.tables.get(&rule.type_table);
        let type_key = type_table.and_then(|t| match t.primary_key.as_slice() {
            [key] => Some(key.clone()),
            _ => None,
        });
        let (Some(type_table), Some(type_key)) = (type_table, type_key) else {
            continue;
        };
        if table.column(&rule.column).is_none()
            || table.column(&rule.type_column).is_none()
            || type_table.column(&rule.format_column).is_none()
        {
            continue;
        }
        for target in rule.targets.values() {
            if identity_source(catalog, target).is_none() {
                return Err(SchemaError::UnidentifiableTarget {
                    table: table.name.clone(),
                    column: rule.column.clone(),
                    target: target.clone(),
                });
            }
        }
        polymorphic.push(PolymorphicColumn {
            column: rule.column.clone(),
            type_column: rule.type_column.clone(),
            type_table: rule.type_table.clone(),
            type_key,
            format_column: rule.format_column.clone(),
            targets: rule.targets.clone(),
        });
    }
    let row_filter = policy.row_filter(&table.name);
    let identity = match &row_filter {
        // Settings are the same row everywhere by name: each database made its own uuid.
        Some(filter) => IdentityRule::Natural {
            columns: vec![filter.column.clone()],
        },
        None => identity_rule(catalog, table),
    };
    let surrogate_key = match table.primary_key.as_slice() {
        [key]
            if !matches!(identity, IdentityRule::Inherited { .. })
                && table.column(key).is_some_and(|c| c.kind.is_integer()) =>
        {
            Some(key.clone())
        }
        _ => None,
    };
    // Every name the policy keeps home, also those this catalog version does not have: a
    // row decoded from an older position may still carry them.
    let excluded_columns = policy
        .exclude_columns
        .get(&table.name)
        .cloned()
        .unwrap_or_default();
    let identity_is_unique = match &identity {
        IdentityRule::OwnUuid { column } => {
            table.unique_columns.contains(column) || table.primary_key == [column.clone()]
        }
        _ => false,
    };
    let mut plain_key_parents: Vec<String> = table
        .foreign_keys
        .iter()
        .filter(|fk| !references.contains_key(&fk.column))
        .map(|fk| fk.parent_table.clone())
        .collect();
    plain_key_parents.sort();
    plain_key_parents.dedup();
    Ok(TableMap {
        identity_is_unique,
        plain_key_parents,
        name: table.name.clone(),
        columns,
        excluded_columns,
        ordinal_columns: table.columns.clone(),
        surrogate_key,
        primary_key: table.primary_key.clone(),
        identity_source: identity_source(catalog, &table.name),
        identity,
        references,
        polymorphic,
        row_filter,
    })
}

fn identity_rule(catalog: &Catalog, table: &CatalogTable) -> IdentityRule {
    if table.column("uuid").is_some() && inherited_parent(table).is_none() {
        return IdentityRule::OwnUuid {
            column: "uuid".to_owned(),
        };
    }
    if inherited_parent(table).is_some()
        && let Some(source) = identity_source(catalog, &table.name)
    {
        return IdentityRule::Inherited { root: source.root };
    }
    let columns = if table.primary_key.is_empty() {
        table.columns.iter().map(|c| c.name.clone()).collect()
    } else {
        table.primary_key.clone()
    };
    IdentityRule::Natural { columns }
}

/// The parent table when the single-column primary key is also a foreign key to the parent's
/// primary key (a subtype table).
fn inherited_parent(table: &CatalogTable) -> Option<&str> {
    let [key] = table.primary_key.as_slice() else {
        return None;
    };
    table
        .foreign_keys
        .iter()
        .find(|fk| &fk.column == key && fk.parent_table != table.name)
        .map(|fk| fk.parent_table.as_str())
}

/// Follows subtype links up to the table that holds the uuid.
fn identity_source(catalog: &Catalog, table_name: &str) -> Option<IdentitySource> {
    let mut current = catalog.tables.get(table_name)?;
    for _ in 0..8 {
        match inherited_parent(current) {
            Some(parent) => current = catalog.tables.get(parent)?,
            None => {
                let [key] = current.primary_key.as_slice() else {
                    return None;
                };
                current.column("uuid")?;
                return Some(IdentitySource {
                    root: current.name.clone(),
                    key_column: key.clone(),
                    uuid_column: "uuid".to_owned(),
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{ColumnKind, ForeignKey};

    fn column(name: &str, kind: ColumnKind) -> CatalogColumn {
        CatalogColumn {
            name: name.into(),
            kind,
            nullable: true,
            auto_increment: false,
            unsigned: false,
        }
    }

    fn table(
        name: &str,
        columns: &[(&str, ColumnKind)],
        pk: &[&str],
        fks: &[(&str, &str)],
    ) -> CatalogTable {
        CatalogTable {
            name: name.into(),
            columns: columns.iter().map(|(n, k)| column(n, *k)).collect(),
            primary_key: pk.iter().map(|s| s.to_string()).collect(),
            foreign_keys: fks
                .iter()
                .map(|(c, p)| ForeignKey {
                    column: c.to_string(),
                    parent_table: p.to_string(),
                    parent_column: "id".into(),
                    cascades: Vec::new(),
                })
                .collect(),
            unique_columns: Vec::new(),
        }
    }

    fn openmrs_like() -> Catalog {
        use ColumnKind::*;
        let tables = [
            table(
                "users",
                &[
                    ("user_id", Integer),
                    ("person_id", Integer),
                    ("password", Text),
                    ("uuid", Text),
                ],
                &["user_id"],
                &[("person_id", "person")],
            ),
            table(
                "person",
                &[("person_id", Integer), ("creator", Integer), ("uuid", Text)],
                &["person_id"],
                &[("creator", "users")],
            ),
            table(
                "patient",
                &[("patient_id", Integer), ("creator", Integer)],
                &["patient_id"],
                &[("patient_id", "person"), ("creator", "users")],
            ),
            table("role", &[("role", Text), ("uuid", Text)], &["role"], &[]),
            table(
                "user_role",
                &[("user_id", Integer), ("role", Text)],
                &["user_id", "role"],
                &[("user_id", "users"), ("role", "role")],
            ),
            table("tag_map", &[("a", Integer), ("b", Integer)], &[], &[]),
            table(
                "global_property",
                &[("property", Text), ("uuid", Text)],
                &["property"],
                &[],
            ),
            table(
                "obs",
                &[
                    ("obs_id", Integer),
                    ("person_id", Integer),
                    ("value_group_id", Integer),
                    ("uuid", Text),
                ],
                &["obs_id"],
                &[("person_id", "person")],
            ),
        ];
        Catalog {
            database: "openmrs".into(),
            tables: tables.into_iter().map(|t| (t.name.clone(), t)).collect(),
        }
    }

    fn policy() -> Policy {
        Policy::parse(
            r#"
            exclude_tables = ["global_property"]
            [exclude_columns]
            users = ["password"]
            [[references]]
            table = "obs"
            column = "value_group_id"
            target = "obs"
            "#,
            "test",
        )
        .unwrap()
    }

    #[test]
    fn a_uuid_identity_is_unique_only_where_the_database_keeps_it_unique() {
        let mut person = table(
            "person",
            &[
                ("person_id", ColumnKind::Integer),
                ("uuid", ColumnKind::Text),
            ],
            &["person_id"],
            &[],
        );
        let build = |t: &CatalogTable| {
            let catalog = Catalog {
                database: "d".into(),
                tables: [(t.name.clone(), t.clone())].into(),
            };
            SchemaMap::build(&catalog, &Policy::default())
                .unwrap()
                .table("person")
                .unwrap()
                .identity_is_unique
        };
        assert!(
            !build(&person),
            "no unique key on uuid: look before inserting"
        );
        person.unique_columns = vec!["uuid".into()];
        assert!(build(&person));
    }

    #[test]
    fn identity_rules_follow_uuid_inheritance_and_natural_keys() {
        let map = SchemaMap::build(&openmrs_like(), &policy()).unwrap();
        assert_eq!(
            map.table("person").unwrap().identity,
            IdentityRule::OwnUuid {
                column: "uuid".into()
            }
        );
        let patient = map.table("patient").unwrap();
        assert_eq!(
            patient.identity,
            IdentityRule::Inherited {
                root: "person".into()
            }
        );
        assert_eq!(
            patient.surrogate_key, None,
            "an inherited key is not local to the database"
        );
        assert_eq!(patient.identity_source.as_ref().unwrap().root, "person");
        assert_eq!(
            map.table("user_role").unwrap().identity,
            IdentityRule::Natural {
                columns: vec!["user_id".into(), "role".into()]
            }
        );
        assert_eq!(
            map.table("tag_map").unwrap().identity,
            IdentityRule::Natural {
                columns: vec!["a".into(), "b".into()]
            }
        );
        assert_eq!(
            map.table("person").unwrap().surrogate_key.as_deref(),
            Some("person_id")
        );
    }

    /// Capture converts only these columns of an update's before image: the identity must
    /// come out the same as from the whole image, and no other column may be read.
    #[test]
    fn identity_columns_are_all_an_identity_reads() {
        let map = SchemaMap::build(&openmrs_like(), &policy()).unwrap();
        let parent = Value::Ref(tributary_model::RowRef::new(
            "person",
            Identity::from_uuid("3e11fa47-71ca-11e1-9e33-c80aa9429562"),
        ));
        let uuid = Value::Text("3E11FA47-71CA-11E1-9E33-C80AA9429562".into());
        for table in map.tables() {
            let value = match table.identity {
                IdentityRule::OwnUuid { .. } => &uuid,
                _ => &parent,
            };
            let asked = std::cell::RefCell::new(Vec::new());
            let whole = table.identity_of(|c| {
                asked.borrow_mut().push(c.to_owned());
                Some(value)
            });
            assert!(whole.is_some(), "table {}", table.name);
            let listed = table.identity_columns();
            assert_eq!(*asked.borrow(), listed, "table {}", table.name);
            let only = table.identity_of(|c| listed.contains(&c).then_some(value));
            assert_eq!(only, whole, "table {}", table.name);
        }
    }

    #[test]
    fn references_cover_declared_and_policy_listed_integer_keys_only() {
        let map = SchemaMap::build(&openmrs_like(), &policy()).unwrap();
        let user_role = map.table("user_role").unwrap();
        assert!(user_role.is_reference("user_id"));
        assert!(
            !user_role.is_reference("role"),
            "string keys travel as values"
        );
        let obs = map.table("obs").unwrap();
        assert!(
            obs.is_reference("value_group_id"),
            "undeclared reference from the policy"
        );
        assert_eq!(
            map.table("patient")
                .unwrap()
                .references
                .get("patient_id")
                .map(|t| &**t),
            Some("person")
        );
    }

    #[test]
    fn exclusions_remove_tables_and_columns() {
        let mut policy = policy();
        policy
            .exclude_columns
            .get_mut("users")
            .unwrap()
            .push("api_token".into());
        let map = SchemaMap::build(&openmrs_like(), &policy).unwrap();
        assert!(
            map.table("users")
                .unwrap()
                .excluded_columns
                .contains(&"api_token".to_owned()),
            "a column this catalog version lacks stays excluded for rows that still carry it"
        );
        assert!(map.table("global_property").is_none());
        assert!(map.table("users").unwrap().column("password").is_none());
    }

    #[test]
    fn named_settings_travel_identified_by_name_not_by_uuid() {
        let mut policy = policy();
        policy.global_properties = vec!["facility.*".into()];
        let map = SchemaMap::build(&openmrs_like(), &policy).unwrap();
        let settings = map.table("global_property").expect("synced once named");
        assert_eq!(
            settings.identity,
            IdentityRule::Natural {
                columns: vec!["property".into()]
            },
            "each database made its own uuid for the same setting"
        );
        assert!(!settings.identity_is_unique);
        let filter = settings.row_filter.as_ref().expect("a row filter");
        assert_eq!(filter.matching("facility.code"), Some("facility.*"));
        assert_eq!(filter.matching("security.password"), None);
        assert!(map.table("obs").unwrap().row_filter.is_none());
    }

    #[test]
    fn reference_into_uuidless_table_is_a_clear_error() {
        let mut catalog = openmrs_like();
        catalog.tables.insert(
            "child".into(),
            table(
                "child",
                &[
                    ("id", ColumnKind::Integer),
                    ("a", ColumnKind::Integer),
                    ("uuid", ColumnKind::Text),
                ],
                &["id"],
                &[("a", "tag_map")],
            ),
        );
        let err = SchemaMap::build(&catalog, &policy()).unwrap_err();
        assert!(err.to_string().contains("child.a"), "{err}");
    }

    #[test]
    fn dependency_order_puts_parents_first() {
        let map = SchemaMap::build(&openmrs_like(), &policy()).unwrap();
        let order: Vec<&str> = map
            .dependency_order()
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        let pos = |n| order.iter().position(|t| *t == n).unwrap();
        assert!(pos("person") < pos("patient"));
        assert!(pos("person") < pos("obs"));
        assert!(pos("users") < pos("user_role"));
    }

    /// Hostile schema-map files (issue 8): whatever the bytes, parsing a policy and building a
    /// schema map with it ends in a value or an error, never a panic. Inputs are arbitrary text
    /// and the embedded OpenMRS policy cut and with bytes changed; 2,000 cases each.
    mod hostile_policies {
        use super::*;
        use crate::OPENMRS_CORE_POLICY;
        use proptest::prelude::*;

        fn build(text: &str) {
            if let Ok(policy) = Policy::parse(text, "fuzz") {
                let _ = SchemaMap::build(&openmrs_like(), &policy);
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]

            #[test]
            fn arbitrary_text_never_panics(text in ".{0,300}") {
                build(&text);
            }

            #[test]
            fn the_core_policy_cut_anywhere_never_panics(cut in any::<prop::sample::Index>()) {
                let mut end = cut.index(OPENMRS_CORE_POLICY.len() + 1);
                while !OPENMRS_CORE_POLICY.is_char_boundary(end) {
                    end -= 1;
                }
                build(&OPENMRS_CORE_POLICY[..end]);
            }

            #[test]
            fn the_core_policy_with_bytes_changed_never_panics(
                edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            ) {
                let mut bytes = OPENMRS_CORE_POLICY.as_bytes().to_vec();
                for (at, byte) in edits {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
                build(&String::from_utf8_lossy(&bytes));
            }
        }

        #[test]
        fn the_core_policy_builds_against_a_small_catalog() {
            let policy = Policy::parse(OPENMRS_CORE_POLICY, "core").unwrap();
            let map = SchemaMap::build(&openmrs_like(), &policy);
            assert!(map.is_ok(), "{:?}", map.err());
        }
    }
}
