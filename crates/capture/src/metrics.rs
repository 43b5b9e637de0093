//! Capture's Prometheus metrics, registered once in the default registry (the binary serves
//! them on `/metrics`). Names follow `tributary_capture_<what>_<unit>[_total]`; METRICS.md
//! says what each one answers and when to alert.
//!
//! A capture process serves one site, so there is no site label (the scrape target names the
//! site). Labels are bounded: `reason` is `cap` or `disk`. Row values and keys never appear.

use crate::spool_budget::SpoolLimits;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use std::sync::LazyLock;

static SPOOL_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(IntGauge::new(
        "tributary_capture_spool_bytes",
        "Bytes of batches the outbox (spool) holds, as counted at the last admission.",
    ))
});

static SPOOL_LIMIT_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(IntGauge::new(
        "tributary_capture_spool_limit_bytes",
        "The outbox's configured cap (site.outbox_limit_mb).",
    ))
});

static SPOOL_DISK_FREE_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(IntGauge::new(
        "tributary_capture_spool_disk_free_bytes",
        "Bytes still available on the outbox's file system, as measured at the last admission.",
    ))
});

static SPOOL_OLDEST_AGE: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(IntGauge::new(
        "tributary_capture_spool_oldest_age_seconds",
        "How long the oldest batch the transport has not taken yet has waited in the outbox \
         (0 when none waits), as read at most every 15 s when a batch is published.",
    ))
});

static SPOOL_BLOCKED: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    registered(IntGaugeVec::new(
        Opts::new(
            "tributary_capture_spool_blocked",
            "1 while capture waits for space in the outbox (reason: cap or disk), else 0.",
        ),
        &["reason"],
    ))
});

static BATCHES: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(IntCounter::new(
        "tributary_capture_batches_total",
        "Batches sealed and committed to the outbox.",
    ))
});

static ROWS: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(IntCounter::new(
        "tributary_capture_rows_total",
        "Row changes in the batches committed to the outbox.",
    ))
});

static LAG: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(IntGauge::new(
        "tributary_capture_lag_seconds",
        "Seconds between the source commit of the last transaction capture read and the \
         moment it read it; 0 once the source's heartbeat says nothing newer is waiting.",
    ))
});

static ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(IntCounterVec::new(
        Opts::new(
            "tributary_capture_errors_total",
            "Errors that interrupted capture, by class: transient (the site database or the \
             link dropped; capture resumes from its checkpoint with backoff) or fatal (capture \
             stopped: a purged binlog, the site's settings, the configuration).",
        ),
        &["class"],
    ))
});

static SEED_ROWS: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(IntGauge::new(
        "tributary_seed_rows",
        "Rows the running seed has sent, those of an interrupted run it goes on from included.",
    ))
});

static SEED_ROWS_ESTIMATED: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(IntGauge::new(
        "tributary_seed_rows_estimated",
        "Rows the running seed expects to send in all (the server's table statistics; never \
         below what was sent).",
    ))
});

static SEED_TABLES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    registered(IntGaugeVec::new(
        Opts::new(
            "tributary_seed_tables",
            "Tables of the running seed: state = done (sent whole) or planned (all of them).",
        ),
        &["state"],
    ))
});

/// Registers the seed's metrics (served by `tributary seed`), at zero before the first chunk.
pub fn register_seed() {
    LazyLock::force(&SEED_ROWS);
    LazyLock::force(&SEED_ROWS_ESTIMATED);
    for state in ["done", "planned"] {
        SEED_TABLES.with_label_values(&[state]);
    }
}

/// Where the seed stands after a chunk.
pub(crate) fn seed_progress(rows: u64, estimated: u64, tables_done: usize, tables: usize) {
    SEED_ROWS.set(clamp(rows));
    SEED_ROWS_ESTIMATED.set(clamp(estimated));
    let count = |n: usize| clamp(u64::try_from(n).unwrap_or(u64::MAX));
    SEED_TABLES
        .with_label_values(&["done"])
        .set(count(tables_done));
    SEED_TABLES
        .with_label_values(&["planned"])
        .set(count(tables));
}

