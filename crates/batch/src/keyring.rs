//! The applier's keyring: every site key it can open batches with, indexed
//! by key id, and the state of each key (active, retired, revoked).
//!
//! A site may hold several key ids at once: during a rotation the site
//! switches to its new key while HQ still opens batches sealed with the old
//! one, until the operator marks the old one retired. A revoked key is
//! remembered even without its key bytes, so batches sealed with it are
//! rejected as revoked rather than as unknown.
//!
//! Invariants: a key id maps to exactly one site (and, when its bytes are
//! present, one key); re-adding an identical key is a no-op, adding a
//! different key under a known key id is an error, so a keyring never
//! silently changes which site a key id means; a revoked key never becomes
//! retired or active again through [`Keyring::retire`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::KeyError;
use crate::identifier::{validate_key_id, validate_site_id};
use crate::key_states::{self, KEY_STATES_FILE_NAME, KeyState};
use crate::site_key::SiteKey;

/// A set of site keys and key states, looked up by key id.
#[derive(Debug, Default, Clone)]
pub struct Keyring {
    keys: BTreeMap<String, SiteKey>,
    /// Retired and revoked key ids, with the site each belongs to.
    marks: BTreeMap<String, Mark>,
}

#[derive(Debug, Clone)]
struct Mark {
    site_id: String,
    revoked: bool,
}

/// What the keyring knows about one key id.
#[derive(Debug)]
pub(crate) struct KeyEntry<'a> {
    /// The site the key belongs to.
    pub(crate) site_id: &'a str,
    pub(crate) standing: Standing<'a>,
}

/// Whether a key opens batches; only an active key hands out its bytes.
#[derive(Debug)]
pub(crate) enum Standing<'a> {
    Active(&'a SiteKey),
    Retired,
    Revoked,
}

