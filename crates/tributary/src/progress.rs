//! A one-line progress display for long commands (`export`, `import`): redrawn in place on
//! stderr when stderr is a terminal, silent otherwise (logs and pipes get the summary only).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Redraws at most this often, so a file of many small batches does not flood the terminal.
const REDRAW_INTERVAL: Duration = Duration::from_millis(100);

pub struct Progress {
    enabled: bool,
    last_drawn: Option<Instant>,
    drawn: bool,
}

impl Progress {
    /// A progress line that shows only when stderr is a terminal.
    pub fn on_terminal() -> Progress {
        Progress {
            enabled: std::io::stderr().is_terminal(),
            last_drawn: None,
            drawn: false,
        }
    }

    /// Replaces the line with `text` (rate-limited).
    pub fn show(&mut self, text: impl FnOnce() -> String) {
        if !self.enabled
            || self
                .last_drawn
                .is_some_and(|t| t.elapsed() < REDRAW_INTERVAL)
        {
            return;
        }
        self.last_drawn = Some(Instant::now());
        self.drawn = true;
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{}", text());
        let _ = err.flush();
    }

    /// Clears the line, so what is printed next starts on a clean line.
    pub fn clear(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// `bytes` for people: `512 B`, `3.4 KiB`, `12.0 MiB`, `1.5 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 + 400), "3.4 KiB");
        assert_eq!(human_bytes(12 * 1024 * 1024), "12.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
