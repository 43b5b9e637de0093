//! `tributary import`: places the batches of carried files into HQ's inbox and, unless told
//! not to, runs the applier once over it (the same code as `tributary apply --once`).
//!
//! Invariants: nothing here decides what is applied. A batch is placed under its normal name
//! with the inbox's own durable stage-and-commit, and the applier then authenticates, orders,
//! deduplicates, holds gaps and rejects exactly as for batches that came by any other link;
//! so files may be imported in any order and any number of times. Import only leaves out what
//! cannot help: a batch damaged in the file (reported with its sequence), one already waiting
//! in the inbox, one HQ has already applied, or one of an epoch older than HQ's. A damaged
//! record never stops the other records of its file, and a damaged file never stops the
//! other files.

use anyhow::{Context, Result};
use clap::Args;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tributary_apply::ApplySettings;
use tributary_batch::Keyring;
use tributary_transport::{CarriedFileReader, CarriedItem, DirectoryInbox, DirectoryOutbox};

use crate::config::{Config, InFile};
use crate::progress::{Progress, human_bytes};

/// Exit code when some batch or file could not be imported (the rest was).
pub const EXIT_INCOMPLETE: u8 = 4;

/// `tributary import` options.
#[derive(Debug, Args)]
#[command(
    after_help = "Files may be imported in any order and any number of times: a batch \
    already applied or already waiting is skipped, and a site whose earlier batches have not \
    arrived yet is held at the gap (shown here and by `tributary status`) until the file \
    holding them is imported.\n\n\
    A batch damaged in the file is reported with its sequence and left out; the others are \
    imported. Exit code 4 when anything could not be imported; export those sequences again."
)]
pub struct ImportArgs {
    /// Configuration file with [hq] and [transport] sections.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Only place the batches in the inbox; a running `tributary apply` (or a later
    /// `apply --once`) applies them.
    #[arg(long)]
    pub no_apply: bool,
    /// Carried files written by `tributary export`.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// What import did with the batches it read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportTally {
    /// Placed into the inbox.
    pub placed: u64,
    /// Already waiting in the inbox.
    pub already_waiting: u64,
    /// Already applied at HQ.
    pub already_applied: u64,
    /// Of an epoch older than the one HQ applies for the site.
    pub older_epoch: u64,
    /// Damaged in the file (listed in `problems`).
    pub damaged: u64,
    /// Bytes of the batches placed.
    pub bytes_placed: u64,
    /// One line per damaged batch or unreadable (part of a) file.
    pub problems: Vec<String>,
    /// Positions placed, per site: (epoch, sequence).
    pub placed_positions: BTreeMap<String, BTreeSet<(u64, u64)>>,
}

/// How far HQ has applied each site: (epoch, last sequence).
pub type Progresses = BTreeMap<String, (u64, u64)>;

/// Runs `tributary import` and prints what it did.
pub async fn run(args: &ImportArgs) -> Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let settings = config.apply_settings().in_file(&config)?;
    // Connecting first creates HQ's bookkeeping tables, so a new HQ's progress reads as empty.
    let applier = match args.no_apply {
        true => None,
        false => Some(tributary_apply::Applier::connect(settings.clone()).await?),
    };
    let progress = hq_progress(&settings).await;
    let inbox = DirectoryInbox::open(&settings.inbox_dir)?;
    // Whole seconds: some filesystems keep coarse modification times.
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(UNIX_EPOCH, |d| {
            UNIX_EPOCH + Duration::from_secs(d.as_secs())
        });
    let mut tally = ImportTally::default();
    for file in &args.files {
        import_file(&inbox, &settings.keyring, file, &progress, &mut tally)?;
    }
    for problem in &tally.problems {
        println!("{problem}");
    }
    println!(
        "imported {} batches ({}) into the inbox; skipped {} already applied, {} already \
         waiting, {} of an older epoch; {} damaged",
        tally.placed,
        human_bytes(tally.bytes_placed),
        tally.already_applied,
        tally.already_waiting,
        tally.older_epoch,
        tally.damaged
    );
    if let Some(mut applier) = applier {
        // The same pass as `tributary apply --once`.
        crate::report::apply_once(&mut applier).await?;
        if let Some(refresher) = &settings.refresh {
            refresher.close(tributary_apply::REFRESH_CLOSE_WITHIN).await;
        }
        report_rejections(&inbox, &tally, started)?;
    } else {
        println!("not applied (--no-apply): `tributary apply` applies them");
    }
    if tally.problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(EXIT_INCOMPLETE))
    }
}

