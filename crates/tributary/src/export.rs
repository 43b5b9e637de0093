//! `tributary export`: copies a site's committed batches (all of one epoch, or a sequence
//! range of it) from the site's outbox into one carried file a person takes to HQ.
//!
//! Invariant: export only reads the outbox. The carried copy may be lost or damaged on the
//! way, so every batch stays where capture put it, and a later link (directory, Kafka) or
//! another export still carries it; HQ's exactly-once bookkeeping makes the second copy
//! harmless.

use anyhow::{Context, Result, bail};
use clap::Args;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use tributary_transport::{
    CarriedFileSummary, CarriedFileWriter, Spool, SpooledBatch, TransportError,
};

use crate::config::Config;
use crate::progress::{Progress, human_bytes};

/// `tributary export` options.
#[derive(Debug, Args)]
#[command(
    after_help = "The batches stay in the outbox: the carried copy may be lost, and \
    a later link or another export will still deliver them (HQ applies each batch once, \
    however many copies arrive). Import the file at HQ with `tributary import FILE`; files \
    may be imported in any order and any number of times.\n\n\
    One file holds one epoch; when the outbox holds several, the oldest is exported and the \
    others are named, to export with --epoch."
)]
pub struct ExportArgs {
    /// Configuration file with [site] and [transport] sections.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The carried file to write; it appears only when complete (an existing file is replaced).
    #[arg(long, short)]
    pub output: PathBuf,
    /// First sequence to export (default: the oldest committed batch).
    #[arg(long)]
    pub from: Option<u64>,
    /// Last sequence to export (default: the newest committed batch).
    #[arg(long)]
    pub to: Option<u64>,
    /// The epoch to export (default: the oldest one with batches in the range).
    #[arg(long)]
    pub epoch: Option<u64>,
}

/// What an export wrote, and what it left for another file.
#[derive(Debug)]
pub struct ExportReport {
    pub summary: CarriedFileSummary,
    /// Batches listed but gone before they were read (another transport shipped them).
    pub vanished: Vec<u64>,
    /// Other epochs with batches in the range, and how many: they need their own file.
    pub other_epochs: BTreeMap<u64, usize>,
}

/// Runs `tributary export` and prints its summary.
pub fn run(args: &ExportArgs) -> Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let report = export(&config, args)?;
    let header = &report.summary.header;
    println!(
        "exported {} batches ({}) of site {} epoch {}, sequences {}..={}, to {}",
        header.batch_count,
        human_bytes(report.summary.bytes),
        header.site_id,
        header.epoch,
        header.first_sequence,
        header.last_sequence,
        report.summary.path.display()
    );
    if !report.vanished.is_empty() {
        println!(
            "{} batches left the outbox while exporting (shipped by another transport): {:?}",
            report.vanished.len(),
            report.vanished
        );
    }
    for (epoch, count) in &report.other_epochs {
        println!(
            "epoch {epoch} also has {count} batches in the range: export them with --epoch {epoch}"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Batches listed from the spool at a time.
const PAGE: usize = 1024;

/// Writes the carried file `args` asks for.
pub fn export(config: &Config, args: &ExportArgs) -> Result<ExportReport> {
    let site_id = config.site_id()?;
    let outbox_dir = config.transport_directory()?;
    if let (Some(from), Some(to)) = (args.from, args.to)
        && from > to
    {
        bail!("--from {from} is after --to {to}");
    }
    if !outbox_dir.is_dir() {
        bail!(
            "the outbox {} does not exist; has capture (or seed) run with this configuration?",
            outbox_dir.display()
        );
    }
    let spool = config.open_spool()?;
    let in_range = |b: &SpooledBatch| {
        args.from.is_none_or(|from| b.sequence >= from) && args.to.is_none_or(|to| b.sequence <= to)
    };
    let mut per_epoch: BTreeMap<u64, usize> = BTreeMap::new();
    each_batch(&*spool, |batch| {
        if in_range(&batch) {
            *per_epoch.entry(batch.epoch).or_default() += 1;
        }
        Ok(true)
    })?;
    let Some(epoch) = args.epoch.or_else(|| per_epoch.keys().next().copied()) else {
        bail!(
            "the outbox {} holds no committed batch of site {site_id}{}",
            outbox_dir.join(&site_id).display(),
            range_text(args)
        );
    };
    let Some(chosen) = per_epoch.remove(&epoch) else {
        bail!(
            "the outbox holds no committed batch of site {site_id} epoch {epoch}{}; epochs there: {:?}",
            range_text(args),
            per_epoch.keys().collect::<Vec<_>>()
        );
    };

    let mut writer = CarriedFileWriter::create(&args.output, &site_id, epoch)?;
    let mut progress = Progress::on_terminal();
    let mut vanished = Vec::new();
    let mut seen = 0;
    each_batch(&*spool, |batch| {
        if batch.epoch > epoch {
            return Ok(false);
        }
        if batch.epoch < epoch || !in_range(&batch) {
            return Ok(true);
        }
        seen += 1;
        match spool.read(&batch) {
            Ok(bytes) => writer.append(batch.sequence, &bytes)?,
            Err(TransportError::NotInSpool { .. }) => vanished.push(batch.sequence),
            Err(e) => return Err(e).context("reading the outbox"),
        }
        progress.show(|| {
            format!(
                "exporting site {site_id} epoch {epoch}: batch {seen} of {chosen} ({})",
                human_bytes(writer.bytes_written())
            )
        });
        Ok(true)
    })?;
    progress.clear();
    if writer.batch_count() == 0 {
        bail!("every batch in the range left the outbox while exporting; nothing to carry");
    }
    let summary = writer.finish()?;
    Ok(ExportReport {
        summary,
        vanished,
        other_epochs: per_epoch,
    })
}

/// Calls `visit` with every committed batch of the spool in stream order, a page at a time
/// (memory does not grow with the spool), until it returns `false`.
fn each_batch(
    spool: &dyn Spool,
    mut visit: impl FnMut(SpooledBatch) -> Result<bool>,
) -> Result<()> {
    let mut after = None;
    loop {
        let page = spool
            .committed_after(after, PAGE)
            .context("listing the outbox")?;
        let Some(&last) = page.last() else {
            return Ok(());
        };
        for batch in page {
            if !visit(batch)? {
                return Ok(());
            }
        }
        after = Some(last);
    }
}

fn range_text(args: &ExportArgs) -> String {
    match (args.from, args.to) {
        (None, None) => String::new(),
        (from, to) => format!(
            " in sequences {}..={}",
            from.map_or("first".into(), |f| f.to_string()),
            to.map_or("last".into(), |t| t.to_string())
        ),
    }
}
