//! The outbox's budget: a site offline for months keeps every batch until the transport has
//! taken it, so the outbox grows; it is capped by a configured size and by a disk reserve.
//!
//! Before a batch is staged the budget admits it or refuses with an error naming the outbox,
//! what it holds, the limit and the remedies. Refusal is transient: capture stops publishing
//! (the checkpoint stays where it is, the binlog keeps the changes) and retries from the
//! checkpoint after its backoff, so nothing is lost while the transport catches up or space
//! is freed. Crossing 80% of the cap is logged once per crossing.
//!
//! The size is counted incrementally and rescanned from the directory when it nears the cap
//! or every [`RESCAN_EVERY`] batches (the transport removes files behind capture's back).
//!
//! Every admission sets the outbox gauges (`tributary_capture_spool_*`, see
//! [`crate::metrics`]): bytes held, the cap, the disk's free bytes, and the blocked flag, which
//! is 1 from a refusal until the next batch is admitted. After a commit, the age of the oldest
//! batch the transport has not taken is read, at most every 15 s.

use crate::error::CaptureError;
use crate::metrics::{Blocked, SpoolGauges};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tributary_transport::Outbox;

/// Defaults: 10 GiB of outbox, and at least 512 MiB left free on its file system.
pub const DEFAULT_OUTBOX_LIMIT_BYTES: u64 = 10 << 30;
pub const DEFAULT_DISK_RESERVE_BYTES: u64 = 512 << 20;

const RESCAN_EVERY: u32 = 256;
/// How often the age of the oldest waiting batch is read (when batches are published).
const AGE_REFRESH: Duration = Duration::from_secs(15);
const WARN_PERCENT: u64 = 80;

/// How much the outbox may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    /// Bytes of batches the outbox may hold for this site.
    pub max_bytes: u64,
    /// Bytes that must stay free on the outbox's file system.
    pub disk_reserve_bytes: u64,
}

impl Default for SpoolLimits {
    fn default() -> SpoolLimits {
        SpoolLimits {
            max_bytes: DEFAULT_OUTBOX_LIMIT_BYTES,
            disk_reserve_bytes: DEFAULT_DISK_RESERVE_BYTES,
        }
    }
}

pub(crate) struct SpoolBudget {
    dir: PathBuf,
    limits: SpoolLimits,
    /// Bytes held, as last counted plus what was admitted since.
    used: u64,
    since_rescan: u32,
    warned: bool,
    gauges: SpoolGauges,
    /// When the oldest batch's age was last read.
    age_read_at: Option<Instant>,
}

impl SpoolBudget {
    pub fn open(dir: &Path, limits: SpoolLimits) -> Result<SpoolBudget, CaptureError> {
        SpoolBudget::open_with(dir, limits, SpoolGauges::global())
    }

    fn open_with(
        dir: &Path,
        limits: SpoolLimits,
        gauges: SpoolGauges,
    ) -> Result<SpoolBudget, CaptureError> {
        gauges.set_limits(limits);
        let mut budget = SpoolBudget {
            dir: dir.to_owned(),
            limits,
            used: 0,
            since_rescan: 0,
            warned: false,
            gauges,
            age_read_at: None,
        };
        budget.rescan()?;
        budget.gauges.set_disk_free(available_bytes(dir)?);
        Ok(budget)
    }

    /// Admits a batch of `bytes`, or refuses it when the outbox would pass its cap or the
    /// disk its reserve.
    pub fn admit(&mut self, bytes: u64) -> Result<(), CaptureError> {
        self.since_rescan += 1;
        if self.since_rescan >= RESCAN_EVERY
            || self.used.saturating_add(bytes) > self.limits.max_bytes / 10 * 9
        {
            self.rescan()?;
        }
        let after = self.used.saturating_add(bytes);
        if after > self.limits.max_bytes {
            self.gauges.set_blocked(Some(Blocked::Cap));
            return Err(CaptureError::OutboxFull {
                dir: self.dir.display().to_string(),
                used: self.used,
                limit: self.limits.max_bytes,
            });
        }
        let free = available_bytes(&self.dir)?;
        self.gauges.set_disk_free(free);
        if free < self.limits.disk_reserve_bytes.saturating_add(bytes) {
            self.gauges.set_blocked(Some(Blocked::Disk));
            return Err(CaptureError::DiskNearlyFull {
                dir: self.dir.display().to_string(),
                free,
                reserve: self.limits.disk_reserve_bytes,
            });
        }
        let warn_at = self.limits.max_bytes / 100 * WARN_PERCENT;
        if after >= warn_at && !self.warned {
            tracing::warn!(
                outbox = %self.dir.display(),
                used_bytes = after,
                limit_bytes = self.limits.max_bytes,
                "the outbox is over {WARN_PERCENT}% of its limit: is the transport taking batches?"
            );
            self.warned = true;
        } else if after < warn_at {
            self.warned = false;
        }
        self.used = after;
        self.gauges.set_held(after);
        self.gauges.set_blocked(None);
        Ok(())
    }

    /// Reads how long the oldest batch the transport has not taken has waited (at most every
    /// [`AGE_REFRESH`]); a failure to read it only leaves the gauge as it was.
    pub fn note_oldest(&mut self, outbox: &dyn Outbox) {
        if self.age_read_at.is_some_and(|t| t.elapsed() < AGE_REFRESH) {
            return;
        }
        self.age_read_at = Some(Instant::now());
        match outbox.oldest_committed_at() {
            Ok(oldest) => self.gauges.set_oldest(oldest),
            Err(error) => tracing::debug!(%error, "cannot read the outbox's oldest batch"),
        }
    }

