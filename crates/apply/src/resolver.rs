//! Identity -> HQ id: the inverse of capture's translation.
//!
//! A reference names a table and the identity of a row in it; at HQ that row is found through
//! its identity source (its own uuid, or the root table's uuid for a subtype: a reference to
//! `patient[<uuid>]` is the person with that uuid, provided the patient row exists). Positive
//! answers are cached (HQ ids of synced rows do not change); the cache forgets a row that is
//! deleted and is cleared whenever an HQ transaction rolls back, so it never holds an id that
//! was not committed.

use lru::LruCache;
use mysql_async::Transaction;
use mysql_async::prelude::*;
use rustc_hash::FxBuildHasher;
use std::num::NonZeroUsize;
use tributary_model::RowRef;
use tributary_schema::{SchemaMap, quote_ident};

/// References are hashed with Fx (a few instructions per word, where the default hasher
/// showed in the applier's profile): they come from authenticated sites only.
pub struct Resolver {
    cache: LruCache<RowRef, i64, FxBuildHasher>,
}

impl Resolver {
    pub fn new(capacity: usize) -> Resolver {
        Resolver {
            cache: LruCache::with_hasher(
                NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN),
                FxBuildHasher,
            ),
        }
    }

    /// The HQ id of the referenced row, or `None` when HQ does not have it (yet).
    pub async fn resolve(
        &mut self,
        tx: &mut Transaction<'_>,
        schema: &SchemaMap,
        target: &RowRef,
    ) -> mysql_async::Result<Option<i64>> {
        if let Some(id) = self.cache.get(target) {
            return Ok(Some(*id));
        }
        let Some(sql) = lookup_sql(schema, &target.table) else {
            return Ok(None);
        };
        let id: Option<i64> = tx.exec_first(sql, (target.identity.as_str(),)).await?;
        if let Some(id) = id {
            self.cache.put(target.clone(), id);
        }
        Ok(id)
    }

    /// The HQ id of a row this resolver learned or looked up, without asking HQ.
    pub fn known(&mut self, target: &RowRef) -> Option<i64> {
        self.cache.get(target).copied()
    }

    pub fn remember(&mut self, target: RowRef, id: i64) {
        self.cache.put(target, id);
    }

    pub fn forget(&mut self, target: &RowRef) {
        self.cache.pop(target);
    }

    pub fn clear(&mut self) {
        self.cache.clear();
    }
}

/// The query that finds the HQ id of a row of `table` by identity, if the table has a uuid or
/// inherited identity.
fn lookup_sql(schema: &SchemaMap, table: &str) -> Option<String> {
    let map = schema.table(table)?;
    let source = map.identity_source.as_ref()?;
    let [key] = map.primary_key.as_slice() else {
        return None;
    };
    Some(if source.root == map.name {
        format!(
            "SELECT {k} FROM {t} WHERE {u} = ?",
            k = quote_ident(key),
            t = quote_ident(table),
            u = quote_ident(&source.uuid_column),
        )
    } else {
        format!(
            "SELECT t.{k} FROM {t} t JOIN {r} r ON r.{rk} = t.{k} WHERE r.{u} = ?",
            k = quote_ident(key),
            t = quote_ident(table),
            r = quote_ident(&source.root),
            rk = quote_ident(&source.key_column),
            u = quote_ident(&source.uuid_column),
        )
    })
}
