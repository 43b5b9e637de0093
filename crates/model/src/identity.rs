//! Global row identity: how the same row is recognised in every database.
//!
//! An identity is a canonical string, compared byte for byte:
//! - a uuid (own or inherited from a parent through a shared primary key), lower-cased,
//!   because OpenMRS core data mixes cases (`A4F30A1B-...` for the daemon user);
//! - a natural key, for tables without a uuid: the JSON array of the key's parts, where every
//!   reference part is itself the referenced row's identity.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Identity(Arc<str>);

impl Identity {
    /// A uuid identity; case is normalised so `A4F3...` and `a4f3...` are one row.
    pub fn from_uuid(uuid: &str) -> Self {
        // Uuids begin and end with a hex digit: nothing to trim (`trim` decodes characters
        // from both ends, which showed in capture's profile at one identity per row).
        let trimmed = match uuid.as_bytes() {
            [first, .., last] if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() => {
                uuid
            }
            _ => uuid.trim(),
        };
        if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
            Identity(trimmed.to_ascii_lowercase().into())
        } else {
            // The usual case (uuids as OpenMRS writes them): one copy, no lower-casing pass.
            Identity(trimmed.into())
        }
    }

    /// A natural-key identity from its parts, already translated to identities where they
    /// are references. The encoding is a JSON array, so parts cannot run into each other.
    pub fn from_natural_key(parts: &[String]) -> Self {
        Identity(serde_json::to_string(parts).unwrap_or_default().into())
    }

    /// An identity exactly as it travelled (already canonical).
    pub fn from_raw(identity: impl Into<Arc<str>>) -> Self {
        Identity(identity.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A reference to one row of one table, by identity: what travels instead of an integer key.
/// Table names and identities are shared strings: the many references to one parent cost a
/// reference count each, not a copy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowRef {
    pub table: Arc<str>,
    pub identity: Identity,
}

impl RowRef {
    pub fn new(table: impl Into<Arc<str>>, identity: Identity) -> Self {
        RowRef {
            table: table.into(),
            identity,
        }
    }
}

impl fmt::Display for RowRef {
    /// Identities are uuids or keys of metadata, not clinical values, so they may be shown to
    /// operators (parking reasons name what a row waits for).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.table, self.identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_identities_ignore_case_and_padding() {
        assert_eq!(
            Identity::from_uuid(" A4F30A1B-5EB9 "),
            Identity::from_uuid("a4f30a1b-5eb9")
        );
        for (padded, bare) in [
            ("\tab-1\n", "ab-1"),
            ("ab-1 ", "ab-1"),
            (" ab-1", "ab-1"),
            ("\u{a0}AB-1\u{2003}", "ab-1"),
            ("a", "a"),
            ("  ", ""),
            ("", ""),
        ] {
            assert_eq!(Identity::from_uuid(padded).as_str(), bare, "{padded:?}");
        }
    }

    #[test]
    fn natural_keys_do_not_run_together() {
        let a = Identity::from_natural_key(&["ab".into(), "c".into()]);
        let b = Identity::from_natural_key(&["a".into(), "bc".into()]);
        assert_ne!(a, b);
    }
}
