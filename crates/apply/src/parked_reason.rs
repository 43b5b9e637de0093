//! Why a parked row waits, in words an operator understands: "waiting for encounter
//! 5a1c0d2e..., not yet received from site kisumu-01".
//!
//! The reason stored with a parked row (`tributary_parked_row.reason`) names full identities
//! and is what the applier compares to avoid rewriting an unchanged verdict; this module
//! builds the operator's sentence from what the row waits for *now* (each awaited row: at HQ
//! already, itself parked, or not received yet). Identities are uuids or keys of metadata,
//! never clinical values, and are shortened here; nothing in this module sees row values.

use serde::Serialize;

/// Characters of a uuid kept when shortened (enough to find it, short enough to read).
const UUID_SHOWN: usize = 8;
/// Characters of a natural-key identity kept when shortened.
const KEY_SHOWN: usize = 24;
/// Awaited rows named in one reason; the rest are counted.
const WAITS_SHOWN: usize = 3;

/// One row a parked row waits for, and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AwaitedRow {
    pub table: String,
    pub identity: String,
    #[serde(flatten)]
    pub state: AwaitedState,
}

/// Where an awaited row stands at HQ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AwaitedState {
    /// HQ has it: the next retry (or `tributary parked retry`) releases the waiting row.
    AtHq,
    /// HQ received it from `site_id` but it is parked itself (parked row `parked_id`).
    Parked { parked_id: u64, site_id: String },
    /// HQ has not received it; the site that referred to it is expected to send it.
    NotReceived { site_id: String },
}

impl AwaitedState {
    /// "not yet received from site kisumu-01".
    pub fn describe(&self) -> String {
        match self {
            AwaitedState::AtHq => "present at HQ now (a retry releases it)".to_owned(),
            AwaitedState::Parked { parked_id, site_id } => {
                format!("received from site {site_id} but itself parked (#{parked_id})")
            }
            AwaitedState::NotReceived { site_id } => {
                format!("not yet received from site {site_id}")
            }
        }
    }
}

impl AwaitedRow {
    /// "encounter 5a1c0d2e..., not yet received from site kisumu-01".
    pub fn describe(&self) -> String {
        format!(
            "{} {}, {}",
            self.table,
            short_identity(&self.identity),
            self.state.describe()
        )
    }
}

/// The operator's reason for a parked row of `table`/`identity`: what it waits for, or (a row
/// HQ refused, or one that cannot be written by waiting) the recorded reason.
pub fn describe(table: &str, identity: &str, waits: &[AwaitedRow], recorded: &str) -> String {
    if waits.is_empty() {
        return recorded.to_owned();
    }
    // A change queued behind an earlier parked change to the same row waits on the row itself.
    if let [own] = waits
        && own.table == table
        && own.identity == identity
    {
        return match &own.state {
            AwaitedState::Parked { parked_id, .. } => {
                format!("queued behind an earlier parked change to the same row (#{parked_id})")
            }
            _ => "queued behind an earlier change to the same row (a retry releases it)".to_owned(),
        };
    }
    let mut shown: Vec<String> = waits
        .iter()
        .take(WAITS_SHOWN)
        .map(AwaitedRow::describe)
        .collect();
    if waits.len() > WAITS_SHOWN {
        shown.push(format!("and {} more", waits.len() - WAITS_SHOWN));
    }
    format!("waiting for {}", shown.join("; "))
}

/// An identity shortened for reading: a uuid to its first characters, a long natural key cut.
pub fn short_identity(identity: &str) -> String {
    let is_uuid =
        identity.len() == 36 && identity.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    let keep = if is_uuid { UUID_SHOWN } else { KEY_SHOWN };
    match identity.char_indices().nth(keep) {
        Some((cut, _)) => format!("{}...", &identity[..cut]),
        None => identity.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENCOUNTER: &str = "5a1c0d2e-0000-4000-8000-000000000001";

    fn awaited(table: &str, identity: &str, state: AwaitedState) -> AwaitedRow {
        AwaitedRow {
            table: table.to_owned(),
            identity: identity.to_owned(),
            state,
        }
    }

    #[test]
    fn a_missing_parent_is_named_by_table_short_identity_and_site() {
        let waits = [awaited(
            "encounter",
            ENCOUNTER,
            AwaitedState::NotReceived {
                site_id: "kisumu-01".to_owned(),
            },
        )];
        assert_eq!(
            describe("obs", "0b5e", &waits, "waiting for encounter[...]"),
            "waiting for encounter 5a1c0d2e..., not yet received from site kisumu-01"
        );
    }

    #[test]
    fn a_change_queued_behind_its_row_says_so() {
        let waits = [awaited(
            "obs",
            ENCOUNTER,
            AwaitedState::Parked {
                parked_id: 12,
                site_id: "a".to_owned(),
            },
        )];
        let reason = describe("obs", ENCOUNTER, &waits, "");
        assert_eq!(
            reason,
            "queued behind an earlier parked change to the same row (#12)"
        );
    }

    #[test]
    fn a_refused_row_keeps_its_recorded_reason_and_long_lists_are_bounded() {
        assert_eq!(
            describe("obs", ENCOUNTER, &[], "HQ refused the row: x"),
            "HQ refused the row: x"
        );
        let waits: Vec<AwaitedRow> = (0..5)
            .map(|i| awaited("person", &format!("p-{i}"), AwaitedState::AtHq))
            .collect();
        let reason = describe("obs", ENCOUNTER, &waits, "");
        assert!(reason.ends_with("; and 2 more"), "{reason}");
        assert!(reason.contains("person p-0, present at HQ now"), "{reason}");
    }

    #[test]
    fn identities_shorten_by_kind_and_never_split_a_character() {
        assert_eq!(short_identity(ENCOUNTER), "5a1c0d2e...");
        assert_eq!(short_identity("[\"short\"]"), "[\"short\"]");
        let key = "[\"é".repeat(20);
        let short = short_identity(&key);
        assert!(short.ends_with("...") && short.chars().count() == KEY_SHOWN + 3);
    }
}
