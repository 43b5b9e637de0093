//! `tributary parked list|show|retry|drop`: operating HQ's parked rows (rows waiting for
//! their foreign-key parents, or refused by HQ) by hand.
//!
//! Parked rows are health data: this command prints tables, identities, reasons and column
//! names, and a row's column values only when `show --values` asks for them. Nothing leaves
//! parking silently: `drop` records the row, the reason and the time at HQ
//! (`tributary_dropped_row`) and the applier-side code logs it.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use tributary_apply::{
    ParkedDetail, ParkedEntry, ParkedFilter, ParkedRows, RetryOutcome, short_identity,
};
use tributary_model::{Op, Value};

use crate::config::{Config, InFile};

/// Operate HQ's parked rows.
#[derive(Debug, Subcommand)]
#[command(after_help = "\
A row is parked at HQ when a row it refers to (its encounter, patient, concept...) has not \
arrived yet, when an earlier change to the same row is parked, or when HQ refused it (a unique \
key collision, a column HQ does not have). The applier releases parked rows by itself when \
their parents arrive and retries all of them every `[hq] retry_parked_interval_ms`; rows \
older than `[hq] parked_report_age_s` are reported by `tributary status`, a warning log and \
the tributary_apply_parked_oldest_age_seconds metric.

Typical work:
  tributary parked list -c hq.toml --older-than 1d      what waits, and for what
  tributary parked show -c hq.toml 17                    one row: every parent it waits for
  tributary seed -c site.toml --tables encounter         at the site the reason names: re-send
  tributary parked retry -c hq.toml 17                   try it now (or --all)
  tributary parked drop -c hq.toml 17 --reason \"...\"     last resort, recorded at HQ

Column values are health data: they are shown only by `show --values`.")]
pub enum ParkedCommand {
    /// List parked rows, oldest first, each with what it waits for.
    List(ListArgs),
    /// Show one parked row: site, batch, table, identity, age, every row it waits for and
    /// where that row stands, and the NAMES of its columns (values only with --values).
    Show(ShowArgs),
    /// Try to write a parked row (or every one) now; says whether it was released or why it
    /// still waits.
    Retry(RetryArgs),
    /// Remove a parked row for good. It is recorded at HQ (tributary_dropped_row: the row
    /// change, your reason, the time) and logged, never lost silently.
    Drop(DropArgs),
}

/// `tributary parked list` options.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Configuration file with an [hq] section.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Only rows from this site.
    #[arg(long)]
    pub site: Option<String>,
    /// Only rows of this table.
    #[arg(long)]
    pub table: Option<String>,
    /// Only rows parked at least this long ago: seconds, or a number with s, m, h or d
    /// (90s, 15m, 2h, 1d).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_s)]
    pub older_than: Option<u64>,
    /// At most this many rows.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Print JSON (one array) instead of a table; identities in full, never column values.
    #[arg(long)]
    pub json: bool,
}

/// `tributary parked show` options.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Configuration file with an [hq] section.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The parked row's id (first column of `tributary parked list`).
    pub id: u64,
    /// Also print the row's column values. They are patient health data: use only when you
    /// need them, and do not paste the output where it does not belong.
    #[arg(long)]
    pub values: bool,
}

/// `tributary parked retry` options.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["id", "all"]))]
pub struct RetryArgs {
    /// Configuration file with an [hq] section.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The parked row to retry.
    pub id: Option<u64>,
    /// Retry every parked row once (as the applier's periodic retry does).
    #[arg(long)]
    pub all: bool,
}

/// `tributary parked drop` options.
#[derive(Debug, Args)]
pub struct DropArgs {
    /// Configuration file with an [hq] section.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The parked row to drop.
    pub id: u64,
    /// Why it is dropped (recorded at HQ with the time, and logged).
    #[arg(long)]
    pub reason: String,
}

