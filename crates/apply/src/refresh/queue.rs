//! What HQ OpenMRS still has to be told, coalesced: the pure half of the refresher, no I/O.
//!
//! Entities are queued per REST resource and deduplicated; a flush turns the queue into few
//! calls: one per entity while a resource has at most `batch_size` of them, one for the whole
//! resource type beyond that (and for a deleted entity or a row without a uuid, which OpenMRS
//! cannot look up by uuid). Memory is bounded: past `max_queued` entities the queue is dropped
//! and a single full refresh stands for all of it; while a full refresh is pending nothing
//! more is queued, because the full refresh will be sent after those rows were committed and
//! therefore covers them.

use super::resources::{ResourceSpec, resource_of};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tributary_model::{Identity, Op};

/// The two REST endpoints of the OpenMRS webservices module that refresh HQ OpenMRS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    /// `POST /ws/rest/v1/searchindexupdate`: Hibernate Search re-reads the entity.
    SearchIndex,
    /// `POST /ws/rest/v1/cleardbcache`: Hibernate's second-level cache forgets the entity
    /// (and its collection and query regions).
    DbCache,
}

impl Endpoint {
    pub const ALL: [Endpoint; 2] = [Endpoint::SearchIndex, Endpoint::DbCache];

    /// The path below the OpenMRS base URL.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::SearchIndex => "ws/rest/v1/searchindexupdate",
            Endpoint::DbCache => "ws/rest/v1/cleardbcache",
        }
    }

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::SearchIndex => "search_index",
            Endpoint::DbCache => "db_cache",
        }
    }
}

/// What one call refreshes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// Everything: the whole search index (rebuilt asynchronously by OpenMRS) or every cache
    /// region.
    All,
    /// Every entity of one resource type.
    Resource(&'static ResourceSpec),
    /// One entity, by uuid.
    Entity(&'static ResourceSpec, Arc<str>),
}

/// One REST call to make.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Call {
    pub endpoint: Endpoint,
    pub target: Target,
}

impl Call {
    /// The JSON body the OpenMRS controllers read (`resource`, `subResource`, `uuid`; no
    /// resource means everything, and `async` asks the full index rebuild not to hold the
    /// request for its whole duration).
    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::Map::new();
        let spec = match &self.target {
            Target::All => {
                if self.endpoint == Endpoint::SearchIndex {
                    body.insert("async".into(), true.into());
                }
                return body.into();
            }
            Target::Resource(spec) => spec,
            Target::Entity(spec, uuid) => {
                body.insert("uuid".into(), uuid.to_string().into());
                spec
            }
        };
        body.insert("resource".into(), spec.resource.into());
        if let Some(sub) = spec.sub_resource {
            body.insert("subResource".into(), sub.into());
        }
        body.into()
    }

    /// What the call names, for logs: the resource path or `all`, never the uuid.
    pub fn scope(&self) -> String {
        match &self.target {
            Target::All => "all".to_owned(),
            Target::Resource(spec) => format!("{} (every entity)", spec.path()),
            Target::Entity(spec, _) => spec.path(),
        }
    }
}

/// Why a full refresh stands for individual entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullReason {
    /// More changed entities were waiting than `max_queued_entities`.
    Overflow,
    /// Parked rows were released: the applier knows how many, not which.
    Released,
    /// HQ OpenMRS did not answer a call within its attempts; what was queued with it is
    /// covered by a full refresh once it answers again.
    Unanswered,
}

impl FullReason {
    pub const ALL: [FullReason; 3] = [
        FullReason::Overflow,
        FullReason::Released,
        FullReason::Unanswered,
    ];

    pub fn label(self) -> &'static str {
        match self {
            FullReason::Overflow => "overflow",
            FullReason::Released => "released",
            FullReason::Unanswered => "unanswered",
        }
    }
}

/// What noting a change did to the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noted {
    /// Queued (or already queued, or covered by what is pending).
    Queued,
    /// The table has no REST resource: nothing to refresh.
    Unmapped,
    /// This change took the queue past its cap: dropped for one full refresh.
    Overflowed,
}

#[derive(Debug, Default)]
pub struct RefreshQueue {
    batch_size: usize,
    max_queued: usize,
    entities: BTreeMap<&'static ResourceSpec, BTreeSet<Arc<str>>>,
    /// Resource types to refresh as a whole.
    whole: BTreeSet<&'static ResourceSpec>,
    queued: usize,
    full: Option<FullReason>,
}

impl RefreshQueue {
    pub fn new(batch_size: usize, max_queued: usize) -> RefreshQueue {
        RefreshQueue {
            batch_size: batch_size.max(1),
            max_queued: max_queued.max(1),
            ..RefreshQueue::default()
        }
    }

