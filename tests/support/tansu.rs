//! A private tansu broker (Kafka protocol) as a separate process, started and stopped through
//! `deploy/tansu.sh` like the MariaDB instances, under the suite's services root.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::paths::{repo_root, services_root};
use crate::process::without_inherited_fds;

/// A running tansu; stopped when dropped.
pub struct Tansu {
    dir: PathBuf,
    port: u16,
}

impl Tansu {
    /// Starts tansu in `<services>/<name>/tansu`, advertising `advertised_port` (a proxy in
    /// front of it) or its own port.
    pub fn start(name: &str, advertised_port: Option<u16>) -> anyhow::Result<Tansu> {
        let dir = services_root().join(name).join("tansu");
        let mut cmd = Command::new(repo_root().join("deploy/tansu.sh"));
        without_inherited_fds(&mut cmd).arg("start").arg(&dir);
        if let Some(port) = advertised_port {
            cmd.args(["--advertise", &port.to_string()]);
        }
        let out = cmd
            .env("TRIBUTARY_OWNER_PID", std::process::id().to_string())
            .output()
            .context("running deploy/tansu.sh start")?;
        if !out.status.success() {
            bail!(
                "deploy/tansu.sh start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let env = std::fs::read_to_string(dir.join("env"))?;
        let port = env
            .lines()
            .find_map(|l| l.strip_prefix("PORT="))
            .context("PORT in tansu's env file")?
            .parse()?;
        Ok(Tansu { dir, port })
    }

    /// The port tansu listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its working directory (its log is `tansu.log` there).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The end of tansu's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("tansu.log")).unwrap_or_default();
        let start = log.len().saturating_sub(8 * 1024);
        log.get(start..).unwrap_or_default().to_owned()
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("deploy/tansu.sh"))
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}
