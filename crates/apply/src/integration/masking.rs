//! Column masking for the integration topics: columns an integration must not see in clear
//! (names, identifiers, addresses) are replaced by a keyed hash or left out.
//!
//! The hash is HMAC-SHA-256 under a secret key kept at HQ, in lower-case hex: equal values
//! still match across events and tables (a consumer can join on them), but a value cannot be
//! found by hashing guesses without the key.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::fmt;
use tributary_model::Value;

/// What becomes of a masked column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskAction {
    /// Replaced by the keyed hash of its value (nulls stay null).
    Hash,
    /// Left out of the event.
    Drop,
}

/// Masking rules per table and column, with the hash key.
#[derive(Clone, Default)]
pub struct Masking {
    rules: BTreeMap<(String, String), MaskAction>,
    key: Vec<u8>,
}

impl fmt::Debug for Masking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masking")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl Masking {
    /// Rules keyed by (table, column); `key` is needed when any rule hashes.
    pub fn new(rules: BTreeMap<(String, String), MaskAction>, key: Vec<u8>) -> Masking {
        Masking { rules, key }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules, for checking them against HQ's schema.
    pub fn rules(&self) -> impl Iterator<Item = (&str, &str, MaskAction)> {
        self.rules
            .iter()
            .map(|((table, column), action)| (table.as_str(), column.as_str(), *action))
    }

    /// What to do with `table.column`: `None` when it is published as it is.
    pub fn action(&self, table: &str, column: &str) -> Option<MaskAction> {
        if self.rules.is_empty() {
            return None;
        }
        self.rules
            .get(&(table.to_owned(), column.to_owned()))
            .copied()
    }

    /// The keyed hash of a value, in hex; `None` for a null.
    pub fn hash(&self, value: &Value) -> Option<String> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).ok()?;
        match value {
            Value::Null => return None,
            Value::Int(v) => mac.update(v.to_string().as_bytes()),
            Value::UInt(v) => mac.update(v.to_string().as_bytes()),
            Value::Float(v) => mac.update(v.to_string().as_bytes()),
            Value::Text(s) => mac.update(s.as_bytes()),
            Value::Bytes(b) => mac.update(b),
            Value::Ref(r) => mac.update(r.identity.as_str().as_bytes()),
        }
        Some(hex::encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masking(key: &[u8]) -> Masking {
        let mut rules = BTreeMap::new();
        rules.insert(
            ("person_name".into(), "given_name".into()),
            MaskAction::Hash,
        );
        Masking::new(rules, key.to_vec())
    }

    #[test]
    fn the_hash_is_keyed_stable_and_not_the_plain_digest() {
        let a = masking(b"0123456789abcdef");
        let b = masking(b"fedcba9876543210");
        let value = Value::Text("Amina".into());
        let hashed = a.hash(&value).expect("a hash");
        assert_eq!(hashed.len(), 64);
        assert_eq!(a.hash(&value), Some(hashed.clone()), "stable");
        assert_ne!(b.hash(&value), Some(hashed.clone()), "depends on the key");
        // RFC 4231 test case 2's key and data, to pin the algorithm.
        let rfc = Masking::new(BTreeMap::new(), b"Jefe".to_vec());
        assert_eq!(
            rfc.hash(&Value::Text("what do ya want for nothing?".into())),
            Some("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843".into())
        );
        assert_eq!(a.hash(&Value::Null), None);
    }

    #[test]
    fn rules_name_table_and_column() {
        let m = masking(b"0123456789abcdef");
        assert_eq!(
            m.action("person_name", "given_name"),
            Some(MaskAction::Hash)
        );
        assert_eq!(m.action("person_name", "family_name"), None);
        assert_eq!(m.action("person", "given_name"), None);
    }
}