    /// Notes a row HQ committed.
    pub fn note(&mut self, table: &str, op: Op, identity: &Identity) -> Noted {
        let Some(spec) = resource_of(table) else {
            return Noted::Unmapped;
        };
        if self.full.is_some() {
            return Noted::Queued;
        }
        // OpenMRS finds entities by uuid; a deleted one is gone, and a natural key is no uuid.
        if op == Op::Delete || is_natural_key(identity) {
            return self.note_whole(table);
        }
        if self.whole.contains(spec) {
            return Noted::Queued;
        }
        let set = self.entities.entry(spec).or_default();
        if !set.contains(identity.as_str()) {
            set.insert(Arc::from(identity.as_str()));
            self.queued += 1;
        }
        if self.queued > self.max_queued {
            self.require_full(FullReason::Overflow);
            return Noted::Overflowed;
        }
        Noted::Queued
    }

    /// Notes that some rows of `table` changed without saying which: its whole type is
    /// refreshed.
    pub fn note_whole(&mut self, table: &str) -> Noted {
        let Some(spec) = resource_of(table) else {
            return Noted::Unmapped;
        };
        if self.full.is_none() && self.whole.insert(spec) {
            let covered = self.entities.remove(spec).map_or(0, |e| e.len());
            self.queued -= covered;
        }
        Noted::Queued
    }

    /// Drops what is queued: one full refresh will stand for it (the first reason is kept).
    pub fn require_full(&mut self, reason: FullReason) {
        self.entities.clear();
        self.whole.clear();
        self.queued = 0;
        self.full.get_or_insert(reason);
    }

    /// Entities waiting (a whole-type refresh and a pending full refresh count as none).
    pub fn queued(&self) -> usize {
        self.queued
    }

    pub fn full_pending(&self) -> Option<FullReason> {
        self.full
    }

    pub fn is_empty(&self) -> bool {
        self.full.is_none() && self.whole.is_empty() && self.entities.is_empty()
    }

    /// Takes the calls a flush should make to `endpoints`. A pending full refresh is taken
    /// only when `full_allowed` (it is rate-limited); until then it stays pending and nothing
    /// else is sent, since it will cover everything.
    pub fn take(&mut self, endpoints: &[Endpoint], full_allowed: bool) -> Vec<Call> {
        if self.full.is_some() {
            if !full_allowed {
                return Vec::new();
            }
            self.full = None;
            return endpoints
                .iter()
                .map(|&endpoint| Call {
                    endpoint,
                    target: Target::All,
                })
                .collect();
        }
        let mut targets: Vec<Target> = Vec::new();
        for spec in std::mem::take(&mut self.whole) {
            self.entities.remove(spec);
            targets.push(Target::Resource(spec));
        }
        for (spec, uuids) in std::mem::take(&mut self.entities) {
            if uuids.len() > self.batch_size {
                targets.push(Target::Resource(spec));
            } else {
                targets.extend(uuids.into_iter().map(|u| Target::Entity(spec, u)));
            }
        }
        self.queued = 0;
        let mut calls = Vec::new();
        for &endpoint in endpoints {
            for target in &targets {
                let spec = match target {
                    Target::Resource(spec) | Target::Entity(spec, _) => spec,
                    Target::All => unreachable!("only taken above"),
                };
                if endpoint == Endpoint::SearchIndex && !spec.indexed {
                    continue;
                }
                calls.push(Call {
                    endpoint,
                    target: target.clone(),
                });
            }
        }
        calls
    }
}

