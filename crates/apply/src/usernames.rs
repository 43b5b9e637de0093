//! Login names that clash across sites. OpenMRS keeps `users.username` and `users.system_id`
//! unique in its application, not in the database, so two clinics that each created "nurse1"
//! would give HQ two users with one login name. Before a user row is written, HQ is asked
//! whether another user (another uuid) already has its username or system id; the declared
//! policy (`[hq.conflicts] usernames`) then parks the row with the reason (the default) or
//! writes it with the names suffixed by the site id.

use crate::writer::SqlRow;
use mysql_async::prelude::*;
use mysql_async::{Transaction, Value as Sql};
use serde::Deserialize;
use tributary_model::RowChange;

/// The table and columns concerned.
pub const USERS: &str = "users";
const LOGIN_COLUMNS: [&str; 2] = ["username", "system_id"];
/// Both columns are VARCHAR(50).
const MAX_LENGTH: usize = 50;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UsernamePolicy {
    /// Park the user row with the reason until someone renames one of the two.
    #[default]
    Park,
    /// Write it with `@<site>` appended to the clashing names (cut to the column's 50).
    SuffixSite,
}

/// What a user row needs before it is written.
#[derive(Debug, PartialEq, Eq)]
pub enum Clash {
    None,
    /// The names were suffixed (policy `suffix-site`).
    Renamed,
    /// The row must park, for this reason.
    Park(String),
}

/// Checks a user row's login names against HQ's other users and applies the policy to
/// `values`.
pub async fn settle(
    tx: &mut Transaction<'_>,
    policy: UsernamePolicy,
    site_id: &str,
    change: &RowChange,
    values: &mut SqlRow,
) -> mysql_async::Result<Clash> {
    let mut clashing = Vec::new();
    for column in LOGIN_COLUMNS {
        let Some(Sql::Bytes(name)) = values.get(column) else {
            continue;
        };
        if name.is_empty() {
            continue;
        }
        let taken: Option<u8> = tx
            .exec_first(
                format!("SELECT 1 FROM users WHERE {column} = ? AND uuid <> ? LIMIT 1"),
                (name.clone(), change.identity.as_str()),
            )
            .await?;
        if taken.is_some() {
            clashing.push(column);
        }
    }
    if clashing.is_empty() {
        return Ok(Clash::None);
    }
    match policy {
        UsernamePolicy::Park => Ok(Clash::Park(format!(
            "another HQ user already has this user's {} (created at HQ or sent by another \
             site); rename one of them, or set [hq.conflicts] usernames = \"suffix-site\" to \
             write such users as <name>@<site>",
            clashing.join(" and ")
        ))),
        UsernamePolicy::SuffixSite => {
            for column in &clashing {
                if let Some(Sql::Bytes(name)) = values.get_mut(column) {
                    *name = suffixed(&String::from_utf8_lossy(name), site_id).into_bytes();
                }
            }
            tracing::info!(
                site = %site_id,
                columns = %clashing.join(","),
                "a user's login name clashed with another HQ user's; written with the site id \
                 appended ([hq.conflicts] usernames = \"suffix-site\")"
            );
            Ok(Clash::Renamed)
        }
    }
}

/// `name@site`, cut (on a character boundary) so that it fits the column.
fn suffixed(name: &str, site_id: &str) -> String {
    let suffix = format!("@{site_id}");
    let room = MAX_LENGTH.saturating_sub(suffix.chars().count());
    let kept: String = name.chars().take(room).collect();
    format!("{kept}{suffix}").chars().take(MAX_LENGTH).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_fit_the_column_and_never_split_a_character() {
        assert_eq!(suffixed("nurse1", "clinic-b"), "nurse1@clinic-b");
        let long = "ü".repeat(60);
        let cut = suffixed(&long, "kisumu-01");
        assert_eq!(cut.chars().count(), MAX_LENGTH);
        assert!(cut.ends_with("@kisumu-01"));
    }
}
