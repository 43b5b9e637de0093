//! The schema-map policy file: what the catalog cannot say.
//!
//! `information_schema` gives tables, keys and declared foreign keys. The policy adds the
//! tables and columns that must never leave a site (per-server configuration, credentials,
//! transient queues) and the integer references the schema does not declare (for example
//! `orders.concept_id`). Module tables that carry a uuid need no entry at all.

use crate::error::SchemaError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The policy for OpenMRS core, compiled in so that a default install needs no file.
pub const OPENMRS_CORE_POLICY: &str = include_str!("../../../schema-maps/openmrs-core.toml");

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Table names or `prefix*` patterns that are never captured or applied.
    #[serde(default)]
    pub exclude_tables: Vec<String>,
    /// Per table, columns that never leave the site (they arrive at HQ as their default).
    #[serde(default)]
    pub exclude_columns: BTreeMap<String, Vec<String>>,
    /// Integer references that carry no FOREIGN KEY constraint.
    #[serde(default)]
    pub references: Vec<UndeclaredReference>,
    /// Text columns that hold a row's integer id when the row's type says so.
    #[serde(default)]
    pub polymorphic_references: Vec<PolymorphicReference>,
    /// Per table, columns a site may send that HQ's table does not have (a site on a newer
    /// OpenMRS than HQ): HQ writes the row without them and reports it
    /// (`tributary_dropped_column`, `status`, a metric), instead of parking the row. `"*"`
    /// stands for every column the table lacks. Only columns HQ lacks are ever dropped.
    #[serde(default)]
    pub dropped_at_hq: BTreeMap<String, Vec<String>>,
    /// Names (`*` matches any run of characters) of the `global_property` rows that travel;
    /// the others stay at the site. Empty (the default): the table does not travel at all.
    /// The configuration's `[sync] global_properties` adds to it.
    #[serde(default)]
    pub global_properties: Vec<String>,
}

/// The settings table whose rows travel only by name (`[sync] global_properties`).
pub const GLOBAL_PROPERTY: &str = "global_property";
/// Its key: the setting's name.
const GLOBAL_PROPERTY_NAME: &str = "property";

/// Which rows of a table travel: those whose `column` matches one of `patterns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFilter {
    pub column: String,
    pub patterns: Vec<String>,
}

impl RowFilter {
    /// Whether a row whose `column` holds `value` travels; `None` when a pattern says why.
    pub fn matching(&self, value: &str) -> Option<&str> {
        self.patterns
            .iter()
            .find(|pattern| glob_matches(pattern, value))
            .map(String::as_str)
    }
}

/// `*` matches any run of characters (also none); everything else matches itself.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return text.is_empty();
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A text column holding the integer id of a row of a table chosen by the row's type: e.g.
/// `person_attribute.value` holds a location id when its `person_attribute_type.format` is
/// `org.openmrs.Location`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PolymorphicReference {
    pub table: String,
    pub column: String,
    /// The column of `table` that refers to the type row.
    pub type_column: String,
    pub type_table: String,
    /// The column of `type_table` that names the format.
    pub format_column: String,
    /// Format -> the table whose id the column then holds.
    pub targets: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UndeclaredReference {
    pub table: String,
    pub column: String,
    /// The referenced table; the reference points at its primary key.
    pub target: String,
}

impl Policy {
    pub fn openmrs_core() -> Policy {
        // The embedded file is checked by a unit test, so this cannot fail at run time.
        Policy::parse(OPENMRS_CORE_POLICY, "schema-maps/openmrs-core.toml").unwrap_or_default()
    }

    pub fn load(path: &Path) -> Result<Policy, SchemaError> {
        let text = std::fs::read_to_string(path).map_err(|e| SchemaError::Policy {
            path: path.display().to_string(),
            message: format!("cannot read it: {e}"),
        })?;
        Policy::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Policy, SchemaError> {
        toml::from_str(text).map_err(|e| SchemaError::Policy {
            path: origin.to_owned(),
            message: e.to_string(),
        })
    }

    /// Which rows of `table` travel, for a table whose rows travel by name.
    pub fn row_filter(&self, table: &str) -> Option<RowFilter> {
        (table == GLOBAL_PROPERTY && !self.global_properties.is_empty()).then(|| RowFilter {
            column: GLOBAL_PROPERTY_NAME.to_owned(),
            patterns: self.global_properties.clone(),
        })
    }

    pub fn excludes_table(&self, table: &str) -> bool {
        if self.row_filter(table).is_some() {
            return false;
        }
        table.starts_with("tributary_")
            || self
                .exclude_tables
                .iter()
                .any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => table.starts_with(prefix),
                    None => table == pattern,
                })
    }

    pub fn excludes_column(&self, table: &str, column: &str) -> bool {
        self.exclude_columns
            .get(table)
            .is_some_and(|columns| columns.iter().any(|c| c == column))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_openmrs_policy_parses_and_excludes_per_server_tables() {
        let policy = Policy::parse(OPENMRS_CORE_POLICY, "embedded").expect("embedded policy");
        assert!(policy.excludes_table("global_property"));
        assert!(policy.excludes_table("hl7_in_queue"));
        assert!(policy.excludes_table("tributary_parked_row"));
        assert!(!policy.excludes_table("obs"));
        assert!(policy.excludes_column("users", "password"));
        assert!(
            policy
                .references
                .iter()
                .any(|r| r.table == "orders" && r.column == "concept_id")
        );
        // What a 3.0 site sends that a 2.8 HQ lacks: dropped by rule, its user ids translated.
        assert!(policy.dropped_at_hq["drug"].contains(&"description".to_owned()));
        assert!(
            policy
                .references
                .iter()
                .any(|r| r.table == "orders" && r.column == "changed_by" && r.target == "users")
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_the_origin_named() {
        let err = Policy::parse("exclude_tabels = []", "site.toml").unwrap_err();
        assert!(err.to_string().contains("site.toml"), "{err}");
    }

    #[test]
    fn name_patterns_match_with_stars_anywhere() {
        for (pattern, name, matches) in [
            ("facility.code", "facility.code", true),
            ("facility.code", "facility.codes", false),
            ("facility.*", "facility.code", true),
            ("facility.*", "facility.", true),
            ("facility.*", "site.facility.code", false),
            ("*.code", "facility.code", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxcyyb", false),
            ("*", "", true),
            ("a*a", "a", false),
        ] {
            assert_eq!(glob_matches(pattern, name), matches, "{pattern} / {name}");
        }
    }

    #[test]
    fn global_properties_travel_only_when_named() {
        let mut policy = Policy::openmrs_core();
        assert!(policy.excludes_table(GLOBAL_PROPERTY));
        assert_eq!(policy.row_filter(GLOBAL_PROPERTY), None);
        policy.global_properties = vec!["facility.*".into()];
        assert!(!policy.excludes_table(GLOBAL_PROPERTY));
        let filter = policy.row_filter(GLOBAL_PROPERTY).expect("a filter");
        assert_eq!(filter.column, "property");
        assert_eq!(filter.matching("facility.code"), Some("facility.*"));
        assert_eq!(filter.matching("security.passwordMinimumLength"), None);
        assert_eq!(policy.row_filter("obs"), None);
    }
}
