//! What `tributary seed` shows while it runs: on a terminal, two progress bars (the whole seed
//! and the current table: rows done, rows/s, ETA); otherwise one plain log line per table and
//! every [`LINE_INTERVAL`] within a long one. Counts only, never row values.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use tributary_capture::SeedStatus;

/// How often a plain line is written while one table is being sent.
const LINE_INTERVAL: Duration = Duration::from_secs(10);

pub struct SeedDisplay {
    started: Instant,
    /// Rows an interrupted run had already sent (excluded from this run's rate).
    rows_before: Option<u64>,
    table: String,
    output: Output,
}

enum Output {
    Bars {
        _bars: MultiProgress,
        overall: ProgressBar,
        table: ProgressBar,
    },
    Lines {
        last_line: Instant,
    },
}

impl SeedDisplay {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub fn on_stderr() -> SeedDisplay {
        let output = if std::io::stderr().is_terminal() {
            let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let overall = bars.add(ProgressBar::new(0).with_style(style()));
            overall.set_prefix("whole seed");
            let table = bars.add(ProgressBar::new(0).with_style(style()));
            Output::Bars {
                _bars: bars,
                overall,
                table,
            }
        } else {
            Output::Lines {
                last_line: Instant::now(),
            }
        };
        SeedDisplay {
            started: Instant::now(),
            rows_before: None,
            table: String::new(),
            output,
        }
    }

    pub fn update(&mut self, status: SeedStatus<'_>) {
        let rows_before = *self
            .rows_before
            .get_or_insert(status.rows.saturating_sub(status.table_rows));
        let new_table = status.table != self.table;
        if new_table {
            self.table = status.table.to_owned();
        }
        match &mut self.output {
            Output::Bars { overall, table, .. } => {
                if new_table {
                    table.set_prefix(status.table.to_owned());
                    table.reset();
                }
                overall.set_length(status.estimate);
                overall.set_position(status.rows);
                table.set_length(status.table_estimate);
                table.set_position(status.table_rows);
            }
            Output::Lines { last_line } => {
                if status.table_done || last_line.elapsed() >= LINE_INTERVAL {
                    *last_line = Instant::now();
                    let line = plain_line(&status, rows_before, self.started.elapsed());
                    tracing::info!("{line}");
                }
            }
        }
    }

    /// Removes the bars (the summary is printed after them).
    pub fn finish(&mut self) {
        if let Output::Bars { overall, table, .. } = &self.output {
            table.finish_and_clear();
            overall.finish_and_clear();
        }
    }
}

impl Drop for SeedDisplay {
    fn drop(&mut self) {
        self.finish();
    }
}

const TEMPLATE: &str =
    "{prefix:24!} [{bar:30}] {human_pos:>11}/{human_len:11} rows  {per_sec:>14}  ETA {eta}";

fn style() -> ProgressStyle {
    ProgressStyle::with_template(TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// `seeding obs: 120000 of ~400000 rows (30%); seed 300000 of ~1000000 rows (30%), 52000 rows/s, about 14 s left`
fn plain_line(status: &SeedStatus<'_>, rows_before: u64, elapsed: Duration) -> String {
    let rate = status.rows.saturating_sub(rows_before) as f64 / elapsed.as_secs_f64().max(0.001);
    let left = status.estimate.saturating_sub(status.rows);
    let eta = if rate >= 1.0 {
        format!("about {} left", human_duration(left as f64 / rate))
    } else {
        "time left unknown".to_owned()
    };
    let verb = if status.table_done { "sent" } else { "seeding" };
    format!(
        "{verb} {}: {} of ~{} rows ({}%); seed {} of ~{} rows ({}%), {:.0} rows/s, {eta}",
        status.table,
        status.table_rows,
        status.table_estimate,
        percent(status.table_rows, status.table_estimate),
        status.rows,
        status.estimate,
        percent(status.rows, status.estimate),
        rate,
    )
}

fn percent(done: u64, of: u64) -> u64 {
    done.saturating_mul(100)
        .checked_div(of)
        .map_or(100, |p| p.min(100))
}

fn human_duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..=99 => format!("{s} s"),
        100..=5999 => format!("{} min", s.div_ceil(60)),
        _ => format!("{:.1} h", seconds / 3600.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_line_gives_the_table_the_whole_and_the_time_left() {
        let status = SeedStatus {
            table: "obs",
            table_rows: 120_000,
            table_estimate: 400_000,
            rows: 300_000,
            estimate: 1_000_000,
            table_done: false,
        };
        let line = plain_line(&status, 100_000, Duration::from_secs(4));
        assert_eq!(
            line,
            "seeding obs: 120000 of ~400000 rows (30%); seed 300000 of ~1000000 rows (30%), \
             50000 rows/s, about 14 s left"
        );
    }

    #[test]
    fn the_bar_template_is_valid() {
        assert!(ProgressStyle::with_template(TEMPLATE).is_ok());
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(42.4), "42 s");
        assert_eq!(human_duration(600.0), "10 min");
        assert_eq!(human_duration(9000.0), "2.5 h");
        assert_eq!(percent(5, 0), 100);
    }
}
