//! Site ids and key ids: the two names that appear in batch headers, key
//! files and transport directory names.
//!
//! Invariants: a valid site id is 1-64 characters of `[A-Za-z0-9_.-]` that
//! does not start with `.` (so it can never be `.`/`..` or a hidden directory
//! name); a valid key id is exactly 16 lowercase hexadecimal characters.
//! Every constructor of a header, key or directory name checks these rules.

use thiserror::Error;

/// Longest accepted site id, in bytes.
pub const MAX_SITE_ID_LEN: usize = 64;

/// Length of a key id in characters (8 random bytes, hex encoded).
pub const KEY_ID_LEN: usize = 16;

/// A site id broke the naming rules.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "site id {value:?} is invalid: {problem}; a site id is 1-64 characters of \
     A-Z, a-z, 0-9, '_', '.' or '-' and does not start with '.'"
)]
pub struct InvalidSiteId {
    value: String,
    problem: &'static str,
}

impl InvalidSiteId {
    /// The rejected value.
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// A key id broke the naming rules.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "key id {value:?} is invalid: a key id is exactly 16 lowercase hex characters \
     (as written by `SiteKey::generate`)"
)]
pub struct InvalidKeyId {
    value: String,
}

impl InvalidKeyId {
    /// The rejected value.
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// Checks that `value` is a usable site id.
pub fn validate_site_id(value: &str) -> Result<(), InvalidSiteId> {
    let problem = if value.is_empty() {
        Some("it is empty")
    } else if value.len() > MAX_SITE_ID_LEN {
        Some("it is longer than 64 characters")
    } else if value.starts_with('.') {
        Some("it starts with '.'")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        Some("it contains a character outside A-Z, a-z, 0-9, '_', '.', '-'")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(InvalidSiteId {
            value: value.to_owned(),
            problem,
        }),
        None => Ok(()),
    }
}

/// Checks that `value` is a usable key id.
pub fn validate_key_id(value: &str) -> Result<(), InvalidKeyId> {
    let valid = value.len() == KEY_ID_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if valid {
        Ok(())
    } else {
        Err(InvalidKeyId {
            value: value.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_site_ids() {
        for ok in ["a", "clinic-01", "Kisumu_North.2", "0", &"x".repeat(64)] {
            assert_eq!(validate_site_id(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_site_ids_and_names_the_value() {
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "ünï",
            "a\0",
            &"x".repeat(65),
        ] {
            let err = validate_site_id(bad).expect_err(bad);
            assert_eq!(err.value(), bad);
            assert!(err.to_string().contains(&format!("{bad:?}")));
        }
    }

    #[test]
    fn key_ids_are_sixteen_lowercase_hex() {
        assert!(validate_key_id("0123456789abcdef").is_ok());
        for bad in [
            "",
            "0123456789abcde",
            "0123456789abcdef0",
            "0123456789ABCDEF",
            "0123456789abcdeg",
        ] {
            assert!(validate_key_id(bad).is_err(), "{bad}");
        }
    }
}
