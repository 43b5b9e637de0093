//! The applier's Prometheus metrics, registered once in the default registry (the binary
//! serves them on `/metrics`). Names follow `tributary_apply_<what>_<unit>[_total]`;
//! METRICS.md says what each one answers and when to alert.
//!
//! Labels stay bounded: `site` is a site HQ has a key for (configured at HQ), anything else
//! (a forged header, a stray directory, a Kafka key nobody issued) counts as
//! [`UNKNOWN_SITE`]; `reason` is a [`RejectReason`] name, a closed set. Row values, keys and
//! identities never become labels.

use crate::conflicts::Decision;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use std::sync::LazyLock;
use tributary_batch::{Keyring, RejectReason};

/// The `site` label of a rejection whose site HQ has no key for. Site ids never contain
/// parentheses, so it cannot be mistaken for a site.
pub const UNKNOWN_SITE: &str = "(unknown)";

static BATCHES_REJECTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(IntCounterVec::new(
        Opts::new(
            "tributary_apply_batches_rejected_total",
            "Batches HQ rejected and recorded (tributary_rejected_batch), by site and reason.",
        ),
        &["site", "reason"],
    ))
});

static BATCHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(IntCounterVec::new(
        Opts::new(
            "tributary_apply_batches_total",
            "Batches applied at HQ (committed in one HQ transaction), by site.",
        ),
        &["site"],
    ))
});

static ROWS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(IntCounterVec::new(
        Opts::new(
            "tributary_apply_rows_total",
            "Rows written at HQ by the applied batches, by site (parked rows not counted).",
        ),
        &["site"],
    ))
});

static PARKED_ROWS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    registered(IntGaugeVec::new(
        Opts::new(
            "tributary_apply_parked_rows",
            "Rows of this site parked at HQ now (tributary_parked_row), as of the applier's last \
             park, release or periodic retry.",
        ),
        &["site"],
    ))
});

static PARKED_OLDEST_AGE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    registered(IntGaugeVec::new(
        Opts::new(
            "tributary_apply_parked_oldest_age_seconds",
            "Seconds the oldest parked row of this site has waited (0 when none is parked), as \
             of the applier's last park, release or periodic retry.",
        ),
        &["site"],
    ))
});

static CONFLICTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(IntCounterVec::new(
        Opts::new(
            "tributary_apply_conflicts_total",
            "Conflicts met at HQ (a site's change to a row changed at HQ or by another site \
             since that site last wrote it), by site and outcome: queued for a person, or \
             decided by the table's policy (site-wins, hq-wins).",
        ),
        &["site", "outcome"],
    ))
});

static CONFLICTS_OPEN: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    registered(IntGaugeVec::new(
        Opts::new(
            "tributary_apply_conflicts_open",
            "Open conflicts of this site waiting for a person (`tributary conflicts list`), as \
             of the applier's last conflict or periodic retry.",
        ),
        &["site"],
    ))
});

static COLUMNS_DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(IntCounterVec::new(
        Opts::new(
            "tributary_apply_columns_dropped_total",
            "Rows HQ wrote without a column the site sent, because HQ's table lacks it and the \
             schema map's dropped_at_hq allows it, by site, table and column.",
        ),
        &["site", "table", "column"],
    ))
});

static REFRESH_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(IntCounterVec::new(
        Opts::new(
            "tributary_apply_refresh_requests_total",
            "HTTP requests to HQ OpenMRS's refresh endpoints ([hq.refresh]), by endpoint \
             (search_index, db_cache) and result (ok, error); retries count again.",
        ),
        &["endpoint", "result"],
    ))
});

static REFRESH_FAILED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(IntCounterVec::new(
        Opts::new(
            "tributary_apply_refresh_failed_total",
            "Refresh calls to HQ OpenMRS given up: refused, or failing after every attempt, by \
             endpoint.",
        ),
        &["endpoint"],
    ))
});

static REFRESH_FULL: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(IntCounterVec::new(
        Opts::new(
            "tributary_apply_refresh_full_total",
            "Full refreshes asked of HQ OpenMRS (search index rebuild, whole cache cleared), by \
             reason (overflow, released, unanswered).",
        ),
        &["reason"],
    ))
});