impl Standing<'_> {
    fn state(&self) -> KeyState {
        match self {
            Standing::Active(_) => KeyState::Active,
            Standing::Retired => KeyState::Retired,
            Standing::Revoked => KeyState::Revoked,
        }
    }
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Self {
        Keyring::default()
    }

    /// Adds a key. Adding the same key twice is fine; a different key (other
    /// site or other bytes) under an existing key id is refused, and so is a
    /// key whose id is already marked retired or revoked for another site.
    pub fn insert(&mut self, key: SiteKey) -> Result<(), KeyError> {
        if let Some(mark) = self.marks.get(key.key_id())
            && mark.site_id != key.site_id()
        {
            return Err(KeyError::StateSiteMismatch {
                key_id: key.key_id().to_owned(),
                key_site: key.site_id().to_owned(),
                state_site: mark.site_id.clone(),
            });
        }
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

    /// Marks `key_id` (a key of `site_id`) retired: batches sealed with it
    /// are refused from now on. A revoked key stays revoked. The key bytes
    /// need not be in the keyring.
    pub fn retire(&mut self, key_id: &str, site_id: &str) -> Result<(), KeyError> {
        self.set_state(key_id, site_id, KeyState::Retired)
    }

    /// Marks `key_id` (a key of `site_id`) revoked: batches sealed with it
    /// are refused from now on. The key bytes need not be in the keyring.
    pub fn revoke(&mut self, key_id: &str, site_id: &str) -> Result<(), KeyError> {
        self.set_state(key_id, site_id, KeyState::Revoked)
    }

    fn set_state(&mut self, key_id: &str, site_id: &str, state: KeyState) -> Result<(), KeyError> {
        validate_key_id(key_id)?;
        validate_site_id(site_id)?;
        let known_site = self
            .keys
            .get(key_id)
            .map(SiteKey::site_id)
            .or_else(|| self.marks.get(key_id).map(|m| m.site_id.as_str()));
        if let Some(known_site) = known_site
            && known_site != site_id
        {
            return Err(KeyError::StateSiteMismatch {
                key_id: key_id.to_owned(),
                key_site: known_site.to_owned(),
                state_site: site_id.to_owned(),
            });
        }
        let revoked = match state {
            // Every key without a mark is active: an `active` line only checks its site.
            KeyState::Active => return Ok(()),
            KeyState::Retired => false,
            KeyState::Revoked => true,
        };
        let mark = self.marks.entry(key_id.to_owned()).or_insert(Mark {
            site_id: site_id.to_owned(),
            revoked,
        });
        mark.revoked |= revoked;
        Ok(())
    }

    /// Loads every `*.key` file in `dir` (not recursive), in name order, and
    /// the key states of the optional `key-states` file there.
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
        let mut keyring = Keyring::load_files(paths)?;
        keyring.load_states_file(&dir.join(KEY_STATES_FILE_NAME))?;
        Ok(keyring)
    }

    /// Loads the given key files (all active).
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

    /// Applies the states listed in a key-states file; a missing file
    /// changes nothing.
    pub fn load_states_file(&mut self, path: &Path) -> Result<(), KeyError> {
        for line in key_states::read(path)? {
            self.set_state(&line.key_id, &line.site_id, line.state)
                .map_err(|e| KeyError::StatesParse {
                    path: path.to_owned(),
                    line: line.line,
                    problem: e.to_string(),
                })?;
        }
        Ok(())
    }

    /// Number of keys whose bytes the keyring holds, whatever their state.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the keyring holds no key bytes at all (states alone open
    /// nothing).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Number of keys that open batches.
    pub fn active_len(&self) -> usize {
        self.keys
            .keys()
            .filter(|id| !self.marks.contains_key(*id))
            .count()
    }

    /// The state of `key_id`, or `None` when the keyring does not know it.
    pub fn state(&self, key_id: &str) -> Option<KeyState> {
        self.entry(key_id).map(|entry| entry.standing.state())
    }

    /// The key ids of `site_id` with their states, in key id order.
    pub fn site_keys(&self, site_id: &str) -> Vec<(String, KeyState)> {
        let mut ids: Vec<&String> = self
            .keys
            .iter()
            .filter(|(_, key)| key.site_id() == site_id)
            .map(|(id, _)| id)
            .chain(
                self.marks
                    .iter()
                    .filter(|(_, mark)| mark.site_id == site_id)
                    .map(|(id, _)| id),
            )
            .collect();
        ids.sort();
        ids.dedup();
        ids.into_iter()
            .filter_map(|id| Some((id.clone(), self.state(id)?)))
            .collect()
    }

    /// Every site with a key id in the keyring, whatever its state, in site order.
    pub fn sites(&self) -> BTreeSet<&str> {
        self.keys
            .values()
            .map(SiteKey::site_id)
            .chain(self.marks.values().map(|mark| mark.site_id.as_str()))
            .collect()
    }

    /// Whether any key id of `site_id` is known, whatever its state.
    pub fn knows_site(&self, site_id: &str) -> bool {
        self.keys.values().any(|key| key.site_id() == site_id)
            || self.marks.values().any(|mark| mark.site_id == site_id)
    }

    /// What the keyring knows about `key_id`.
    pub(crate) fn entry(&self, key_id: &str) -> Option<KeyEntry<'_>> {
        if let Some(mark) = self.marks.get(key_id) {
            return Some(KeyEntry {
                site_id: &mark.site_id,
                standing: if mark.revoked {
                    Standing::Revoked
                } else {
                    Standing::Retired
                },
            });
        }
        self.keys.get(key_id).map(|key| KeyEntry {
            site_id: key.site_id(),
            standing: Standing::Active(key),
        })
    }

    /// The active key with this key id, if any.
    #[cfg(test)]
    pub(crate) fn get(&self, key_id: &str) -> Option<&SiteKey> {
        match self.entry(key_id)?.standing {
            Standing::Active(key) => Some(key),
            Standing::Retired | Standing::Revoked => None,
        }
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

    #[test]
    fn a_site_holds_several_key_ids_and_each_has_a_state() {
        let old = SiteKey::generate("clinic-1").unwrap();
        let new = SiteKey::generate("clinic-1").unwrap();
        let other = SiteKey::generate("clinic-2").unwrap();
        let mut keyring = Keyring::new();
        for key in [&old, &new, &other] {
            keyring.insert(key.clone()).unwrap();
        }
        assert_eq!(keyring.active_len(), 3);
        keyring.retire(old.key_id(), "clinic-1").unwrap();
        assert_eq!(keyring.state(old.key_id()), Some(KeyState::Retired));
        assert_eq!(keyring.state(new.key_id()), Some(KeyState::Active));
        assert_eq!(keyring.state(&"f".repeat(KEY_ID_LEN)), None);
        assert!(
            keyring.get(old.key_id()).is_none(),
            "a retired key opens nothing"
        );
        let mut expected = vec![
            (old.key_id().to_owned(), KeyState::Retired),
            (new.key_id().to_owned(), KeyState::Active),
        ];
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(keyring.site_keys("clinic-1"), expected);
        assert_eq!((keyring.len(), keyring.active_len()), (3, 2));
    }

    #[test]
    fn revocation_is_sticky_and_needs_no_key_bytes() {
        let id = "ab".repeat(KEY_ID_LEN / 2);
        let mut keyring = Keyring::new();
        keyring.revoke(&id, "clinic-1").unwrap();
        keyring.retire(&id, "clinic-1").unwrap();
        assert_eq!(keyring.state(&id), Some(KeyState::Revoked));
        assert!(keyring.knows_site("clinic-1") && !keyring.knows_site("clinic-2"));
        assert_eq!(keyring.sites(), BTreeSet::from(["clinic-1"]));
        assert!(keyring.is_empty(), "states alone hold no key bytes");
        // The key file arriving later does not revive it.
        keyring.insert(key_with_id("clinic-1", &id, 3)).unwrap();
        assert_eq!(keyring.state(&id), Some(KeyState::Revoked));
    }

    #[test]
    fn a_state_must_name_the_site_the_key_belongs_to() {
        let id = "0".repeat(KEY_ID_LEN);
        let mut keyring = Keyring::new();
        keyring.insert(key_with_id("a", &id, 1)).unwrap();
        assert!(matches!(
            keyring.revoke(&id, "b"),
            Err(KeyError::StateSiteMismatch { .. })
        ));
        assert_eq!(keyring.state(&id), Some(KeyState::Active));
        let other = "1".repeat(KEY_ID_LEN);
        keyring.retire(&other, "a").unwrap();
        assert!(matches!(
            keyring.insert(key_with_id("b", &other, 1)),
            Err(KeyError::StateSiteMismatch { .. })
        ));
        assert!(matches!(
            keyring.revoke("XYZ", "a"),
            Err(KeyError::InvalidKeyId(_))
        ));
        assert!(matches!(
            keyring.revoke(&other, "../a"),
            Err(KeyError::InvalidSiteId(_))
        ));
    }

    #[test]
    fn load_dir_applies_the_key_states_file() {
        let dir = tempfile::tempdir().unwrap();
        let old = SiteKey::generate("clinic-1").unwrap();
        let new = SiteKey::generate("clinic-1").unwrap();
        for key in [&old, &new] {
            key.write_new(&dir.path().join(key.file_name())).unwrap();
        }
        let gone = "0123456789abcdef";
        fs::write(
            dir.path().join(KEY_STATES_FILE_NAME),
            format!(
                "tributary-key-states v1\nretired {} clinic-1\nrevoked {gone} clinic-1\n",
                old.key_id()
            ),
        )
        .unwrap();
        let keyring = Keyring::load_dir(dir.path()).unwrap();
        assert_eq!(keyring.state(old.key_id()), Some(KeyState::Retired));
        assert_eq!(keyring.state(new.key_id()), Some(KeyState::Active));
        assert_eq!(keyring.state(gone), Some(KeyState::Revoked));
        assert_eq!((keyring.len(), keyring.active_len()), (2, 1));

        fs::write(
            dir.path().join(KEY_STATES_FILE_NAME),
            format!(
                "tributary-key-states v1\n\nrevoked {} clinic-9\n",
                new.key_id()
            ),
        )
        .unwrap();
        let err = Keyring::load_dir(dir.path()).unwrap_err();
        assert!(
            matches!(&err, KeyError::StatesParse { line: 3, problem, .. } if problem.contains("clinic-1")),
            "{err}"
        );
    }
}