/// Registers every capture metric, so a scrape shows them (at zero) before the first batch.
pub fn register() {
    let gauges = SpoolGauges::global();
    gauges.set_blocked(None);
    LazyLock::force(&BATCHES);
    LazyLock::force(&ROWS);
    LazyLock::force(&LAG);
    for class in ["transient", "fatal"] {
        ERRORS.with_label_values(&[class]);
    }
}

/// Capture read a transaction the source committed at `committed_at`, at `now` (unix s). A
/// source clock ahead of this machine's reads as no lag.
pub(crate) fn transaction_read(committed_at: u64, now: u64) {
    LAG.set(clamp(now.saturating_sub(committed_at)));
}

/// The source's heartbeat: capture has read everything committed.
/// The capture lag gauge's value.
pub(crate) fn lag_seconds() -> u64 {
    u64::try_from(LAG.get()).unwrap_or(0)
}

pub(crate) fn caught_up() {
    LAG.set(0);
}

/// Counts an error that interrupted capture.
pub(crate) fn capture_error(transient: bool) {
    let class = if transient { "transient" } else { "fatal" };
    ERRORS.with_label_values(&[class]).inc();
}

/// Counts a batch committed to the outbox (after its checkpoint and commit).
pub(crate) fn batch_published(rows: u32) {
    BATCHES.inc();
    ROWS.inc_by(u64::from(rows));
}

/// Why capture waits for space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// The outbox reached `outbox_limit_mb`.
    Cap,
    /// The disk would go below `disk_reserve_mb`.
    Disk,
}

impl Blocked {
    const ALL: [Blocked; 2] = [Blocked::Cap, Blocked::Disk];

    fn label(self) -> &'static str {
        match self {
            Blocked::Cap => "cap",
            Blocked::Disk => "disk",
        }
    }
}

/// The outbox's gauges, as the spool budget sets them. Production uses the registered ones;
/// a test gets its own, unregistered, so parallel tests do not see each other's values.
#[derive(Clone)]
pub(crate) struct SpoolGauges {
    held: IntGauge,
    limit: IntGauge,
    disk_free: IntGauge,
    oldest_age: IntGauge,
    blocked: IntGaugeVec,
}

impl SpoolGauges {
    /// The gauges served on `/metrics`.
    pub(crate) fn global() -> SpoolGauges {
        SpoolGauges {
            held: SPOOL_BYTES.clone(),
            limit: SPOOL_LIMIT_BYTES.clone(),
            disk_free: SPOOL_DISK_FREE_BYTES.clone(),
            oldest_age: SPOOL_OLDEST_AGE.clone(),
            blocked: SPOOL_BLOCKED.clone(),
        }
    }

    pub(crate) fn set_limits(&self, limits: SpoolLimits) {
        self.limit.set(clamp(limits.max_bytes));
    }

    pub(crate) fn set_held(&self, bytes: u64) {
        self.held.set(clamp(bytes));
    }

    pub(crate) fn set_disk_free(&self, bytes: u64) {
        self.disk_free.set(clamp(bytes));
    }

    /// The values the site's health report carries.
    pub(crate) fn held_bytes(&self) -> u64 {
        u64::try_from(self.held.get()).unwrap_or(0)
    }

    pub(crate) fn disk_free_bytes(&self) -> u64 {
        u64::try_from(self.disk_free.get()).unwrap_or(0)
    }

    pub(crate) fn oldest_age_seconds(&self) -> u64 {
        u64::try_from(self.oldest_age.get()).unwrap_or(0)
    }

    /// Sets the age of the oldest waiting batch from its commit time (`None`: none waits).
    pub(crate) fn set_oldest(&self, committed_at: Option<std::time::SystemTime>) {
        let age = committed_at
            .and_then(|t| t.elapsed().ok())
            .map_or(0, |age| age.as_secs());
        self.oldest_age.set(clamp(age));
    }

    /// Sets the flag of `reason` to 1 and the other to 0; `None` clears both.
    pub(crate) fn set_blocked(&self, reason: Option<Blocked>) {
        for each in Blocked::ALL {
            self.blocked
                .with_label_values(&[each.label()])
                .set(i64::from(Some(each) == reason));
        }
    }
}