/// A natural key (a JSON array of its parts) rather than a uuid. Uuids are not checked for
/// shape: OpenMRS keeps some that are not canonical (CIEL concepts' `5089AAAA...`).
fn is_natural_key(identity: &Identity) -> bool {
    identity.as_str().starts_with('[')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uuid(n: u32) -> Identity {
        Identity::from_uuid(&format!("00000000-0000-4000-8000-{n:012}"))
    }

    fn scopes(calls: &[Call]) -> Vec<String> {
        calls
            .iter()
            .map(|c| format!("{} {}", c.endpoint.label(), c.body()))
            .collect()
    }

    #[test]
    fn entities_are_deduplicated_and_only_indexed_ones_go_to_the_search_index() {
        let mut q = RefreshQueue::new(10, 100);
        for _ in 0..3 {
            assert_eq!(q.note("person_name", Op::Insert, &uuid(1)), Noted::Queued);
        }
        q.note("person_name", Op::Update, &uuid(1));
        q.note("obs", Op::Insert, &uuid(2));
        assert_eq!(
            q.note("tributary_site_progress", Op::Insert, &uuid(3)),
            Noted::Unmapped
        );
        assert_eq!(q.queued(), 2);
        let calls = q.take(&Endpoint::ALL, true);
        assert_eq!(
            scopes(&calls),
            [
                r#"search_index {"resource":"person","subResource":"name","uuid":"00000000-0000-4000-8000-000000000001"}"#,
                r#"db_cache {"resource":"obs","uuid":"00000000-0000-4000-8000-000000000002"}"#,
                r#"db_cache {"resource":"person","subResource":"name","uuid":"00000000-0000-4000-8000-000000000001"}"#,
            ]
        );
        assert!(q.is_empty());
        assert_eq!(q.queued(), 0);
        assert!(q.take(&Endpoint::ALL, true).is_empty(), "a flush drains");
    }

    #[test]
    fn a_resource_with_more_than_a_batch_of_entities_becomes_one_call_for_the_type() {
        let mut q = RefreshQueue::new(3, 100);
        for n in 0..4 {
            q.note("patient_identifier", Op::Insert, &uuid(n));
        }
        for n in 10..13 {
            q.note("encounter", Op::Insert, &uuid(n));
        }
        let calls = q.take(&[Endpoint::SearchIndex], true);
        assert_eq!(
            scopes(&calls),
            [r#"search_index {"resource":"patient","subResource":"identifier"}"#],
            "encounters are not indexed; four identifiers exceed the batch of three"
        );
        for n in 10..13 {
            q.note("encounter", Op::Insert, &uuid(n));
        }
        assert_eq!(q.take(&[Endpoint::DbCache], true).len(), 3, "three fit");
    }

    #[test]
    fn deletes_and_rows_without_a_uuid_refresh_their_whole_type() {
        let mut q = RefreshQueue::new(10, 100);
        q.note("person_name", Op::Insert, &uuid(1));
        q.note("person_name", Op::Delete, &uuid(2));
        q.note("person_name", Op::Insert, &uuid(3));
        q.note(
            "concept_name",
            Op::Update,
            &Identity::from_natural_key(&["a".into()]),
        );
        assert_eq!(q.queued(), 0, "the whole types cover the entities");
        let calls = q.take(&[Endpoint::SearchIndex], true);
        assert_eq!(
            scopes(&calls),
            [
                r#"search_index {"resource":"concept","subResource":"name"}"#,
                r#"search_index {"resource":"person","subResource":"name"}"#,
            ]
        );
    }

    #[test]
    fn past_the_cap_the_queue_is_dropped_for_one_full_refresh_that_covers_what_follows() {
        let mut q = RefreshQueue::new(10, 5);
        for n in 0..5 {
            assert_eq!(q.note("obs", Op::Insert, &uuid(n)), Noted::Queued);
        }
        assert_eq!(q.note("obs", Op::Insert, &uuid(5)), Noted::Overflowed);
        assert_eq!(q.queued(), 0, "memory is released");
        assert_eq!(q.full_pending(), Some(FullReason::Overflow));
        assert_eq!(q.note("obs", Op::Insert, &uuid(6)), Noted::Queued);
        assert_eq!(q.queued(), 0, "covered by the pending full refresh");
        assert!(
            q.take(&Endpoint::ALL, false).is_empty(),
            "rate-limited: stays pending"
        );
        assert_eq!(q.full_pending(), Some(FullReason::Overflow));
        let calls = q.take(&Endpoint::ALL, true);
        assert_eq!(
            scopes(&calls),
            [r#"search_index {"async":true}"#, r#"db_cache {}"#]
        );
        assert!(q.is_empty());
        q.note("obs", Op::Insert, &uuid(7));
        assert_eq!(q.queued(), 1, "queues again once the full refresh is taken");
    }

    #[test]
    fn released_rows_ask_for_a_full_refresh_and_the_first_reason_is_kept() {
        let mut q = RefreshQueue::new(10, 100);
        q.note("obs", Op::Insert, &uuid(1));
        q.require_full(FullReason::Released);
        q.require_full(FullReason::Unanswered);
        assert_eq!(q.full_pending(), Some(FullReason::Released));
        assert_eq!(q.take(&[Endpoint::DbCache], true).len(), 1);
    }

    #[test]
    fn uuids_of_any_shape_are_entities_and_natural_keys_are_not() {
        let mut q = RefreshQueue::new(10, 100);
        q.note(
            "concept",
            Op::Update,
            &Identity::from_uuid("5089AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
        );
        let calls = q.take(&[Endpoint::DbCache], true);
        assert_eq!(
            scopes(&calls),
            [r#"db_cache {"resource":"concept","uuid":"5089aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#]
        );
        assert!(is_natural_key(&Identity::from_natural_key(&["x".into()])));
    }
}
