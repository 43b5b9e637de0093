//! How long rows have been parked: the applier's parked-row (and open-conflict) gauges per
//! site, and one warning
//! per site when its oldest parked row has waited longer than `[hq] parked_report_age_s`
//! (again only after the site had no such row for a while), so a row that can never move is
//! reported rather than retried unnoticed forever.
//!
//! Readings are taken when the applier starts, after a batch parked or released rows (at most
//! once per [`MIN_REFRESH_INTERVAL`]) and on every periodic retry of parked rows, so the age
//! gauge lags by at most `retry_parked_interval_ms`.

use crate::status::{open_conflicts, parked_ages};
use mysql_async::Conn;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Readings after parking or releasing are at most this frequent (a busy backlog of parked
/// rows would otherwise add a grouped scan of the parking table to every batch).
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) struct AgeWatch {
    report_age: Duration,
    /// Sites whose oldest parked row is over the report age (warned once).
    over: BTreeSet<String>,
    /// Sites whose gauges were set, to zero them when their last parked row leaves.
    gauged: BTreeSet<String>,
    /// Sites whose open-conflict gauge was set, to zero it when their last one is resolved.
    conflicted: BTreeSet<String>,
    last_reading: Option<Instant>,
}

impl AgeWatch {
    pub(crate) fn new(report_age: Duration) -> AgeWatch {
        AgeWatch {
            report_age,
            over: BTreeSet::new(),
            gauged: BTreeSet::new(),
            conflicted: BTreeSet::new(),
            last_reading: None,
        }
    }

    /// A reading after rows were parked or released, unless one was taken very recently.
    pub(crate) async fn after_change(&mut self, conn: &mut Conn) -> mysql_async::Result<()> {
        match self.last_reading {
            Some(at) if at.elapsed() < MIN_REFRESH_INTERVAL => Ok(()),
            _ => self.read(conn).await,
        }
    }

    /// Reads the parking table's ages per site, sets the gauges and warns about sites whose
    /// oldest row has just crossed the report age.
    pub(crate) async fn read(&mut self, conn: &mut Conn) -> mysql_async::Result<()> {
        self.last_reading = Some(Instant::now());
        let ages = parked_ages(conn, self.report_age.as_secs()).await?;
        let mut seen = BTreeSet::new();
        for age in &ages {
            crate::metrics::parked(&age.site_id, age.rows, age.oldest_age_seconds);
            if self.crossed(&age.site_id, age.older) {
                tracing::warn!(
                    site = %age.site_id,
                    parked = age.rows,
                    older = age.older,
                    oldest_age_s = age.oldest_age_seconds,
                    report_age_s = self.report_age.as_secs(),
                    "parked rows of this site have waited longer than parked_report_age_s; \
                     `tributary parked list --site <site>` says what they wait for"
                );
            }
            seen.insert(age.site_id.clone());
        }
        for site in self.gauged.difference(&seen) {
            crate::metrics::parked(site, 0, 0);
            self.over.remove(site);
        }
        self.gauged = seen;
        let open = open_conflicts(conn).await?;
        let with_conflicts: BTreeSet<String> = open.iter().map(|(site, _)| site.clone()).collect();
        for (site, count) in &open {
            crate::metrics::conflicts_open(site, *count);
        }
        for site in self.conflicted.difference(&with_conflicts) {
            crate::metrics::conflicts_open(site, 0);
        }
        self.conflicted = with_conflicts;
        Ok(())
    }

    /// Whether `site`, with `older` rows over the report age, has just crossed it.
    fn crossed(&mut self, site: &str, older: u64) -> bool {
        if older == 0 {
            self.over.remove(site);
            return false;
        }
        self.over.insert(site.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_is_reported_once_per_crossing() {
        let mut watch = AgeWatch::new(Duration::from_secs(60));
        assert!(!watch.crossed("a", 0));
        assert!(watch.crossed("a", 2), "first crossing is reported");
        assert!(!watch.crossed("a", 3), "still over: not again");
        assert!(watch.crossed("b", 1), "each site on its own");
        assert!(!watch.crossed("a", 0));
        assert!(
            watch.crossed("a", 1),
            "a new crossing after release is reported"
        );
    }
}
