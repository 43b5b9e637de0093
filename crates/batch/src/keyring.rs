//! The applier's keyring: every site key it can open batches with, indexed
//! by key id.
//!
//! Invariants: a key id maps to exactly one key (site + bytes); re-adding an
//! identical key is a no-op, adding a different key under a known key id is
//! an error, so a keyring never silently changes which site a key id means.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::KeyError;
use crate::site_key::SiteKey;

/// A set of site keys, looked up by key id.
#[derive(Debug, Default, Clone)]
pub struct Keyring {
    keys: BTreeMap<String, SiteKey>,
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Self {
        Keyring::default()
    }

    /// Adds a key. Adding the same key twice is fine; a different key (other
    /// site or other bytes) under an existing key id is refused.
    pub fn insert(&mut self, key: SiteKey) -> Result<(), KeyError> {
        match self.keys.get(key.key_id()) {
            Some(existing) if existing.same_key_as(&key) => Ok(()),
            Some(existing) => Err(KeyError::DuplicateKeyId {
                key_id: key.key_id().to_owned(),
                existing_site: existing.site_id().to_owned(),
                new_site: key.site_id().to_owned(),
            }),
            None => {
                self.keys.insert(key.key_id().to_owned(), key);
                Ok(())
            }
        }
    }

    /// Loads every `*.key` file in `dir` (not recursive), in name order.
    pub fn load_dir(dir: &Path) -> Result<Keyring, KeyError> {
        let io_error = |source| KeyError::Io {
            operation: "list key directory",
            path: dir.to_owned(),
            source,
        };
        let mut paths = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error)? {
            let path = entry.map_err(io_error)?.path();
            if path.extension().is_some_and(|ext| ext == "key") {
                paths.push(path);
            }
        }
        paths.sort();
        Keyring::load_files(paths)
    }

    /// Loads the given key files.
    pub fn load_files<I, P>(paths: I) -> Result<Keyring, KeyError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<Path>,
    {
        let mut keyring = Keyring::new();
        for path in paths {
            let path = path.as_ref();
            let key = SiteKey::load(path)?;
            let key_id = key.key_id().to_owned();
            keyring
                .insert(key)
                .map_err(|_| KeyError::ConflictingKeyFile {
                    path: PathBuf::from(path),
                    key_id,
                })?;
        }
        Ok(keyring)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the keyring holds no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key with this key id, if any.
    pub(crate) fn get(&self, key_id: &str) -> Option<&SiteKey> {
        self.keys.get(key_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identifier::KEY_ID_LEN;
    use zeroize::Zeroizing;

    fn key_with_id(site: &str, key_id: &str, fill: u8) -> SiteKey {
        SiteKey::from_parts(site.into(), key_id.into(), Zeroizing::new([fill; 32])).unwrap()
    }

    #[test]
    fn insert_is_idempotent_for_identical_keys() {
        let key = SiteKey::generate("clinic-1").unwrap();
        let mut keyring = Keyring::new();
        keyring.insert(key.clone()).unwrap();
        keyring.insert(key.clone()).unwrap();
        assert_eq!(keyring.len(), 1);
        assert!(
            keyring
                .get(key.key_id())
                .is_some_and(|k| k.same_key_as(&key))
        );
    }

    #[test]
    fn insert_refuses_a_different_key_under_a_known_id() {
        let id = "0".repeat(KEY_ID_LEN);
        let mut keyring = Keyring::new();
        keyring.insert(key_with_id("a", &id, 1)).unwrap();
        assert!(matches!(
            keyring.insert(key_with_id("a", &id, 2)),
            Err(KeyError::DuplicateKeyId { .. })
        ));
        assert!(matches!(
            keyring.insert(key_with_id("b", &id, 1)),
            Err(KeyError::DuplicateKeyId { .. })
        ));
        assert!(
            keyring
                .get(&id)
                .is_some_and(|k| k.same_key_as(&key_with_id("a", &id, 1)))
        );
    }

    #[test]
    fn load_dir_reads_only_key_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = SiteKey::generate("a").unwrap();
        let b = SiteKey::generate("b").unwrap();
        a.write_new(&dir.path().join(a.file_name())).unwrap();
        b.write_new(&dir.path().join(b.file_name())).unwrap();
        fs::write(dir.path().join("README.txt"), "not a key").unwrap();
        let keyring = Keyring::load_dir(dir.path()).unwrap();
        assert_eq!(keyring.len(), 2);
        assert!(keyring.get(b.key_id()).is_some_and(|k| k.same_key_as(&b)));
    }

    #[test]
    fn load_dir_reports_conflicting_and_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        let id = "0".repeat(KEY_ID_LEN);
        key_with_id("a", &id, 1)
            .write_new(&dir.path().join("1.key"))
            .unwrap();
        key_with_id("a", &id, 2)
            .write_new(&dir.path().join("2.key"))
            .unwrap();
        let err = Keyring::load_dir(dir.path()).unwrap_err();
        assert!(
            matches!(&err, KeyError::ConflictingKeyFile { path, .. } if path.ends_with("2.key")),
            "{err}"
        );

        let missing = Keyring::load_dir(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(
            missing,
            KeyError::Io {
                operation: "list key directory",
                ..
            }
        ));
    }
}
