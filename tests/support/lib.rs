//! Test support for Tributary's end-to-end suite (package `tributary-suite`).
//!
//! The end-to-end tests drive the real `tributary` binary against real, private MariaDB
//! instances that `deploy/mariadb.sh` starts on 127.0.0.1 (never a system-wide server), and,
//! for the Kafka transport, a tansu broker that `deploy/tansu.sh` starts ([`Tansu`]) behind a
//! link the test can cut ([`TcpProxy`]); [`scrape`] reads a running command's `/metrics`
//! endpoint (see [`metrics`]):
//!
//! ```no_run
//! use std::time::Duration;
//! use mysql_async::prelude::*;
//! use tributary_suite::{ChildGuard, MariaDb, Role, tributary_bin, wait_until};
//!
//! # async fn example() -> anyhow::Result<()> {
//! let (site, hq) = MariaDb::start_site_and_hq("example")?; // in parallel
//! let mut cmd = std::process::Command::new(tributary_bin());
//! cmd.arg("--help");
//! let mut child = ChildGuard::spawn(&mut cmd, site.dir(), "tributary")?;
//! let hq_ref = &hq;
//! wait_until("the location to reach HQ", Duration::from_secs(30), move || async move {
//!     let n: Option<u64> = hq_ref.conn().await?
//!         .query_first("SELECT COUNT(*) FROM location").await?;
//!     Ok(n == Some(1))
//! })
//! .await
//! .map_err(|e| e.context(child.logs()))?;
//! child.kill9()?;
//! # Ok(()) }
//! ```
//!
//! Rules the suite keeps: tests never sleep to wait for an effect; they poll with
//! [`wait_until`]. Every process a test starts is owned by a guard ([`MariaDb`],
//! [`ChildGuard`]) that stops it on drop, and `deploy/test.sh` kills whatever a crashed
//! test left behind.

pub mod clinical_work;
pub mod every_table;
mod mariadb;
mod memory;
pub mod metrics;
mod netns;
mod paths;
pub mod pipeline;
mod process;
mod proxy;
mod small_disk;
mod tansu;
pub mod tls;
mod wait;
pub mod webdriver;
pub mod workload;

pub use mariadb::{MariaDb, Role};
pub use memory::{cpu_seconds, peak_rss_kib};
pub use metrics::{Scrape, scrape, wait_metrics_address};
pub use netns::NetNamespace;
pub use paths::{example_bin, repo_root, services_root, target_dir, tributary_bin};
pub use process::{ChildGuard, child_log_filter, pid_alive, without_inherited_fds};
pub use proxy::TcpProxy;
pub use small_disk::SmallDisk;
pub use tansu::Tansu;
pub use wait::wait_until;

/// A random run's seed: `var`'s value when set (to replay a run), else one from the clock.
/// Printed by the caller, so a failing run can be replayed.
pub fn seed_from_env_or_time(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// The benchmarks' size: `TRIBUTARY_BENCH_ROWS` row changes, or `default`.
pub fn bench_rows(default: u64) -> u64 {
    std::env::var("TRIBUTARY_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
