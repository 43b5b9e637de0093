//! `tributary conflicts list|show|resolve`: the conflict queue at HQ, by hand.
//!
//! A conflict is a site's change to a row that was edited at HQ, or written from another site,
//! since that site last wrote it. Tables whose `[hq.conflicts]` policy is `queue` (the default)
//! keep HQ's row and hold both versions here until a person decides. Both versions are health
//! data: this command prints tables, identities, reasons and column names, and values only
//! when `show --values` asks for them.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use tributary_apply::{
    Choice, ConflictDetail, ConflictEntry, ConflictFilter, ConflictQueue, ResolveOutcome,
    short_identity,
};

use crate::config::{Config, InFile};
use crate::parked::human_age;

/// Operate HQ's conflict queue.
#[derive(Debug, Subcommand)]
#[command(after_help = "\
A conflict is met when a site changes a row that changed at HQ since that site last wrote it: \
edited at HQ, or written from another site (a transferred patient, shared metadata). Under \
the default policy HQ's row stays as it is, both versions wait here, and later changes to the \
same row queue behind the conflict. `[hq.conflicts]` can settle tables by policy instead \
(site-wins, hq-wins, newest-date-changed); those conflicts are recorded resolved.

Typical work:
  tributary conflicts list -c hq.toml                        what waits
  tributary conflicts show -c hq.toml 4                      reason, the columns that differ
  tributary conflicts show -c hq.toml 4 --values             both versions (health data)
  tributary conflicts resolve -c hq.toml 4 --take-site       the site's version wins
  tributary conflicts resolve -c hq.toml 4 --keep-hq         HQ's row stays
  tributary conflicts resolve -c hq.toml 4 --merge given_name,family_name

Every resolution is recorded with who (--by, default the login name), when and an optional \
--note; resolved conflicts stay listed by `list --all`.")]
pub enum ConflictsCommand {
    /// List conflicts (open ones unless --all), oldest first.
    List(ListArgs),
    /// Show one conflict: site, batch, table, identity, reason, and the NAMES of the columns
    /// that differ (both versions' values only with --values).
    Show(ShowArgs),
    /// Settle an open conflict: keep HQ's row, take the site's, or merge chosen columns.
    /// Changes to the row that queued behind it are applied right after.
    Resolve(ResolveArgs),
}

/// `tributary conflicts list` options.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Configuration file with an [hq] section.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Only conflicts of changes from this site.
    #[arg(long)]
    pub site: Option<String>,
    /// Only conflicts on this table.
    #[arg(long)]
    pub table: Option<String>,
    /// Resolved conflicts too (by a person or by a table's policy).
    #[arg(long)]
    pub all: bool,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Print JSON (one array) instead of a table; never column values.
    #[arg(long)]
    pub json: bool,
}

/// `tributary conflicts show` options.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Configuration file with an [hq] section.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The conflict's id (first column of `tributary conflicts list`).
    pub id: u64,
    /// Also print both versions' values. They are patient health data: use only when you need
    /// them, and do not paste the output where it does not belong.
    #[arg(long)]
    pub values: bool,
}

/// `tributary conflicts resolve` options.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("choice").required(true).args(["keep_hq", "take_site", "merge"]))]
pub struct ResolveArgs {
    /// Configuration file with an [hq] section.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The conflict to settle.
    pub id: u64,
    /// HQ's row stays as it is; the site's change is not written.
    #[arg(long)]
    pub keep_hq: bool,
    /// The site's version is written over HQ's row (or the row deleted, for a delete).
    #[arg(long)]
    pub take_site: bool,
    /// Take these columns from the site's version and keep the others as HQ has them.
    #[arg(long, value_delimiter = ',', value_name = "COLUMNS")]
    pub merge: Vec<String>,
    /// Who decides (recorded with the resolution); default the login name.
    #[arg(long)]
    pub by: Option<String>,
    /// Why (recorded with the resolution).
    #[arg(long)]
    pub note: Option<String>,
}

