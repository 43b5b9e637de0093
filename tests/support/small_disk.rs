//! A small file system of its own (a tmpfs) that a test can fill up and empty again: a site's
//! spool disk running full while capture writes to it, without touching the machine's disks.
//!
//! [`SmallDisk::fill_leaving`] writes a ballast file until only the given number of bytes is
//! left free; [`SmallDisk::empty`] removes it. The file system is unmounted when the guard
//! drops (lazily, so a process still holding a file open does not keep it), also while a test
//! panics. Mounting needs root; [`SmallDisk::unavailable`] says why a test cannot.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

const BALLAST: &str = ".ballast";
const CHUNK: usize = 1 << 20;

/// A tmpfs mounted on a directory; unmounted on drop.
#[derive(Debug)]
pub struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    /// Why this process cannot mount a tmpfs (not root), or `None`.
    pub fn unavailable() -> Option<String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        (unsafe { libc::geteuid() } != 0).then(|| "mounting a tmpfs needs root".to_owned())
    }

    /// Mounts a tmpfs of `size_mib` MiB on `dir` (created when missing, and empty).
    pub fn mount(dir: &Path, size_mib: u64) -> anyhow::Result<SmallDisk> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m,mode=0700")])
            .arg("tmpfs")
            .arg(dir)
            .output()
            .context("running mount(8)")?;
        if !out.status.success() {
            bail!(
                "mounting a tmpfs on {}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(SmallDisk {
            dir: dir.to_owned(),
        })
    }

    /// The mount point.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes an unprivileged writer may still use (what `statvfs(2)` reports as available).
    pub fn free_bytes(&self) -> anyhow::Result<u64> {
        let path = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes())?;
        // SAFETY: a NUL-terminated path and a zeroed struct statvfs fills in.
        let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("statvfs {}", self.dir.display()));
        }
        Ok(stats.f_bavail * stats.f_frsize)
    }

    /// Writes a ballast file until at most `free` bytes are left (the disk is "full" for a
    /// writer that keeps a larger reserve). Returns the ballast's size.
    pub fn fill_leaving(&self, free: u64) -> anyhow::Result<u64> {
        let path = self.dir.join(BALLAST);
        let mut ballast = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let chunk = vec![0x5a_u8; CHUNK];
        let mut written = 0u64;
        loop {
            let available = self.free_bytes()?;
            if available <= free {
                break;
            }
            let step = (available - free).min(CHUNK as u64) as usize;
            ballast.write_all(&chunk[..step])?;
            ballast.flush()?;
            written += step as u64;
        }
        Ok(written)
    }

    /// Removes the ballast: the disk has its space back.
    pub fn empty(&self) -> anyhow::Result<()> {
        match fs::remove_file(self.dir.join(BALLAST)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg("-l").arg(&self.dir).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            eprintln!("tributary-suite: unmounting {}", self.dir.display());
        }
    }
}