static REFRESH_QUEUED: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(IntGauge::new(
        "tributary_apply_refresh_queued_entities",
        "Changed entities waiting to be named to HQ OpenMRS in a refresh call.",
    ))
});

static LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    registered(IntGaugeVec::new(
        Opts::new(
            "tributary_apply_lag_seconds",
            "Seconds from the source commit of the newest transaction HQ applied of this site \
             to HQ's commit of it, as of the last batch with transactions.",
        ),
        &["site"],
    ))
});

static LAST_BATCH: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    registered(IntGaugeVec::new(
        Opts::new(
            "tributary_apply_last_batch_timestamp_seconds",
            "Unix time HQ last committed a batch of this site (an idle capture sends one every \
             keepalive interval); 0 before the first since the applier started.",
        ),
        &["site"],
    ))
});

static ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    registered(IntCounterVec::new(
        Opts::new(
            "tributary_apply_errors_total",
            "Errors that interrupted applying, by class: transient (HQ unreachable, deadlock, \
             lock wait timeout: the batch rolled back and is retried) or fatal (the applier \
             stopped: configuration or HQ schema). Rejected batches are counted apart.",
        ),
        &["class"],
    ))
});

/// Registers the applier's metrics and starts every series of the keyring's sites at zero (each
/// reason too), so a first rejection shows as an increase rather than a new series.
static SITE_SOURCE_LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    registered(IntGaugeVec::new(
        Opts::new(
            "tributary_apply_site_source_lag_seconds",
            "How far behind its own database the site's capture was, by its last health report.",
        ),
        &["site"],
    ))
});

static SITE_SPOOL_BYTES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    registered(IntGaugeVec::new(
        Opts::new(
            "tributary_apply_site_spool_bytes",
            "Bytes waiting in the site's outbox, by its last health report.",
        ),
        &["site"],
    ))
});

static SITE_SPOOL_OLDEST_AGE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    registered(IntGaugeVec::new(
        Opts::new(
            "tributary_apply_site_spool_oldest_age_seconds",
            "How long the oldest batch in the site's outbox had waited, by its last health report.",
        ),
        &["site"],
    ))
});

static SITE_FAILING: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    registered(IntGaugeVec::new(
        Opts::new(
            "tributary_apply_site_failing",
            "1 when the site's last health report says capture is failing (its last error has \
             not been followed by a new session), else 0.",
        ),
        &["site"],
    ))
});

static INTEGRATION_OUTBOX: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(IntGauge::new(
        "tributary_apply_integration_outbox_entries",
        "HQ transactions applied but not yet published on the integration topics \
         (tributary_integration_outbox).",
    ))
});

static INTEGRATION_OUTBOX_AGE: LazyLock<IntGauge> = LazyLock::new(|| {
    registered(IntGauge::new(
        "tributary_apply_integration_outbox_oldest_age_seconds",
        "How long ago HQ committed the oldest change not yet published on the integration \
         topics (0 when none waits).",
    ))
});

static INTEGRATION_EVENTS: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(IntCounter::new(
        "tributary_apply_integration_events_total",
        "Records the broker took on the integration topics (change events, BEGIN and END).",
    ))
});

static INTEGRATION_FAILURES: LazyLock<IntCounter> = LazyLock::new(|| {
    registered(IntCounter::new(
        "tributary_apply_integration_publish_failures_total",
        "Publishing rounds that failed (broker unreachable or refusing); the round is sent \
         again after a pause.",
    ))
});

