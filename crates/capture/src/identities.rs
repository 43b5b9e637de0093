//! Source integer key -> global identity, for the references capture must translate.
//!
//! Capture learns the mapping from the rows it sees (every inserted or updated row of a uuid
//! table teaches its own key) and asks the source database, batched per table, for the keys it
//! has not seen. Inherited identities share the root's key (patient 7 is person 7), so the
//! cache is keyed by the root table.
//!
//! The cache is bounded (invariant 8) by generations, an approximation of least-recently-used
//! that costs one hash insert per learned key instead of a linked-list node: keys learned or
//! used go into the recent generation; once it holds half the capacity, at the start of a
//! transaction, it becomes the older one and the generation before is dropped. A key used
//! from the older generation moves back to the recent one. Because generations turn over only
//! between transactions, whatever a transaction learned or found stays until it is built.
//!
//! Lookups happen for every reference of every row: root tables are numbered once, so a key
//! is two integers, hashed with the Fx hash (keys are not attacker-chosen here). A reference
//! column names its root with one shared string for all its rows: the number is found by the
//! string's address then, without hashing the name.

use crate::error::CaptureError;
use mysql_async::prelude::*;
use rustc_hash::FxHashMap;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tributary_model::Identity;
use tributary_schema::{IdentitySource, quote_ident};

/// How many keys one lookup query asks for.
const LOOKUP_CHUNK: usize = 500;
/// Shared root names remembered by address before they are let go.
const SHARED_ROOT_NAMES: usize = 1024;

/// A root table's number and a source key of it.
type Key = (u32, i64);

pub struct IdentityCache {
    /// Root table name -> its number in keys (a handful of tables).
    roots: FxHashMap<Box<str>, u32>,
    /// The address of a shared root name -> its number; `shared_names` keeps those names
    /// alive, so no address is reused while it is here.
    shared_roots: FxHashMap<usize, u32>,
    shared_names: Vec<Arc<str>>,
    /// Keys learned or used since the last turn-over.
    recent: FxHashMap<Key, Identity>,
    /// The generation before; dropped at the next turn-over.
    older: FxHashMap<Key, Identity>,
    /// `recent` turns over once it holds this many keys (half the capacity).
    generation: usize,
}

impl IdentityCache {
    /// A cache of about `capacity` keys (at most `capacity` plus what one transaction uses).
    pub fn new(capacity: usize) -> IdentityCache {
        let generation = (capacity / 2).max(1);
        IdentityCache {
            roots: FxHashMap::default(),
            shared_roots: FxHashMap::default(),
            shared_names: Vec::new(),
            recent: FxHashMap::default(),
            older: FxHashMap::default(),
            generation,
        }
    }

    /// Starts a new source transaction (or snapshot chunk): the only moment the generations
    /// turn over, so nothing the previous transaction held was dropped while it was built.
    pub fn begin_transaction(&mut self) {
        if self.recent.len() >= self.generation {
            let capacity = self.recent.len();
            self.older = std::mem::replace(
                &mut self.recent,
                FxHashMap::with_capacity_and_hasher(capacity, Default::default()),
            );
        }
    }

    fn key(&mut self, root: &str, key: i64) -> Key {
        if let Some(&number) = self.roots.get(root) {
            return (number, key);
        }
        let number = u32::try_from(self.roots.len()).unwrap_or(u32::MAX);
        self.roots.insert(root.into(), number);
        (number, key)
    }

    /// The key of `root` row `key`, `root` being a name shared by every row of a column.
    fn shared_key(&mut self, root: &Arc<str>, key: i64) -> Key {
        let address = Arc::as_ptr(root).cast::<u8>() as usize;
        if let Some(&number) = self.shared_roots.get(&address) {
            return (number, key);
        }
        if self.shared_names.len() >= SHARED_ROOT_NAMES {
            // Each schema change brings new names: the old ones are let go now and then.
            self.shared_roots.clear();
            self.shared_names.clear();
        }
        let (number, key) = self.key(root, key);
        self.shared_names.push(Arc::clone(root));
        self.shared_roots.insert(address, number);
        (number, key)
    }

    pub fn learn(&mut self, root: &str, key: i64, identity: Identity) {
        let id = self.key(root, key);
        self.recent.insert(id, identity);
    }

    /// The identity of `key`, kept in the recent generation when found.
    fn found(&mut self, id: Key) -> Option<&Identity> {
        // One probe of the recent generation whether the key is there or not.
        match self.recent.entry(id) {
            Entry::Occupied(entry) => Some(entry.into_mut()),
            Entry::Vacant(entry) => Some(entry.insert(self.older.remove(&id)?)),
        }
    }

    pub fn get(&mut self, root: &str, key: i64) -> Option<Identity> {
        self.get_ref(root, key).cloned()
    }

    /// The identity of `root` row `key`, borrowed (nothing to count when it is only written
    /// out).
    pub fn get_ref(&mut self, root: &str, key: i64) -> Option<&Identity> {
        let id = self.key(root, key);
        self.found(id)
    }

    pub fn pin(&mut self, root: &str, key: i64) -> bool {
        let id = self.key(root, key);
        self.found(id).is_some()
    }

    /// [`IdentityCache::get_ref`] for a reference column's shared root name.
    pub fn get_ref_shared(&mut self, root: &Arc<str>, key: i64) -> Option<&Identity> {
        let id = self.shared_key(root, key);
        self.found(id)
    }

