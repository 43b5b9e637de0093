//! Child processes that cannot outlive their test.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::wait::wait_until;

/// The log filter (`RUST_LOG`) for the `tributary` processes tests start: `info`, or what
/// `TRIBUTARY_TEST_CHILD_LOG` says (e.g. `info,tributary_kafka=debug` to follow a failure).
pub fn child_log_filter() -> String {
    std::env::var("TRIBUTARY_TEST_CHILD_LOG").unwrap_or_else(|_| "info".to_owned())
}

/// Makes `cmd`'s process start with only stdin, stdout and stderr open.
///
/// Sockets that the test process holds without close-on-exec (librdkafka's mock brokers
/// accept connections that way) would otherwise live on in every child started later, and a
/// broker "going down" would close none of its connections: its clients would keep talking
/// to a socket that an unrelated process (a restarted database, say) holds and never reads.
pub fn without_inherited_fds(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and calls only close_range,
    // which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            // Marked close-on-exec rather than closed, so that the standard library's own
            // exec-error pipe keeps working until the exec.
            if libc::close_range(
                3,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// At most this much of the end of each log goes into [`ChildGuard::logs`].
const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// A child process that is killed (SIGKILL) and reaped when the guard drops, so a
/// failing test leaves nothing running. Its stdout and stderr go to
/// `<log_dir>/<name>.stdout.log` and `<name>.stderr.log` (appended to, so a restarted
/// process with the same name keeps one history); [`ChildGuard::logs`] reads them for
/// assertion messages.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    name: String,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin from /dev/null and stdout/stderr to files in `log_dir`
    /// (created if missing).
    pub fn spawn(cmd: &mut Command, log_dir: &Path, name: &str) -> anyhow::Result<ChildGuard> {
        fs::create_dir_all(log_dir)
            .with_context(|| format!("creating log dir {}", log_dir.display()))?;
        let stdout_path = log_dir.join(format!("{name}.stdout.log"));
        let stderr_path = log_dir.join(format!("{name}.stderr.log"));
        let open = |p: &Path| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening {}", p.display()))
        };
        let child = without_inherited_fds(cmd)
            .stdin(Stdio::null())
            .stdout(open(&stdout_path)?)
            .stderr(open(&stderr_path)?)
            .spawn()
            .with_context(|| format!("spawning {name}: {cmd:?}"))?;
        Ok(ChildGuard {
            child,
            name: name.to_owned(),
            stdout_path,
            stderr_path,
            status: None,
        })
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The name given to [`ChildGuard::spawn`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The underlying child, e.g. to `wait` on it.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Kills the process with SIGKILL (a crash: no cleanup, no flush) and reaps it.
    /// Idempotent: returns the exit status it already had if it has exited.
    pub fn kill9(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        // ESRCH/"already exited" races end up in wait() below.
        let _ = self.child.kill();
        let status = self.child.wait()?;
        self.status = Some(status);
        Ok(status)
    }

    /// Sends `signal` (a name such as `TERM`, `INT`, `HUP`) with kill(1), e.g. to test a
    /// graceful shutdown; then use [`ChildGuard::wait_exit`].
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg("-s")
            .arg(signal)
            .arg(self.id().to_string())
            .status()
            .context("running kill(1)")?;
        anyhow::ensure!(
            status.success(),
            "kill -s {signal} {} failed: {status}",
            self.id()
        );
        Ok(())
    }

    /// The exit status if the process has exited (reaping it), else `None`.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Waits (polling, see [`wait_until`]) until the process exits; its status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let what = format!("{} (pid {}) to exit", self.name, self.id());
        let waited = wait_until(&what, timeout, || {
            let exited = self.try_wait();
            async move { Ok(exited?.is_some()) }
        })
        .await;
        if let Err(e) = waited {
            return Err(e.context(self.logs()));
        }
        Ok(self.status.expect("try_wait saw the exit"))
    }

    /// Path of the stdout log.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout_path
    }

    /// Path of the stderr log.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Both logs (their last 64 KiB each), labelled, for assertion and error messages:
    /// `.map_err(|e| e.context(child.logs()))` or `assert!(.., "{}", child.logs())`.
    pub fn logs(&self) -> String {
        format!(
            "===== {name} (pid {pid}) stdout: {out} =====\n{stdout}\n\
             ===== {name} (pid {pid}) stderr: {err} =====\n{stderr}\n===== end of {name} logs =====",
            name = self.name,
            pid = self.child.id(),
            out = self.stdout_path.display(),
            err = self.stderr_path.display(),
            stdout = tail(&self.stdout_path),
            stderr = tail(&self.stderr_path),
        )
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

fn tail(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::from("(no log)");
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut prefix = "";
    if len > LOG_TAIL_BYTES {
        let _ = f.seek(SeekFrom::Start(len - LOG_TAIL_BYTES));
        prefix = "[... earlier output cut ...]\n";
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    format!("{prefix}{}", String::from_utf8_lossy(&buf))
}

/// True while process `pid` exists and is not a zombie (a process that exited but was
/// not reaped yet counts as gone).
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the command name, which is in parentheses and may
        // itself contain spaces or parentheses.
        Ok(stat) => match stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
        {
            Some(state) => state != "Z" && state != "X",
            None => false,
        },
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// The descriptors a running process has open.
    /// Whether `pid` is blocked in a nanosleep (by the kernel's wait channel, or its current
    /// system call: 230 is `clock_nanosleep` and 35 `nanosleep` on x86-64).
    fn asleep(pid: u32) -> bool {
        let wchan = fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        let syscall = fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        wchan.contains("nanosleep")
            || matches!(syscall.split_whitespace().next(), Some("230" | "35"))
    }

    fn open_fds(pid: u32) -> Vec<i32> {
        fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|dir| {
                dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn children_do_not_inherit_descriptors_left_open_across_exec() {
        let dir = std::env::temp_dir().join(format!("tributary-fds-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = File::create(dir.join("held")).unwrap();
        // dup() leaves close-on-exec off, like the mock brokers' accepted sockets.
        let leaky = unsafe { libc::dup(file.as_raw_fd()) };
        assert!(leaky > 2, "dup failed");
        let mut child = ChildGuard::spawn(
            Command::new("sleep").arg("30"),
            &dir.join("logs"),
            "sleeper",
        )
        .unwrap();
        let pid = child.id();
        // Asleep, not merely exec'd: while it starts, `sleep` opens and closes files of its
        // own (the locale archive), which would look like inherited descriptors.
        wait_until(
            "the child to sleep",
            Duration::from_secs(10),
            || async move {
                Ok(
                    fs::read_to_string(format!("/proc/{pid}/comm"))?.trim() == "sleep"
                        && asleep(pid),
                )
            },
        )
        .await
        .unwrap();
        let fds = open_fds(pid);
        let _ = child.kill9();
        unsafe { libc::close(leaky) };
        let _ = fs::remove_dir_all(&dir);
        assert!(
            !fds.contains(&leaky),
            "the child holds descriptor {leaky} of its parent: {fds:?}"
        );
        assert!(fds.iter().all(|fd| *fd <= 2), "the child holds {fds:?}");
    }
}