pub fn register(keyring: &Keyring) {
    for site in keyring.sites() {
        for reason in RejectReason::ALL {
            BATCHES_REJECTED.with_label_values(&[site, reason.as_str()]);
        }
        BATCHES.with_label_values(&[site]);
        ROWS.with_label_values(&[site]);
        PARKED_ROWS.with_label_values(&[site]);
        PARKED_OLDEST_AGE.with_label_values(&[site]);
        CONFLICTS_OPEN.with_label_values(&[site]);
        LAG.with_label_values(&[site]);
        LAST_BATCH.with_label_values(&[site]);
        SITE_SOURCE_LAG.with_label_values(&[site]);
        SITE_SPOOL_BYTES.with_label_values(&[site]);
        SITE_SPOOL_OLDEST_AGE.with_label_values(&[site]);
        SITE_FAILING.with_label_values(&[site]);
        for decision in [Decision::Open, Decision::SiteWon, Decision::HqWon] {
            CONFLICTS.with_label_values(&[site, decision.label()]);
        }
    }
    for endpoint in crate::refresh::Endpoint::ALL {
        for result in ["ok", "error"] {
            REFRESH_REQUESTS.with_label_values(&[endpoint.label(), result]);
        }
        REFRESH_FAILED.with_label_values(&[endpoint.label()]);
    }
    for reason in crate::refresh::FullReason::ALL {
        REFRESH_FULL.with_label_values(&[reason.label()]);
    }
    for class in ["transient", "fatal"] {
        ERRORS.with_label_values(&[class]);
    }
    LazyLock::force(&REFRESH_QUEUED);
    LazyLock::force(&BATCHES_REJECTED);
    LazyLock::force(&BATCHES);
    LazyLock::force(&ROWS);
    LazyLock::force(&PARKED_ROWS);
    LazyLock::force(&PARKED_OLDEST_AGE);
    LazyLock::force(&CONFLICTS);
    LazyLock::force(&CONFLICTS_OPEN);
    LazyLock::force(&COLUMNS_DROPPED);
    LazyLock::force(&LAG);
    LazyLock::force(&LAST_BATCH);
    LazyLock::force(&SITE_SOURCE_LAG);
    LazyLock::force(&SITE_SPOOL_BYTES);
    LazyLock::force(&SITE_SPOOL_OLDEST_AGE);
    LazyLock::force(&SITE_FAILING);
    LazyLock::force(&ERRORS);
}

/// Registers the integration publisher's metrics (`[hq.integration]` on).
pub fn register_integration() {
    LazyLock::force(&INTEGRATION_OUTBOX);
    LazyLock::force(&INTEGRATION_OUTBOX_AGE);
    LazyLock::force(&INTEGRATION_EVENTS);
    LazyLock::force(&INTEGRATION_FAILURES);
}

/// Sets the integration outbox's gauges.
pub fn integration_backlog(entries: u64, oldest_age_seconds: u64) {
    let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    INTEGRATION_OUTBOX.set(gauge(entries));
    INTEGRATION_OUTBOX_AGE.set(gauge(oldest_age_seconds));
}

/// Counts records the broker took on the integration topics.
pub fn integration_published(records: u64) {
    INTEGRATION_EVENTS.inc_by(records);
}

/// Counts a failed publishing round.
pub fn integration_failed() {
    INTEGRATION_FAILURES.inc();
}

/// Counts rows written without a dropped column (labels are schema names: bounded).
pub(crate) fn columns_dropped(site_id: &str, table: &str, column: &str, rows: u64) {
    COLUMNS_DROPPED
        .with_label_values(&[site_id, table, column])
        .inc_by(rows);
}

/// Counts a conflict just recorded (`site_id` is from an authenticated batch).
pub(crate) fn conflict(site_id: &str, decision: Decision) {
    CONFLICTS
        .with_label_values(&[site_id, decision.label()])
        .inc();
}

/// Sets a site's open-conflict gauge.
pub(crate) fn conflicts_open(site_id: &str, open: u64) {
    CONFLICTS_OPEN
        .with_label_values(&[site_id])
        .set(i64::try_from(open).unwrap_or(i64::MAX));
}

/// Sets a site's parked-row gauges (`site_id` is a site HQ has a key for: parked rows come
/// from authenticated batches).
pub(crate) fn parked(site_id: &str, rows: u64, oldest_age_seconds: u64) {
    let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    PARKED_ROWS.with_label_values(&[site_id]).set(gauge(rows));
    PARKED_OLDEST_AGE
        .with_label_values(&[site_id])
        .set(gauge(oldest_age_seconds));
}

/// Counts a rejection HQ has just recorded.
pub(crate) fn batch_rejected(keyring: &Keyring, site_id: &str, reason: RejectReason) {
    BATCHES_REJECTED
        .with_label_values(&[site_label(keyring, site_id), reason.as_str()])
        .inc();
}

