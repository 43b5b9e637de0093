//! Source integer key -> global identity, for the references capture must translate.
//!
//! Capture learns the mapping from the rows it sees (every inserted or updated row of a uuid
//! table teaches its own key) and asks the source database, batched per table, for the keys it
//! has not seen. Inherited identities share the root's key (patient 7 is person 7), so the
//! cache is keyed by the root table. The cache is an LRU of bounded size (invariant 8).

use crate::error::CaptureError;
use lru::LruCache;
use mysql_async::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use tributary_model::Identity;
use tributary_schema::{IdentitySource, quote_ident};

/// How many keys one lookup query asks for.
const LOOKUP_CHUNK: usize = 500;

pub struct IdentityCache {
    entries: LruCache<(String, i64), Identity>,
}

impl IdentityCache {
    pub fn new(capacity: usize) -> IdentityCache {
        IdentityCache {
            entries: LruCache::new(NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN)),
        }
    }

    pub fn learn(&mut self, root: &str, key: i64, identity: Identity) {
        self.entries.put((root.to_owned(), key), identity);
    }

    pub fn get(&mut self, root: &str, key: i64) -> Option<Identity> {
        self.entries.get(&(root.to_owned(), key)).cloned()
    }

    pub fn contains(&self, root: &str, key: i64) -> bool {
        self.entries.contains(&(root.to_owned(), key))
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
            if !self.contains(&source.root, *key) {
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
                let rows: Vec<(i64, Option<String>)> = conn.exec(sql, chunk.to_vec()).await?;
                for (key, uuid) in rows {
                    if let Some(uuid) = uuid {
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
        assert_eq!(cache.get("person", 1), Some(Identity::from_uuid("a")));
        cache.learn("person", 2, Identity::from_uuid("c"));
        assert_eq!(
            cache.get("concept", 1),
            None,
            "least recently used entry evicted"
        );
        assert_eq!(cache.get("person", 2), Some(Identity::from_uuid("c")));
    }
}