/// Reads one carried file and places its usable batches. A file that cannot be read at all,
/// or only in part, is recorded in `tally.problems`; only an inbox failure is an error.
pub fn import_file(
    inbox: &DirectoryInbox,
    keyring: &Keyring,
    file: &Path,
    progress: &Progresses,
    tally: &mut ImportTally,
) -> Result<()> {
    let reader = match CarriedFileReader::open(file) {
        Ok(reader) => reader,
        Err(e) => {
            tally
                .problems
                .push(format!("not imported: {}: {e}", file.display()));
            return Ok(());
        }
    };
    let header = reader.header().clone();
    let site = header.site_id.clone();
    if !keyring.knows_site(&site) {
        tally.problems.push(format!(
            "not imported: {} holds batches of site {site}, which has no key in hq.key_dir; \
             copy the site's key file there and import the file again",
            file.display()
        ));
        return Ok(());
    }
    let applied = progress.get(&site).copied();
    let mut waiting: BTreeSet<(u64, u64)> = inbox
        .pending(&site)?
        .into_iter()
        .map(|e| (e.epoch, e.sequence))
        .collect();
    let outbox = DirectoryOutbox::open(inbox.root(), &site)?;
    let mut shown = Progress::on_terminal();
    for (i, item) in reader.enumerate() {
        let (sequence, bytes) = match item {
            Ok(CarriedItem::Batch { sequence, bytes }) => (sequence, bytes),
            Ok(CarriedItem::Damaged { sequence, damage }) => {
                tally.damaged += 1;
                tally.problems.push(format!(
                    "damaged: {} batch {sequence} (site {site} epoch {}): {damage}; not imported",
                    file.display(),
                    header.epoch
                ));
                continue;
            }
            Err(e) => {
                tally.problems.push(format!("incomplete: {e}"));
                break;
            }
        };
        let position = (header.epoch, sequence);
        match applied {
            Some((epoch, last)) if epoch == header.epoch && sequence <= last => {
                tally.already_applied += 1;
                continue;
            }
            Some((epoch, _)) if epoch > header.epoch => {
                tally.older_epoch += 1;
                continue;
            }
            _ => {}
        }
        if waiting.contains(&position) {
            tally.already_waiting += 1;
            continue;
        }
        let staged = outbox
            .stage(header.epoch, sequence, &bytes)
            .with_context(|| format!("placing batch {sequence} of site {site} in the inbox"))?;
        outbox
            .commit(&staged)
            .with_context(|| format!("placing batch {sequence} of site {site} in the inbox"))?;
        waiting.insert(position);
        tally.placed += 1;
        tally.bytes_placed += bytes.len() as u64;
        tally
            .placed_positions
            .entry(site.clone())
            .or_default()
            .insert(position);
        shown.show(|| {
            format!(
                "importing {}: batch {} of {} (sequence {sequence})",
                file.display(),
                i + 1,
                header.batch_count
            )
        });
    }
    Ok(())
}

/// How far HQ has applied each site, from its bookkeeping. An HQ that cannot be read yet (no
/// applier ever ran) skips nothing: the applier drops duplicates itself.
async fn hq_progress(settings: &ApplySettings) -> Progresses {
    let read = async {
        let mut conn = mysql_async::Conn::new(settings.hq.clone()).await?;
        let statuses = tributary_apply::site_statuses(&mut conn).await;
        let _ = conn.disconnect().await;
        statuses
    };
    match read.await {
        Ok(statuses) => statuses
            .into_iter()
            .map(|s| (s.site_id, (s.epoch, s.last_sequence)))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read HQ's progress; every intact batch is placed and the applier skips those already applied");
            Progresses::new()
        }
    }
}

