//! Network namespaces: a process of its own network (here a site's shipper), whose only way
//! out is through listeners the test places inside it, so the test can cut that one site's
//! link while every other process keeps its network.
//!
//! A namespace has nothing but its own loopback interface. [`NetNamespace::bind_loopback`]
//! binds a listener on `127.0.0.1:<port>` *inside* it (a short-lived thread enters the
//! namespace with `setns(2)`, binds, and leaves; the socket stays in the namespace), which a
//! [`crate::TcpProxy`] then serves from the test's own namespace: a client inside connects to
//! the same address it would use outside, and the proxy, connecting out from the host's
//! namespace, reaches the real server. Cutting the proxy is cutting the link.
//!
//! Creating namespaces needs root and iproute2's `ip`; [`NetNamespace::unavailable`] says
//! why a test cannot have them. A namespace is deleted when its guard drops, also while a
//! test panics.

use std::fs::File;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// Where `ip netns add` pins named namespaces.
const NETNS_DIR: &str = "/var/run/netns";

/// A named network namespace with its loopback up; deleted on drop.
#[derive(Debug)]
pub struct NetNamespace {
    name: String,
}

impl NetNamespace {
    /// Why this process cannot create network namespaces (not root, no `ip`), or `None`.
    pub fn unavailable() -> Option<String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Some("network namespaces need root".to_owned());
        }
        let ip = Command::new("ip")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match ip {
            Ok(status) if status.success() => None,
            _ => Some("iproute2's `ip` is not installed".to_owned()),
        }
    }

    /// Creates namespace `name` (letters, digits, `-`) with its loopback interface up.
    pub fn create(name: &str) -> anyhow::Result<NetNamespace> {
        anyhow::ensure!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "namespace name {name:?}: use letters, digits and '-'"
        );
        ip(&["netns", "add", name])?;
        let namespace = NetNamespace {
            name: name.to_owned(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(namespace)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file that pins the namespace (what `setns(2)` opens).
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`, which execs the
    /// program itself: the child's pid is the program's).
    pub fn command(&self, program: &Path) -> Command {
        NetNamespace::command_in(&self.name, program)
    }

    /// [`NetNamespace::command`] for the namespace named `name`.
    pub fn command_in(name: &str, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", name]).arg(program);
        cmd
    }

    /// A listener on `127.0.0.1:<port>` inside the namespace. Connections it accepts come
    /// from processes in the namespace; whoever serves it may run in any namespace.
    pub fn bind_loopback(&self, port: u16) -> anyhow::Result<TcpListener> {
        let namespace = File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        // setns(2) moves only the calling thread: a thread of its own enters, binds, ends.
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: a valid namespace file descriptor and a known namespace type;
                    // only this short-lived thread changes namespace.
                    if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(std::io::Error::last_os_error())
                            .context("entering the network namespace");
                    }
                    TcpListener::bind(("127.0.0.1", port))
                        .with_context(|| format!("binding 127.0.0.1:{port} in {}", self.name))
                })
                .join()
                .map_err(|_| anyhow::anyhow!("the thread binding in {} panicked", self.name))?
        })
    }
}

impl Drop for NetNamespace {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!(
                "tributary-suite: deleting network namespace {}: {e:#}",
                self.name
            );
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {args:?}"))?;
    if !out.status.success() {
        bail!(
            "ip {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