    /// Bytes the outbox holds now, as counted.
    #[cfg(test)]
    pub fn used(&self) -> u64 {
        self.used
    }

    fn rescan(&mut self) -> Result<(), CaptureError> {
        self.since_rescan = 0;
        self.used = directory_bytes(&self.dir)?;
        self.gauges.set_held(self.used);
        Ok(())
    }
}

fn state_error(dir: &Path, e: impl std::fmt::Display) -> CaptureError {
    CaptureError::State {
        path: dir.display().to_string(),
        detail: e.to_string(),
    }
}

/// Bytes of the regular files directly in `dir` (a missing directory holds nothing).
fn directory_bytes(dir: &Path) -> Result<u64, CaptureError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(state_error(dir, e)),
    };
    let mut total = 0u64;
    for entry in entries {
        let entry = entry.map_err(|e| state_error(dir, e))?;
        // A file removed by the transport meanwhile simply no longer counts.
        if let Ok(metadata) = entry.metadata()
            && metadata.is_file()
        {
            total = total.saturating_add(metadata.len());
        }
    }
    Ok(total)
}

/// Bytes an unprivileged writer may still use on the file system holding `dir`.
fn available_bytes(dir: &Path) -> Result<u64, CaptureError> {
    let stats = rustix::fs::statvfs(dir).map_err(|e| state_error(dir, e))?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_refuses_a_batch_and_frees_up_when_files_go() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("1.batch"), vec![0u8; 600]).unwrap();
        let limits = SpoolLimits {
            max_bytes: 1_000,
            disk_reserve_bytes: 0,
        };
        let gauges = SpoolGauges::detached();
        let mut budget = SpoolBudget::open_with(dir.path(), limits, gauges.clone()).unwrap();
        assert_eq!(budget.used(), 600);
        assert_eq!((gauges.held(), gauges.limit()), (600, 1_000));
        budget.admit(300).unwrap();
        assert_eq!(gauges.held(), 900);
        assert!(gauges.disk_free() > 0);
        std::fs::write(dir.path().join("2.batch"), vec![0u8; 300]).unwrap();
        let err = budget.admit(300).unwrap_err();
        assert_eq!(
            (gauges.blocked(Blocked::Cap), gauges.blocked(Blocked::Disk)),
            (1, 0),
            "the refusal raises the cap flag"
        );
        assert!(
            matches!(
                err,
                CaptureError::OutboxFull {
                    used: 900,
                    limit: 1_000,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.is_transient(),
            "capture retries once the transport caught up"
        );
        assert!(err.to_string().contains(&dir.path().display().to_string()));
        // The transport took the first batch: the next admission rescans and fits.
        std::fs::remove_file(dir.path().join("1.batch")).unwrap();
        budget.admit(300).unwrap();
        assert_eq!(budget.used(), 600);
        assert_eq!(gauges.held(), 600);
        assert_eq!(
            gauges.blocked(Blocked::Cap),
            0,
            "cleared by the next admission"
        );
    }

    #[test]
    fn the_disk_reserve_refuses_when_the_file_system_is_nearly_full() {
        let dir = tempfile::tempdir().unwrap();
        let free = available_bytes(dir.path()).unwrap();
        let limits = SpoolLimits {
            max_bytes: u64::MAX,
            disk_reserve_bytes: free.saturating_add(1 << 30),
        };
        let gauges = SpoolGauges::detached();
        let mut budget = SpoolBudget::open_with(dir.path(), limits, gauges.clone()).unwrap();
        let err = budget.admit(1).unwrap_err();
        assert!(matches!(err, CaptureError::DiskNearlyFull { .. }), "{err}");
        assert_eq!(
            (gauges.blocked(Blocked::Cap), gauges.blocked(Blocked::Disk)),
            (0, 1)
        );
        assert!(gauges.disk_free() > 0, "measured before the refusal");
        assert!(err.is_transient());
    }

    #[test]
    fn the_oldest_waiting_batch_sets_the_age_gauge_until_it_is_taken() {
        let root = tempfile::tempdir().unwrap();
        let outbox = tributary_transport::DirectoryOutbox::open(root.path(), "clinic-a").unwrap();
        let staged = outbox.stage(1, 1, b"sealed").unwrap();
        outbox.commit(&staged).unwrap();
        let file = std::fs::read_dir(outbox.dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "batch"))
            .expect("the batch file");
        let committed = std::time::SystemTime::now() - Duration::from_secs(600);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(committed)
            .unwrap();
        let gauges = SpoolGauges::detached();
        let mut budget =
            SpoolBudget::open_with(outbox.dir(), SpoolLimits::default(), gauges.clone()).unwrap();
        budget.note_oldest(&outbox);
        assert!(
            (600..700).contains(&gauges.oldest_age()),
            "{}",
            gauges.oldest_age()
        );
        std::fs::remove_file(&file).unwrap();
        budget.note_oldest(&outbox);
        assert!(
            gauges.oldest_age() >= 600,
            "read at most every {AGE_REFRESH:?}"
        );
        budget.age_read_at = None;
        budget.note_oldest(&outbox);
        assert_eq!(gauges.oldest_age(), 0, "nothing waits");
    }
}