/// Counts a batch HQ has just committed at `now` (unix s), with the rows it wrote and the
/// source commit time of its newest transaction (none in a keepalive). `site_id` comes from
/// the authenticated header, so it is a site HQ has a key for.
pub(crate) fn batch_applied(
    site_id: &str,
    rows_written: u64,
    newest_commit: Option<u64>,
    now: u64,
) {
    BATCHES.with_label_values(&[site_id]).inc();
    ROWS.with_label_values(&[site_id]).inc_by(rows_written);
    let seconds = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    LAST_BATCH.with_label_values(&[site_id]).set(seconds(now));
    if let Some(committed) = newest_commit {
        // A site clock ahead of HQ's reads as no lag rather than a negative one.
        LAG.with_label_values(&[site_id])
            .set(seconds(now.saturating_sub(committed)));
    }
}

/// Sets a site's gauges from the health report its batch carried (`site_id` is from an
/// authenticated batch).
pub(crate) fn site_health(site_id: &str, health: &tributary_model::SiteHealth) {
    let gauge = |v: Option<u64>| v.map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX));
    SITE_SOURCE_LAG
        .with_label_values(&[site_id])
        .set(gauge(health.source_lag_seconds));
    SITE_SPOOL_BYTES
        .with_label_values(&[site_id])
        .set(gauge(health.spool_bytes));
    SITE_SPOOL_OLDEST_AGE
        .with_label_values(&[site_id])
        .set(gauge(health.spool_oldest_age_seconds));
    SITE_FAILING
        .with_label_values(&[site_id])
        .set(i64::from(health.failing));
}

/// Counts an error that interrupted applying.
pub fn applier_error(error: &crate::ApplyError) {
    let class = if error.is_transient() {
        "transient"
    } else {
        "fatal"
    };
    ERRORS.with_label_values(&[class]).inc();
}

/// Counts one HTTP request to a refresh endpoint.
pub(crate) fn refresh_request(endpoint: &str, ok: bool) {
    let result = if ok { "ok" } else { "error" };
    REFRESH_REQUESTS
        .with_label_values(&[endpoint, result])
        .inc();
}

/// Counts a refresh call given up.
pub(crate) fn refresh_failed(endpoint: &str) {
    REFRESH_FAILED.with_label_values(&[endpoint]).inc();
}

/// Counts a full refresh asked for.
pub(crate) fn refresh_full(reason: &str) {
    REFRESH_FULL.with_label_values(&[reason]).inc();
}

/// Sets how many entities wait for a refresh call.
pub(crate) fn refresh_queued(entities: usize) {
    REFRESH_QUEUED.set(i64::try_from(entities).unwrap_or(i64::MAX));
}

/// The site as a label: itself when HQ has a key for it, [`UNKNOWN_SITE`] otherwise.
fn site_label<'a>(keyring: &Keyring, site_id: &'a str) -> &'a str {
    if keyring.knows_site(site_id) {
        site_id
    } else {
        UNKNOWN_SITE
    }
}

