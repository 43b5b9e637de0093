//! The site's health report: what HQ shows for a site nobody can visit (issue 9). It rides in
//! the batch stream, authenticated like every batch: a batch carries it at most every
//! `[site] health_interval_ms`, an idle capture sends it in a keepalive batch, and capture
//! sends one at once when a session fails, so HQ hears of a failure while capture retries
//! (or before it stops, on a fatal error).
//!
//! Never row values or keys: versions, positions, sizes, and error messages (which name
//! servers, files and positions, not data).

use crate::error::CaptureError;
use mysql_async::Conn;
use mysql_async::prelude::*;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tributary_model::{SiteError, SiteHealth};

/// How often a site reports its health unless `[site] health_interval_ms` says otherwise.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(60);
/// The longest error message a report carries.
const MESSAGE_LIMIT: usize = 500;

/// The error that ended capture's last session, and whether no session has started since.
static LAST_ERROR: Mutex<(Option<SiteError>, bool)> = Mutex::new((None, false));

/// Notes an error that ended a capture session (or capture).
pub(crate) fn session_failed(error: &CaptureError, transient: bool) {
    let mut message = reported_message(error);
    if message.len() > MESSAGE_LIMIT {
        let mut end = MESSAGE_LIMIT;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("...");
    }
    let class = if transient { "transient" } else { "fatal" };
    let mut last = LAST_ERROR.lock().unwrap_or_else(|p| p.into_inner());
    *last = (
        Some(SiteError {
            class: class.to_owned(),
            message,
            at: unix_now(),
        }),
        true,
    );
}

/// What HQ is told of an error. A database driver error may quote a value it could not
/// convert (a row's value), so those are named by their kind, the server's code and state only.
fn reported_message(error: &CaptureError) -> String {
    match error {
        CaptureError::Database(mysql_async::Error::Server(e)) => format!(
            "source database: server error {} (SQLSTATE {})",
            e.code, e.state
        ),
        CaptureError::Database(mysql_async::Error::Io(e)) => {
            format!("source database: connection: {e}")
        }
        CaptureError::Database(mysql_async::Error::Driver(_)) => {
            "source database: driver error (see the site's log)".to_owned()
        }
        CaptureError::Database(_) => {
            "source database: unexpected value or reply (see the site's log)".to_owned()
        }
        other => other.to_string(),
    }
}

/// A session is streaming again: capture is no longer failing (the error stays reported).
pub(crate) fn session_started() {
    LAST_ERROR.lock().unwrap_or_else(|p| p.into_inner()).1 = false;
}

/// When the next report is due, and what the source said of itself.
#[derive(Debug)]
pub(crate) struct HealthReporter {
    interval: Duration,
    last_sent: Option<Instant>,
    database_version: Option<String>,
    openmrs_version: Option<String>,
}

impl HealthReporter {
    pub fn new(interval: Duration) -> HealthReporter {
        HealthReporter {
            interval,
            last_sent: None,
            database_version: None,
            openmrs_version: None,
        }
    }

    /// The source's versions, read at each session start.
    pub fn set_versions(&mut self, database: String, openmrs: Option<String>) {
        self.database_version = Some(database);
        self.openmrs_version = openmrs;
    }

    /// The next batch carries a report whatever the interval.
    pub fn make_due(&mut self) {
        self.last_sent = None;
    }

    /// Whether the batch being sealed carries a report: the first one does, then one every
    /// interval.
    pub fn due(&self) -> bool {
        self.last_sent.is_none_or(|t| t.elapsed() >= self.interval)
    }

    /// Whether an idle capture sends a keepalive batch for a report: once one was sent, every
    /// interval (before the first, the keepalive interval decides).
    pub fn due_while_idle(&self) -> bool {
        self.last_sent.is_some_and(|t| t.elapsed() >= self.interval)
    }

    /// The report for the batch being sealed now.
    pub fn report(&mut self, source_position: &str) -> SiteHealth {
        self.last_sent = Some(Instant::now());
        let spool = crate::metrics::SpoolGauges::global();
        let (last_error, failing) = LAST_ERROR.lock().unwrap_or_else(|p| p.into_inner()).clone();
        SiteHealth {
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            database_version: self.database_version.clone(),
            openmrs_version: self.openmrs_version.clone(),
            source_position: (!source_position.is_empty()).then(|| source_position.to_owned()),
            source_lag_seconds: Some(crate::metrics::lag_seconds()),
            spool_bytes: Some(spool.held_bytes()),
            spool_oldest_age_seconds: Some(spool.oldest_age_seconds()),
            disk_free_bytes: Some(spool.disk_free_bytes()),
            last_error,
            failing,
            reported_at: unix_now(),
        }
    }
}

/// The OpenMRS version the site's schema was last upgraded to: from the newest core Liquibase
/// changelog file OpenMRS ran (`liquibase-update-to-latest-2.8.x.xml` → `2.8.x`); `None` when
/// the database does not say (no changelog table, or no such file in it).
pub(crate) async fn openmrs_version(conn: &mut Conn) -> Option<String> {
    let newest: Option<String> = conn
        .query_first(
            "SELECT FILENAME FROM liquibasechangelog \
             WHERE FILENAME LIKE '%update-to-latest-%' ORDER BY ORDEREXECUTED DESC LIMIT 1",
        )
        .await
        .ok()
        .flatten();
    newest.as_deref().and_then(version_in_changelog)
}

/// `…liquibase-update-to-latest-2.8.x.xml` → `2.8.x`.
fn version_in_changelog(file: &str) -> Option<String> {
    let (_, rest) = file.rsplit_once("update-to-latest-")?;
    let version = rest.strip_suffix(".xml").unwrap_or(rest);
    let well_formed = !version.is_empty()
        && version
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == 'x');
    well_formed.then(|| version.to_owned())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openmrs_version_is_read_from_the_newest_core_changelog_file() {
        assert_eq!(
            version_in_changelog(
                "org/openmrs/liquibase/updates/liquibase-update-to-latest-2.8.x.xml"
            ),
            Some("2.8.x".to_owned())
        );
        assert_eq!(version_in_changelog("liquibase-core-data.xml"), None);
        assert_eq!(version_in_changelog("update-to-latest-<script>.xml"), None);
    }

    #[test]
    fn a_report_is_due_at_first_and_then_once_per_interval() {
        let mut reporter = HealthReporter::new(Duration::from_secs(3600));
        assert!(reporter.due());
        let report = reporter.report("0-1-42");
        assert!(!reporter.due());
        assert_eq!(report.source_position.as_deref(), Some("0-1-42"));
        assert_eq!(report.agent_version, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn a_failed_session_is_reported_as_failing_until_one_starts_again() {
        let error = CaptureError::StreamEnded;
        session_failed(&error, true);
        let mut reporter = HealthReporter::new(Duration::ZERO);
        let failing = reporter.report("");
        assert!(failing.failing);
        let reported = failing.last_error.expect("the error");
        assert_eq!(reported.class, "transient");
        assert_eq!(reported.message, error.to_string());
        session_started();
        let recovered = reporter.report("");
        assert!(!recovered.failing && recovered.last_error.is_some());
    }
}
