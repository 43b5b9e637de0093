//! How much memory a process took at its peak, as the kernel keeps it (`VmHWM`).

/// The peak resident set of process `pid` (this process when `None`), in KiB; `None` when it
/// cannot be read (the process is gone, or no /proc).
pub fn peak_rss_kib(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