    /// [`IdentityCache::pin`] for a reference column's shared root name.
    pub fn pin_shared(&mut self, root: &Arc<str>, key: i64) -> bool {
        let id = self.shared_key(root, key);
        self.found(id).is_some()
    }

    /// Looks up every wanted key the cache lacks, in batched queries on `conn`. Keys the source
    /// no longer has stay unknown; the caller decides what that means.
    pub async fn fetch_missing(
        &mut self,
        conn: &mut mysql_async::Conn,
        database: &str,
        wanted: &BTreeSet<(IdentitySource, i64)>,
    ) -> Result<(), CaptureError> {
        let mut by_source: BTreeMap<(&str, &str, &str), Vec<i64>> = BTreeMap::new();
        for (source, key) in wanted {
            if !self.pin(&source.root, *key) {
                by_source
                    .entry((&source.root, &source.key_column, &source.uuid_column))
                    .or_default()
                    .push(*key);
            }
        }
        for ((root, key_column, uuid_column), keys) in by_source {
            for chunk in keys.chunks(LOOKUP_CHUNK) {
                let placeholders = vec!["?"; chunk.len()].join(",");
                let sql = format!(
                    "SELECT {key}, {uuid} FROM {db}.{table} WHERE {key} IN ({placeholders})",
                    key = quote_ident(key_column),
                    uuid = quote_ident(uuid_column),
                    db = quote_ident(database),
                    table = quote_ident(root),
                );
                // Rows are read untyped: a key or uuid the source stores oddly is skipped (and
                // its references travel as unresolved) rather than panicking a typed read.
                let rows: Vec<mysql_async::Row> = conn.exec(sql, chunk.to_vec()).await?;
                for mut row in rows {
                    let key = row.take_opt::<i64, _>(0).and_then(Result::ok);
                    let uuid = row.take_opt::<String, _>(1).and_then(Result::ok);
                    if let (Some(key), Some(uuid)) = (key, uuid) {
                        self.learn(root, key, Identity::from_uuid(&uuid));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_bounded_and_keyed_by_root() {
        let mut cache = IdentityCache::new(2);
        cache.learn("person", 1, Identity::from_uuid("a"));
        cache.learn("concept", 1, Identity::from_uuid("b"));
        cache.begin_transaction();
        assert_eq!(cache.get("person", 1), Some(Identity::from_uuid("a")));
        cache.learn("person", 2, Identity::from_uuid("c"));
        cache.begin_transaction();
        assert_eq!(
            cache.get("concept", 1),
            None,
            "an entry unused for two generations is dropped"
        );
        assert_eq!(cache.get("person", 1), Some(Identity::from_uuid("a")));
        assert_eq!(cache.get("person", 2), Some(Identity::from_uuid("c")));
    }

    #[test]
    fn shared_root_names_find_the_keys_learned_under_the_plain_name() {
        let mut cache = IdentityCache::new(100);
        cache.learn("person", 7, Identity::from_uuid("p-7"));
        cache.learn("concept", 7, Identity::from_uuid("c-7"));
        // Many schema versions' worth of shared names, each a new string for the same roots.
        for _ in 0..3 * SHARED_ROOT_NAMES {
            let person: Arc<str> = "person".into();
            let concept: Arc<str> = "concept".into();
            assert_eq!(
                cache.get_ref_shared(&person, 7).map(Identity::as_str),
                Some("p-7")
            );
            assert!(cache.pin_shared(&concept, 7));
            assert!(!cache.pin_shared(&concept, 8));
        }
        assert!(cache.shared_names.len() <= SHARED_ROOT_NAMES);
        let users: Arc<str> = "users".into();
        assert!(cache.get_ref_shared(&users, 7).is_none());
        cache.learn("users", 7, Identity::from_uuid("u-7"));
        assert_eq!(
            cache.get_ref_shared(&users, 7).map(Identity::as_str),
            Some("u-7")
        );
    }

    #[test]
    fn a_transaction_keeps_everything_it_learned_even_past_the_bound() {
        let mut cache = IdentityCache::new(2);
        cache.begin_transaction();
        for key in 0..10 {
            cache.learn("obs", key, Identity::from_uuid(&format!("o-{key}")));
        }
        assert_eq!(cache.get("obs", 0), Some(Identity::from_uuid("o-0")));
        assert_eq!(cache.get("obs", 9), Some(Identity::from_uuid("o-9")));
        cache.begin_transaction();
        cache.learn("obs", 10, Identity::from_uuid("o-10"));
        cache.begin_transaction();
        assert_eq!(cache.get("obs", 9), None, "dropped after two turn-overs");
        assert!(cache.recent.len() + cache.older.len() <= 10);
    }

    #[test]
    fn a_key_found_in_the_cache_stays_available_while_the_transaction_fetches_others() {
        let mut cache = IdentityCache::new(2);
        cache.learn("encounter", 7, Identity::from_uuid("e-7"));
        cache.begin_transaction();
        assert!(cache.pin("encounter", 7), "known keys need no lookup");
        for key in 0..3 {
            cache.learn("concept", key, Identity::from_uuid(&format!("c-{key}")));
        }
        assert_eq!(cache.get("encounter", 7), Some(Identity::from_uuid("e-7")));
    }

    #[test]
    fn memory_stays_bounded_over_many_transactions() {
        let mut cache = IdentityCache::new(100);
        for transaction in 0..1_000 {
            cache.begin_transaction();
            for key in 0..10 {
                cache.learn("obs", transaction * 10 + key, Identity::from_uuid("o"));
            }
            assert!(cache.recent.len() + cache.older.len() <= 100 + 10);
        }
    }
}
