//! What happens when a site's change meets an HQ row that changed since the applier last wrote
//! it from that site (invariant 5): each table follows a policy, `[hq.conflicts]` in the
//! configuration, and the default keeps both versions for a person to decide.

use crate::usernames::UsernamePolicy;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use tributary_schema::SchemaMap;

/// The column whose later value wins under [`ConflictPolicy::NewestDateChanged`].
pub const DATE_CHANGED: &str = "date_changed";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    /// Keep HQ's row as it is and record both versions in the conflict queue for a person
    /// (`tributary conflicts`); later changes to the row wait behind it.
    #[default]
    Queue,
    /// The site's change is written over HQ's row; the conflict is recorded as resolved.
    SiteWins,
    /// HQ's row stays; the site's change is recorded as a resolved conflict and not written.
    HqWins,
    /// The version with the later `date_changed` wins (HQ on a tie). Deletes, and tables
    /// without a `date_changed` column, go to the queue.
    NewestDateChanged,
}

impl ConflictPolicy {
    pub fn name(self) -> &'static str {
        match self {
            ConflictPolicy::Queue => "queue",
            ConflictPolicy::SiteWins => "site-wins",
            ConflictPolicy::HqWins => "hq-wins",
            ConflictPolicy::NewestDateChanged => "newest-date-changed",
        }
    }
}

impl fmt::Display for ConflictPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The policy of every table: a default and per-table choices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConflictPolicies {
    pub default: ConflictPolicy,
    pub tables: BTreeMap<String, ConflictPolicy>,
    /// What a user whose login name another HQ user has does.
    pub usernames: UsernamePolicy,
}

impl ConflictPolicies {
    pub fn for_table(&self, table: &str) -> ConflictPolicy {
        self.tables.get(table).copied().unwrap_or(self.default)
    }

    /// A policy named for a table HQ does not sync is a typo or a stale configuration: say
    /// which, before anything is applied under a policy nobody chose.
    pub fn check_tables(&self, schema: &SchemaMap) -> Result<(), String> {
        let unknown: Vec<&str> = self
            .tables
            .keys()
            .filter(|t| schema.table(t).is_none())
            .map(String::as_str)
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        Err(format!(
            "[hq.conflicts] tables names {}, not synced at HQ (missing, or excluded by the schema \
             map); correct the name or remove the line",
            unknown
                .iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_without_a_choice_follow_the_default() {
        let policies = ConflictPolicies {
            default: ConflictPolicy::HqWins,
            tables: BTreeMap::from([("obs".to_owned(), ConflictPolicy::SiteWins)]),
            ..ConflictPolicies::default()
        };
        assert_eq!(policies.for_table("obs"), ConflictPolicy::SiteWins);
        assert_eq!(policies.for_table("person"), ConflictPolicy::HqWins);
        assert_eq!(
            ConflictPolicies::default().for_table("person"),
            ConflictPolicy::Queue
        );
    }

    #[test]
    fn policy_names_read_as_configured() {
        #[derive(Deserialize)]
        struct Holder {
            policy: ConflictPolicy,
        }
        for policy in [
            ConflictPolicy::Queue,
            ConflictPolicy::SiteWins,
            ConflictPolicy::HqWins,
            ConflictPolicy::NewestDateChanged,
        ] {
            let text = format!("{{\"policy\": \"{}\"}}", policy.name());
            let read: Holder = serde_json::from_str(&text).unwrap();
            assert_eq!(read.policy, policy);
        }
        assert!(serde_json::from_str::<Holder>("{\"policy\": \"newest\"}").is_err());
    }
}