/// Registers `metric` in the default registry. The names and help texts are constants of
/// this module (the test below registers every one), so an error here is a programming
/// error: it is logged and the metric still counts, unserved, rather than stopping the applier.
fn registered<M>(metric: prometheus::Result<M>) -> M
where
    M: prometheus::core::Collector + Clone + 'static,
{
    let metric = metric.expect("metric names and help texts are valid constants");
    if let Err(e) = prometheus::register(Box::new(metric.clone())) {
        tracing::error!(error = %e, "an applier metric could not be registered");
    }
    metric
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_batch::SiteKey;

    fn keyring_of(site: &str) -> Keyring {
        let mut keyring = Keyring::new();
        keyring.insert(SiteKey::generate(site).unwrap()).unwrap();
        keyring
    }

    fn rejected(site: &str, reason: RejectReason) -> u64 {
        BATCHES_REJECTED
            .with_label_values(&[site, reason.as_str()])
            .get()
    }

    #[test]
    fn a_known_sites_series_start_at_zero_for_every_reason() {
        let keyring = keyring_of("metrics-zero");
        register(&keyring);
        let family = prometheus::gather()
            .into_iter()
            .find(|f| f.name() == "tributary_apply_batches_rejected_total")
            .expect("registered");
        let reasons: Vec<&str> = family
            .get_metric()
            .iter()
            .filter(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "site" && l.value() == "metrics-zero")
            })
            .flat_map(|m| m.get_label().iter())
            .filter(|l| l.name() == "reason")
            .map(|l| l.value())
            .collect();
        assert_eq!(reasons.len(), RejectReason::ALL.len(), "{reasons:?}");
        assert_eq!(rejected("metrics-zero", RejectReason::RevokedKey), 0);
    }

    #[test]
    fn rejections_count_by_site_and_reason_name() {
        let keyring = keyring_of("metrics-known");
        batch_rejected(
            &keyring,
            "metrics-known",
            RejectReason::AuthenticationFailed,
        );
        batch_rejected(
            &keyring,
            "metrics-known",
            RejectReason::AuthenticationFailed,
        );
        assert_eq!(
            rejected("metrics-known", RejectReason::AuthenticationFailed),
            2
        );
        assert_eq!(rejected("metrics-known", RejectReason::ReplayedSequence), 0);
    }

    #[test]
    fn a_site_without_a_key_never_becomes_a_label() {
        let keyring = keyring_of("metrics-keyed");
        let before = rejected(UNKNOWN_SITE, RejectReason::UnknownSite);
        batch_rejected(&keyring, "forged-site-1", RejectReason::UnknownSite);
        batch_rejected(&keyring, "forged-site-2", RejectReason::UnknownSite);
        assert!(rejected(UNKNOWN_SITE, RejectReason::UnknownSite) >= before + 2);
        let labels = format!(
            "{:?}",
            prometheus::gather()
                .iter()
                .find(|f| f.name() == "tributary_apply_batches_rejected_total")
        );
        assert!(!labels.contains("forged-site"), "{labels}");
        assert!(
            tributary_batch::validate_site_id(UNKNOWN_SITE).is_err(),
            "no real site can share the label"
        );
    }

    #[test]
    fn applied_batches_count_their_rows_and_keep_lag_and_time_of_the_last() {
        let site = ["metrics-applied"];
        batch_applied(site[0], 7, Some(1_000), 1_012);
        assert_eq!(LAG.with_label_values(&site).get(), 12);
        // A keepalive: no transaction, so the lag stays; the batch time moves.
        batch_applied(site[0], 0, None, 1_060);
        assert_eq!(BATCHES.with_label_values(&site).get(), 2);
        assert_eq!(ROWS.with_label_values(&site).get(), 7);
        assert_eq!(LAG.with_label_values(&site).get(), 12);
        assert_eq!(LAST_BATCH.with_label_values(&site).get(), 1_060);
        // A site clock ahead of HQ's is no lag, never a negative one.
        batch_applied(site[0], 1, Some(2_000), 1_070);
        assert_eq!(LAG.with_label_values(&site).get(), 0);
    }

    #[test]
    fn errors_count_by_class() {
        let transient = crate::ApplyError::Database(mysql_async::Error::Io(
            mysql_async::IoError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        ));
        let fatal = crate::ApplyError::Config("no key directory".into());
        let count = |class: &str| ERRORS.with_label_values(&[class]).get();
        let before = (count("transient"), count("fatal"));
        applier_error(&transient);
        applier_error(&fatal);
        applier_error(&fatal);
        assert_eq!(
            (count("transient"), count("fatal")),
            (before.0 + 1, before.1 + 2)
        );
    }

    #[test]
    fn parked_gauges_follow_the_latest_reading() {
        parked("metrics-parked", 3, 90);
        parked("metrics-parked", 0, 0);
        assert_eq!(PARKED_ROWS.with_label_values(&["metrics-parked"]).get(), 0);
        parked("metrics-parked", 2, 7);
        assert_eq!(PARKED_ROWS.with_label_values(&["metrics-parked"]).get(), 2);
        assert_eq!(
            PARKED_OLDEST_AGE
                .with_label_values(&["metrics-parked"])
                .get(),
            7
        );
    }
}