/// Runs a `tributary conflicts` command.
pub async fn run(command: &ConflictsCommand) -> Result<ExitCode> {
    match command {
        ConflictsCommand::List(args) => {
            let mut queue = connect(&args.config).await?;
            let filter = ConflictFilter {
                site: args.site.clone(),
                table: args.table.clone(),
                include_resolved: args.all,
                limit: args.limit,
            };
            let entries = queue.list(&filter).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                print!("{}", list_text(&entries, args.all));
            }
        }
        ConflictsCommand::Show(args) => {
            let mut queue = connect(&args.config).await?;
            let Some(detail) = queue.show(args.id).await? else {
                bail!(
                    "there is no conflict {}; `tributary conflicts list --all` lists them",
                    args.id
                );
            };
            print!("{}", show_text(&detail, args.values));
        }
        ConflictsCommand::Resolve(args) => {
            let choice = if args.keep_hq {
                Choice::KeepHq
            } else if args.take_site {
                Choice::TakeSite
            } else {
                Choice::Merge(args.merge.clone())
            };
            let by = match &args.by {
                Some(by) => by.clone(),
                None => login_name()
                    .context("no login name in USER or LOGNAME: say who resolves with --by NAME")?,
            };
            let mut queue = connect(&args.config).await?;
            match queue
                .resolve(args.id, &choice, &by, args.note.as_deref())
                .await?
            {
                ResolveOutcome::Resolved { released } => println!(
                    "conflict {} resolved ({}) by {by}; {released} changes that queued behind it \
                     were applied",
                    args.id,
                    resolution_name(&choice)
                ),
                ResolveOutcome::Unknown => bail!(
                    "there is no conflict {}; `tributary conflicts list --all` lists them",
                    args.id
                ),
                ResolveOutcome::AlreadyResolved { by } => bail!(
                    "conflict {} is already resolved (by {by}); `tributary conflicts show {}` \
                     says how",
                    args.id,
                    args.id
                ),
                ResolveOutcome::Refused(reason) => {
                    bail!("conflict {} was not resolved: {reason}", args.id)
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn connect(config: &std::path::Path) -> Result<ConflictQueue> {
    let config = Config::load(config)?;
    let (opts, database) = config.hq_database().in_file(&config)?;
    let queue = ConflictQueue::connect(
        opts,
        &database,
        &config.policy()?,
        config.conflict_policies()?,
    )
    .await
    .context("connecting to HQ")?;
    Ok(queue.recording_applied_changes(config.integration_enabled()))
}

fn login_name() -> Option<String> {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

fn resolution_name(choice: &Choice) -> &'static str {
    match choice {
        Choice::KeepHq => "HQ's row kept",
        Choice::TakeSite => "the site's version taken",
        Choice::Merge(_) => "merged",
    }
}

fn list_text(entries: &[ConflictEntry], all: bool) -> String {
    let mut out = String::new();
    if entries.is_empty() {
        out.push_str(if all {
            "no conflicts recorded\n"
        } else {
            "no open conflicts\n"
        });
        return out;
    }
    let _ = writeln!(
        out,
        "{:>6}  {:<16} {:<20} {:<10} {:<7} {:>8}  {:<9} differs in",
        "id", "site", "table", "identity", "change", "age", "status"
    );
    for e in entries {
        let status = match (&e.resolution, e.resolved_by.as_deref()) {
            (Some(how), Some(by)) => format!("{how} ({by})"),
            _ => e.status.clone(),
        };
        let _ = writeln!(
            out,
            "{:>6}  {:<16} {:<20} {:<10} {:<7} {:>8}  {:<9} {}",
            e.conflict_id,
            e.site_id,
            e.table,
            short_identity(&e.identity),
            e.op,
            human_age(e.age_seconds),
            status,
            e.differing_columns.join(", ")
        );
    }
    out
}

fn show_text(detail: &ConflictDetail, values: bool) -> String {
    let e = &detail.entry;
    let mut out = String::new();
    let _ = writeln!(out, "conflict {}", e.conflict_id);
    let _ = writeln!(
        out,
        "  site        {} (epoch {}, batch {})",
        e.site_id, e.epoch, e.sequence
    );
    let _ = writeln!(out, "  row         {} {}", e.table, e.identity);
    let _ = writeln!(out, "  change      {}", e.op);
    let _ = writeln!(
        out,
        "  detected    {} UTC ({} ago)",
        e.detected_at,
        human_age(e.age_seconds)
    );
    let _ = writeln!(out, "  reason      {}", e.reason);
    let _ = writeln!(out, "  policy      {}", e.policy);
    let _ = writeln!(out, "  differs in  {}", e.differing_columns.join(", "));
    match (&e.resolution, &e.resolved_by, &e.resolved_at) {
        (Some(how), Some(by), Some(at)) => {
            let _ = writeln!(out, "  resolved    {how} by {by} at {at} UTC");
            if !e.merged_columns.is_empty() {
                let _ = writeln!(out, "  merged      {}", e.merged_columns.join(", "));
            }
            if let Some(note) = &e.note {
                let _ = writeln!(out, "  note        {note}");
            }
        }
        _ => {
            let _ = writeln!(
                out,
                "  open        resolve with --keep-hq, --take-site or --merge COLUMNS"
            );
        }
    }
    if !values {
        out.push_str("  (values are shown with --values)\n");
        return out;
    }
    let _ = writeln!(out, "\n  {:<28} {:<32} site", "column", "HQ");
    let empty = Default::default();
    let hq = detail.hq_row.as_ref().unwrap_or(&empty);
    let site = detail.site_row.as_ref();
    for column in hq.keys() {
        let render = |v: Option<&Option<String>>| match v {
            Some(Some(text)) => text.clone(),
            Some(None) => "NULL".to_owned(),
            None => "-".to_owned(),
        };
        let marker = if e.differing_columns.contains(column) {
            "*"
        } else {
            " "
        };
        let site_value = match site {
            Some(site) => render(site.get(column)),
            None => "(deleted at the site)".to_owned(),
        };
        let _ = writeln!(
            out,
            "{marker} {column:<28} {:<32} {site_value}",
            render(hq.get(column))
        );
    }
    out
}
