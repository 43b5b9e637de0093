//! What the applier needs to run, resolved by the binary's configuration.

use crate::conflict_policy::ConflictPolicies;
use crate::refresh::Refresher;
use mysql_async::Opts;
use std::path::PathBuf;
use std::time::Duration;
use tributary_batch::Keyring;
use tributary_schema::Policy;

/// How often the inbox is scanned when it had nothing to apply.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How often every parked row is retried even without an arrival (parents created at HQ
/// directly, or an HQ problem an operator fixed).
pub const DEFAULT_RETRY_PARKED_INTERVAL: Duration = Duration::from_secs(60);
/// How long a row may stay parked before it is reported (warning log, `status`): a day,
/// longer than a site's usual outage, shorter than anyone would wait unknowingly.
pub const DEFAULT_PARKED_REPORT_AGE: Duration = Duration::from_secs(86_400);
/// HQ id cache entries; like capture's identity cache, bounded (invariant 8).
pub const DEFAULT_RESOLVER_CACHE_ENTRIES: usize = 1_000_000;

#[derive(Clone)]
pub struct ApplySettings {
    /// Connection to HQ (credentials included; never logged).
    pub hq: Opts,
    pub database: String,
    pub inbox_dir: PathBuf,
    pub keyring: Keyring,
    pub policy: Policy,
    pub poll_interval: Duration,
    pub resolver_cache_entries: usize,
    pub retry_parked_interval: Duration,
    /// Parked rows older than this are reported (`[hq] parked_report_age_s`).
    pub parked_report_age: Duration,
    /// What a change to an HQ row changed since its site last wrote it does (`[hq.conflicts]`).
    pub conflicts: ConflictPolicies,
    /// Asks HQ OpenMRS to refresh what was written (`[hq.refresh]`); off when `None`.
    pub refresh: Option<Refresher>,
    /// Record what HQ writes in the integration outbox for the integration topics
    /// (`[hq.integration]`); off by default.
    pub record_applied: bool,
}
