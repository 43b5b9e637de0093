//! The applier: opens batches at HQ and writes their rows with HQ-local ids, parking rows
//! whose parents have not arrived and releasing them when they do.
//!
//! Module map: [`runner`] walks the inbox in sequence order; [`delivered`] applies a batch a
//! stream transport (Kafka) delivered; [`batch_apply`] applies one
//! batch in one HQ transaction; [`writer`] resolves and writes one row (with [`resolver`] for
//! identity -> HQ id); [`parking`] parks and releases; [`parked_rows`] lets operators list,
//! inspect, retry and drop parked rows, with reasons from [`parked_reason`]; [`parked_age`]
//! reports rows parked too long; [`bookkeeping`] owns Tributary's tables at HQ; [`status`]
//! reads them for operators; [`metrics`] counts applied and rejected batches and gauges
//! parked rows for `/metrics`; [`refresh`] asks HQ OpenMRS to refresh its caches and search
//! index for what was written (`[hq.refresh]`, off by default).
//!
//! Invariants kept here: exactly-once effect per (site, epoch, sequence) (2); no dangling
//! reference and no placeholder row (3); source transactions stay whole (4); only
//! authenticated batches are applied (6); every rejection and parked row is recorded with its
//! reason (9).

mod batch_apply;
mod bookkeeping;
mod conflict_policy;
mod conflict_queue;
mod conflicts;
mod delivered;
mod dropped_columns;
mod error;
pub mod integration;
mod locator;
pub mod metrics;
mod new_rows;
mod parked_age;
mod parked_reason;
mod parked_rows;
mod parking;
mod refresh;
mod rejection;
mod resolver;
mod row_state;
mod row_state_upgrade;
mod runner;
mod settings;
mod sql_row;
mod status;
mod usernames;
mod writer;

pub use batch_apply::BatchOutcome;
pub use conflict_policy::{ConflictPolicies, ConflictPolicy};
pub use conflict_queue::{
    Choice, ConflictDetail, ConflictEntry, ConflictFilter, ConflictQueue, ResolveOutcome,
};
pub use delivered::Delivery;
pub use error::ApplyError;
pub use parked_reason::{AwaitedRow, AwaitedState, short_identity};
pub use parked_rows::{
    DroppedRow, ParkedDetail, ParkedEntry, ParkedFilter, ParkedRows, RetryOutcome,
};
pub use refresh::{
    DEFAULT_FULL_REFRESH_MIN_INTERVAL, DEFAULT_REFRESH_BATCH_SIZE, DEFAULT_REFRESH_FLUSH_INTERVAL,
    DEFAULT_REFRESH_MAX_ATTEMPTS, DEFAULT_REFRESH_MAX_QUEUED, DEFAULT_REFRESH_TIMEOUT, Endpoint,
    REFRESH_CLOSE_WITHIN, RefreshError, RefreshSettings, Refresher,
};
pub use rejection::Rejection;
pub use runner::{Applier, PassReport, run_apply};
pub use settings::{
    ApplySettings, DEFAULT_PARKED_REPORT_AGE, DEFAULT_POLL_INTERVAL,
    DEFAULT_RESOLVER_CACHE_ENTRIES, DEFAULT_RETRY_PARKED_INTERVAL,
};
pub use status::{
    DroppedColumn, ParkedAge, ParkedSummary, RejectedBatch, RejectionCount, SiteStatus,
    dropped_columns, parked_ages, parked_rows, rejected_batches, rejection_counts, site_statuses,
};
pub use usernames::UsernamePolicy;