/// Runs a `tributary parked` command.
pub async fn run(command: &ParkedCommand) -> Result<ExitCode> {
    match command {
        ParkedCommand::List(args) => {
            let mut parked = connect(&args.config).await?;
            let filter = ParkedFilter {
                site: args.site.clone(),
                table: args.table.clone(),
                older_than_s: args.older_than.unwrap_or(0),
                limit: args.limit,
            };
            let entries = parked.list(&filter).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                print!("{}", list_table(&entries, args.limit));
            }
        }
        ParkedCommand::Show(args) => {
            let mut parked = connect(&args.config).await?;
            let Some(detail) = parked.show(args.id).await? else {
                bail!(unknown(&mut parked, args.id).await?);
            };
            print!("{}", show_text(&detail, args.values));
        }
        ParkedCommand::Retry(args) => {
            let mut parked = connect(&args.config).await?;
            match args.id {
                Some(id) => match parked.retry(id).await? {
                    RetryOutcome::Released { released } => println!(
                        "parked row #{id} was released: written at HQ ({released} rows \
                         released in all, counting rows that waited for it)"
                    ),
                    RetryOutcome::StillParked(entry) => println!(
                        "parked row #{id} is still parked ({} {}): {}",
                        entry.table,
                        short_identity(&entry.identity),
                        entry.reason
                    ),
                    RetryOutcome::Conflict => println!(
                        "parked row #{id} left parking as a conflict: HQ's row changed since \
                         its site last wrote it (`tributary conflicts list` shows it, unless \
                         the table's [hq.conflicts] policy settled it)"
                    ),
                    RetryOutcome::Unknown => bail!(unknown(&mut parked, id).await?),
                },
                None => {
                    let (released, left) = parked.retry_all().await?;
                    println!("retried every parked row: {released} released, {left} still parked");
                }
            }
        }
        ParkedCommand::Drop(args) => {
            let reason = args.reason.trim();
            if reason.is_empty() {
                bail!("--reason must say why the row is dropped; it is recorded at HQ");
            }
            let mut parked = connect(&args.config).await?;
            let Some(dropped) = parked.drop_row(args.id, reason).await? else {
                bail!(unknown(&mut parked, args.id).await?);
            };
            println!(
                "dropped parked row #{} ({} from site {}); recorded in tributary_dropped_row \
                 at {} UTC with reason: {}",
                dropped.parked_id,
                dropped.table,
                dropped.site_id,
                dropped.dropped_at,
                dropped.drop_reason
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn connect(config: &std::path::Path) -> Result<ParkedRows> {
    let config = Config::load(config)?;
    let (opts, database) = config.hq_database().in_file(&config)?;
    let queue = ParkedRows::connect(
        opts,
        &database,
        &config.policy()?,
        config.conflict_policies()?,
    )
    .await
    .context("connecting to HQ")?;
    Ok(queue.recording_applied_changes(config.integration_enabled()))
}

/// Why there is no parked row `id`: dropped (when and why), or not parked (released, or never).
async fn unknown(parked: &mut ParkedRows, id: u64) -> Result<String> {
    Ok(match parked.dropped(id).await? {
        Some(d) => format!(
            "parked row #{id} was dropped at {} UTC: {}",
            d.dropped_at, d.drop_reason
        ),
        None => format!(
            "no parked row #{id} at HQ: it was released, or never existed; \
             `tributary parked list` shows the rows parked now"
        ),
    })
}

fn list_table(entries: &[ParkedEntry], limit: u32) -> String {
    let mut out = String::new();
    if entries.is_empty() {
        out.push_str("no parked rows match\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:>8}  {:<16} {:>7} {:<20} {:<12} {:>9}  reason",
        "id", "site", "batch", "table", "identity", "age"
    );
    for e in entries {
        let _ = writeln!(
            out,
            "{:>8}  {:<16} {:>7} {:<20} {:<12} {:>9}  {}",
            e.parked_id,
            e.site_id,
            e.sequence,
            e.table,
            short_identity(&e.identity),
            human_age(e.age_seconds),
            e.reason
        );
    }
    if entries.len() >= limit as usize {
        let _ = writeln!(out, "(first {limit} shown; --limit shows more)");
    }
    out
}

fn show_text(detail: &ParkedDetail, values: bool) -> String {
    let e = &detail.entry;
    let mut out = String::new();
    let _ = writeln!(out, "parked row #{}", e.parked_id);
    let _ = writeln!(
        out,
        "  site:       {} (epoch {}, batch {})",
        e.site_id, e.epoch, e.sequence
    );
    let _ = writeln!(out, "  table:      {}", e.table);
    let _ = writeln!(out, "  identity:   {}", e.identity);
    if let Some(change) = &detail.change {
        let op = match change.op {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        };
        let _ = writeln!(out, "  change:     {op}");
    }
    let _ = writeln!(
        out,
        "  parked at:  {} UTC ({} ago)",
        e.parked_at,
        human_age(e.age_seconds)
    );
    let _ = writeln!(out, "  reason:     {}", e.reason);
    if e.waits.is_empty() {
        let _ = writeln!(
            out,
            "  waits for:  nothing that can arrive (see the reason)"
        );
    } else {
        let _ = writeln!(out, "  waits for:");
        for w in &e.waits {
            let _ = writeln!(
                out,
                "    {}[{}]: {}",
                w.table,
                w.identity,
                w.state.describe()
            );
        }
    }
    match &detail.change {
        None => {
            let _ = writeln!(out, "  columns:    (the stored row change cannot be read)");
        }
        Some(change) if values => {
            let _ = writeln!(out, "  columns and values (health data):");
            for (name, value) in change.columns.iter() {
                let _ = writeln!(out, "    {name} = {}", value_text(value));
            }
        }
        Some(change) => {
            let names: Vec<&str> = change.columns.keys().map(|n| &**n).collect();
            let _ = writeln!(
                out,
                "  columns:    {} (values not shown; --values shows them)",
                names.join(", ")
            );
        }
    }
    out
}

fn value_text(value: &Value) -> String {
    match value {
        Value::Ref(r) => format!("-> {r}"),
        other => serde_json::to_string(other).unwrap_or_else(|_| "?".to_owned()),
    }
}

/// "45 s", "12 min", "3 h 5 min", "2 d 4 h".
pub fn human_age(seconds: u64) -> String {
    let (d, h, m) = (seconds / 86_400, seconds / 3_600 % 24, seconds / 60 % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{seconds} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

/// `90`, `90s`, `15m`, `2h`, `1d` -> seconds.
pub fn parse_duration_s(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "unknown unit '{other}': use s, m, h or d (90s, 15m, 2h, 1d)"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("'{text}' is not a duration (90s, 15m, 2h, 1d)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_apply::{AwaitedRow, AwaitedState};
    use tributary_model::RowChange;

    #[test]
    fn durations_read_with_units() {
        assert_eq!(parse_duration_s("90"), Ok(90));
        assert_eq!(parse_duration_s("15m"), Ok(900));
        assert_eq!(parse_duration_s("2h"), Ok(7_200));
        assert_eq!(parse_duration_s("1d"), Ok(86_400));
        assert!(parse_duration_s("1w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration_s("h").is_err());
    }

    #[test]
    fn ages_read_like_a_person_says_them() {
        assert_eq!(human_age(45), "45 s");
        assert_eq!(human_age(720), "12 min");
        assert_eq!(human_age(3 * 3_600 + 300), "3 h 5 min");
        assert_eq!(human_age(2 * 86_400 + 4 * 3_600), "2 d 4 h");
    }

    fn detail() -> ParkedDetail {
        let json = r#"{"table":"obs","op":"insert","identity":"0b5e","columns":{"value_text":"HIV positive","concept_id":5089}}"#;
        let change: Option<RowChange> = serde_json::from_str(json).ok();
        assert!(change.is_some(), "fixture is a row change");
        ParkedDetail {
            entry: ParkedEntry {
                parked_id: 17,
                site_id: "kisumu-01".to_owned(),
                epoch: 1,
                sequence: 5,
                table: "obs".to_owned(),
                identity: "0b5e".to_owned(),
                parked_at: "2024-08-01 00:00:00".to_owned(),
                age_seconds: 90,
                reason: "waiting for encounter 5a1c0d2e..., not yet received from site kisumu-01"
                    .to_owned(),
                recorded_reason: String::new(),
                waits: vec![AwaitedRow {
                    table: "encounter".to_owned(),
                    identity: "5a1c0d2e-0000-4000-8000-000000000001".to_owned(),
                    state: AwaitedState::NotReceived {
                        site_id: "kisumu-01".to_owned(),
                    },
                }],
            },
            change,
        }
    }

    #[test]
    fn show_names_columns_but_prints_values_only_when_asked() {
        let detail = detail();
        let text = show_text(&detail, false);
        assert!(
            text.contains("value_text") && text.contains("concept_id"),
            "{text}"
        );
        assert!(
            !text.contains("HIV positive"),
            "values are health data:\n{text}"
        );
        assert!(!text.contains("5089"), "{text}");
        assert!(
            text.contains("encounter[5a1c0d2e-0000-4000-8000-000000000001]: not yet received from site kisumu-01"),
            "{text}"
        );
        let text = show_text(&detail, true);
        assert!(text.contains("value_text = \"HIV positive\""), "{text}");
    }
}