/// Names each batch this import placed that the applier then rejected, with its reason. A
/// batch keeps the modification time of its placing, so one rejected at the same position by
/// an earlier import (older than `started`) is not named again.
fn report_rejections(
    inbox: &DirectoryInbox,
    tally: &ImportTally,
    started: SystemTime,
) -> Result<()> {
    for (site, placed) in &tally.placed_positions {
        for (entry, reason) in inbox.rejected(site)? {
            let placed_now = std::fs::metadata(&entry.path)
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified >= started);
            if placed_now && placed.contains(&(entry.epoch, entry.sequence)) {
                println!(
                    "rejected: site {site} epoch {} batch {}: {reason}",
                    entry.epoch, entry.sequence
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_batch::{BatchHeader, SiteKey, seal};
    use tributary_transport::CarriedFileWriter;

    struct Fixture {
        dir: tempfile::TempDir,
        key: SiteKey,
        keyring: Keyring,
        inbox: DirectoryInbox,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let key = SiteKey::generate("clinic-a").unwrap();
        let mut keyring = Keyring::new();
        keyring.insert(key.clone()).unwrap();
        let inbox = DirectoryInbox::open(&dir.path().join("inbox")).unwrap();
        Fixture {
            dir,
            key,
            keyring,
            inbox,
        }
    }

    /// A carried file of clinic-a epoch 5 with the given sequences.
    fn carried(f: &Fixture, name: &str, sequences: &[u64]) -> PathBuf {
        let path = f.dir.path().join(name);
        let mut writer = CarriedFileWriter::create(&path, "clinic-a", 5).unwrap();
        for &sequence in sequences {
            let header = BatchHeader::new("clinic-a", f.key.key_id(), 5, sequence, 0);
            let sealed = seal(&header, b"{\"transactions\":[]}", &f.key).unwrap();
            writer.append(sequence, &sealed).unwrap();
        }
        writer.finish().unwrap();
        path
    }

    fn waiting(f: &Fixture) -> Vec<u64> {
        f.inbox
            .pending("clinic-a")
            .unwrap()
            .iter()
            .map(|e| e.sequence)
            .collect()
    }

    #[test]
    fn importing_twice_places_each_batch_once() {
        let f = fixture();
        let file = carried(&f, "a.carried", &[3, 4, 5]);
        let mut first = ImportTally::default();
        import_file(&f.inbox, &f.keyring, &file, &Progresses::new(), &mut first).unwrap();
        assert_eq!((first.placed, first.problems.len()), (3, 0));
        assert_eq!(waiting(&f), [3, 4, 5]);
        let mut again = ImportTally::default();
        import_file(&f.inbox, &f.keyring, &file, &Progresses::new(), &mut again).unwrap();
        assert_eq!((again.placed, again.already_waiting), (0, 3));
        assert_eq!(waiting(&f), [3, 4, 5]);
    }

    #[test]
    fn batches_hq_applied_or_superseded_are_skipped() {
        let f = fixture();
        let file = carried(&f, "a.carried", &[1, 2, 3]);
        let mut tally = ImportTally::default();
        let applied = Progresses::from([("clinic-a".to_owned(), (5, 2))]);
        import_file(&f.inbox, &f.keyring, &file, &applied, &mut tally).unwrap();
        assert_eq!((tally.placed, tally.already_applied), (1, 2));
        assert_eq!(waiting(&f), [3]);
        let newer_epoch = Progresses::from([("clinic-a".to_owned(), (6, 1))]);
        let mut tally = ImportTally::default();
        import_file(&f.inbox, &f.keyring, &file, &newer_epoch, &mut tally).unwrap();
        assert_eq!((tally.placed, tally.older_epoch), (0, 3));
    }

    #[test]
    fn damage_and_unknown_sites_are_reported_and_the_rest_is_placed() {
        let f = fixture();
        let file = carried(&f, "a.carried", &[1, 2, 3]);
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 10;
        bytes[last] ^= 0x01;
        std::fs::write(&file, &bytes).unwrap();
        let mut tally = ImportTally::default();
        import_file(&f.inbox, &f.keyring, &file, &Progresses::new(), &mut tally).unwrap();
        assert_eq!((tally.placed, tally.damaged), (2, 1));
        assert!(
            tally.problems[0].contains("batch 3"),
            "{:?}",
            tally.problems
        );
        assert_eq!(waiting(&f), [1, 2]);

        let mut tally = ImportTally::default();
        let not_carried = f.dir.path().join("notes.txt");
        std::fs::write(&not_carried, "hello").unwrap();
        import_file(
            &f.inbox,
            &Keyring::new(),
            &file,
            &Progresses::new(),
            &mut tally,
        )
        .unwrap();
        import_file(
            &f.inbox,
            &f.keyring,
            &not_carried,
            &Progresses::new(),
            &mut tally,
        )
        .unwrap();
        assert_eq!(tally.placed, 0);
        assert!(tally.problems[0].contains("no key"), "{:?}", tally.problems);
        assert!(
            tally.problems[1].contains("not a tributary carried file"),
            "{:?}",
            tally.problems
        );
    }
}