#[cfg(test)]
impl SpoolGauges {
    /// Gauges of the same names that no registry serves.
    pub(crate) fn detached() -> SpoolGauges {
        let gauge = |name: &str| IntGauge::new(name, "test").expect("a valid metric name");
        SpoolGauges {
            held: gauge("held"),
            limit: gauge("limit"),
            disk_free: gauge("disk_free"),
            oldest_age: gauge("oldest_age"),
            blocked: IntGaugeVec::new(Opts::new("blocked", "test"), &["reason"])
                .expect("a valid metric name"),
        }
    }

    pub(crate) fn held(&self) -> i64 {
        self.held.get()
    }

    pub(crate) fn limit(&self) -> i64 {
        self.limit.get()
    }

    pub(crate) fn disk_free(&self) -> i64 {
        self.disk_free.get()
    }

    pub(crate) fn oldest_age(&self) -> i64 {
        self.oldest_age.get()
    }

    pub(crate) fn blocked(&self, reason: Blocked) -> i64 {
        self.blocked.with_label_values(&[reason.label()]).get()
    }
}

/// Gauges are `i64`; byte counts past that are shown as the largest value.
fn clamp(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// Registers `metric` in the default registry. The names and help texts are constants of
/// this module (the test below registers every one), so an error here is a programming
/// error: it is logged and the metric still counts, unserved, rather than stopping capture.
fn registered<M>(metric: prometheus::Result<M>) -> M
where
    M: prometheus::core::Collector + Clone + 'static,
{
    let metric = metric.expect("metric names and help texts are valid constants");
    if let Err(e) = prometheus::register(Box::new(metric.clone())) {
        tracing::error!(error = %e, "a capture metric could not be registered");
    }
    metric
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_capture_metric_is_registered_under_its_documented_name() {
        register();
        batch_published(3);
        let names: Vec<String> = prometheus::gather()
            .iter()
            .map(|family| family.name().to_owned())
            .collect();
        for name in [
            "tributary_capture_spool_bytes",
            "tributary_capture_spool_limit_bytes",
            "tributary_capture_spool_disk_free_bytes",
            "tributary_capture_spool_blocked",
            "tributary_capture_batches_total",
            "tributary_capture_rows_total",
            "tributary_capture_lag_seconds",
            "tributary_capture_errors_total",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
        assert!(ROWS.get() >= 3 && BATCHES.get() >= 1);
    }

    #[test]
    fn seed_progress_is_read_as_rows_and_tables() {
        register_seed();
        seed_progress(1_500, 4_000, 3, 40);
        assert_eq!((SEED_ROWS.get(), SEED_ROWS_ESTIMATED.get()), (1_500, 4_000));
        let tables = |state: &str| SEED_TABLES.with_label_values(&[state]).get();
        assert_eq!((tables("done"), tables("planned")), (3, 40));
    }

    #[test]
    fn lag_follows_the_last_transaction_read_until_a_heartbeat_says_caught_up() {
        transaction_read(1_000, 1_030);
        assert_eq!(LAG.get(), 30);
        transaction_read(2_000, 1_990);
        assert_eq!(LAG.get(), 0, "a source clock ahead is no lag");
        transaction_read(1_000, 1_045);
        caught_up();
        assert_eq!(LAG.get(), 0);
        let before = ERRORS.with_label_values(&["transient"]).get();
        capture_error(true);
        assert_eq!(ERRORS.with_label_values(&["transient"]).get(), before + 1);
    }

    #[test]
    fn one_blocked_reason_at_a_time() {
        let gauges = SpoolGauges::detached();
        gauges.set_blocked(Some(Blocked::Disk));
        assert_eq!(
            (gauges.blocked(Blocked::Cap), gauges.blocked(Blocked::Disk)),
            (0, 1)
        );
        gauges.set_blocked(Some(Blocked::Cap));
        assert_eq!(
            (gauges.blocked(Blocked::Cap), gauges.blocked(Blocked::Disk)),
            (1, 0)
        );
        gauges.set_blocked(None);
        assert_eq!(
            (gauges.blocked(Blocked::Cap), gauges.blocked(Blocked::Disk)),
            (0, 0)
        );
        gauges.set_held(u64::MAX);
        assert_eq!(gauges.held(), i64::MAX, "clamped, never negative");
    }
}
