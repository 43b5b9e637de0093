//! Where a seed starts: a new stream, the continuation of an interrupted seed, or a re-send
//! that leaves the stream where it is. Decided from the checkpoint on disk, the options and
//! the snapshot just opened, with no I/O, so every case is unit-tested.
//!
//! An interrupted seed goes on from its last durable chunk, reading the remaining rows from a
//! new snapshot taken later than the first. The stream of a new site still starts at the first
//! snapshot's position: the changes between the two snapshots are then replayed over rows that
//! already reflect them. Row images are whole and applied as upserts by identity, so the
//! replay passes through older states and ends at the site's (deletes of rows HQ never got are
//! no-ops). That holds only while the schema the stream decodes with is the one the rows were
//! read with: when the catalog changed between the two snapshots, the seed starts over.

use crate::checkpoint::{Checkpoint, SeedProgress};
use crate::error::CaptureError;
use crate::position::BinlogFilePosition;
use tributary_schema::Catalog;

/// What `tributary seed` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct SeedOptions {
    /// Only these tables (every synced table when empty).
    pub tables: Vec<String>,
    /// Starts the site's stream again at the snapshot, in a new epoch: for a site whose
    /// checkpoint points into a purged binlog, or whose spool was lost. HQ then takes the new
    /// epoch's batches and refuses what is left of the old one.
    pub restart_stream: bool,
}

/// The snapshot a seed reads from, as far as the plan needs it.
pub(crate) struct SnapshotPoint<'a> {
    pub position: &'a str,
    pub binlog: &'a BinlogFilePosition,
    pub catalog: &'a Catalog,
}

/// How the seed begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SeedStart {
    pub checkpoint: Checkpoint,
    pub progress: SeedProgress,
    /// The stream starts at this seed's snapshot; the catalog must be saved as the schema
    /// version the checkpoint names, and `seeding` holds capture back until the seed is done.
    pub new_stream: bool,
    /// An interrupted seed goes on where it stopped.
    pub resumed: bool,
}

/// Decides where the seed starts. `saved_catalog` is the schema version the checkpoint names,
/// when it has one. `ordered_tables` is the seed's table list in dependency order for a seed
/// that does not resume.
pub(crate) fn plan(
    site_id: &str,
    existing: Option<Checkpoint>,
    options: &SeedOptions,
    snapshot: &SnapshotPoint<'_>,
    saved_catalog: Option<&Catalog>,
    ordered_tables: Vec<String>,
) -> Result<SeedStart, CaptureError> {
    let fresh = |tables: Vec<String>| SeedProgress {
        tables,
        table_index: 0,
        after_key: None,
        rows: 0,
    };
    if let Some(c) = existing.as_ref().filter(|c| c.site_id != site_id) {
        return Err(CaptureError::State {
            path: format!("site '{site_id}'"),
            detail: format!(
                "the capture state directory belongs to site '{}'; use another state directory",
                c.site_id
            ),
        });
    }
    let existing = match existing {
        Some(existing) if !options.restart_stream => existing,
        previous => {
            return Ok(SeedStart {
                checkpoint: new_stream_checkpoint(site_id, previous.as_ref(), snapshot),
                progress: fresh(ordered_tables),
                new_stream: true,
                resumed: false,
            });
        }
    };
    let interrupted = existing.seed.clone();
    if let Some(progress) = &interrupted
        && !options.tables.is_empty()
        && !same_tables(&options.tables, &progress.tables)
    {
        return Err(CaptureError::State {
            path: format!("site '{site_id}'"),
            detail: format!(
                "an interrupted seed of {} is not finished; run 'tributary seed' with the same \
                 tables (or none) to finish it first",
                describe_tables(&progress.tables)
            ),
        });
    }
    if existing.seeding {
        // The first seed of this site was interrupted: its stream starts at the first
        // snapshot, unless the schema moved since (then everything is read again, here).
        let same_schema = saved_catalog.is_some_and(|saved| {
            serde_json::to_string(saved).ok() == serde_json::to_string(snapshot.catalog).ok()
        });
        if let Some(progress) = interrupted.filter(|_| same_schema) {
            return Ok(SeedStart {
                checkpoint: existing,
                progress,
                new_stream: false,
                resumed: true,
            });
        }
        let mut checkpoint = existing;
        checkpoint.gtid_position = snapshot.position.to_owned();
        checkpoint.binlog_position = Some(snapshot.binlog.clone());
        checkpoint.schema_version = Some(next_schema_version(&checkpoint));
        checkpoint.seed = None;
        return Ok(SeedStart {
            checkpoint,
            progress: fresh(ordered_tables),
            new_stream: true,
            resumed: false,
        });
    }
    // An existing site: a re-send of the chosen tables; the stream stays where it is.
    let (progress, resumed) = match interrupted {
        Some(progress) => (progress, true),
        None => (fresh(ordered_tables), false),
    };
    Ok(SeedStart {
        checkpoint: existing,
        progress,
        new_stream: false,
        resumed,
    })
}

/// The checkpoint of a stream that starts at the snapshot; after `previous` (a restarted
/// stream), in a later epoch with the next schema version.
fn new_stream_checkpoint(
    site_id: &str,
    previous: Option<&Checkpoint>,
    snapshot: &SnapshotPoint<'_>,
) -> Checkpoint {
    let mut checkpoint = Checkpoint::new(site_id, snapshot.position.to_owned());
    checkpoint.binlog_position = Some(snapshot.binlog.clone());
    checkpoint.seeding = true;
    checkpoint.schema_version = Some(previous.map_or(1, next_schema_version));
    if let Some(previous) = previous {
        checkpoint.epoch = checkpoint.epoch.max(previous.epoch + 1);
    }
    checkpoint
}

/// The schema-history version after the one `checkpoint` names.
fn next_schema_version(checkpoint: &Checkpoint) -> u64 {
    checkpoint.schema_version.map_or(1, |v| v + 1)
}

fn same_tables(asked: &[String], recorded: &[String]) -> bool {
    let mut asked: Vec<&str> = asked.iter().map(String::as_str).collect();
    let mut recorded: Vec<&str> = recorded.iter().map(String::as_str).collect();
    asked.sort_unstable();
    asked.dedup();
    recorded.sort_unstable();
    asked == recorded
}

fn describe_tables(tables: &[String]) -> String {
    match tables.len() {
        0..=4 => format!("table(s) {}", tables.join(", ")),
        n => format!("{n} tables"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(database: &str) -> Catalog {
        Catalog {
            database: database.into(),
            ..Catalog::default()
        }
    }

    fn binlog(offset: u64) -> BinlogFilePosition {
        BinlogFilePosition {
            file: "mariadb-bin.000001".into(),
            offset,
        }
    }

    fn tables() -> Vec<String> {
        vec!["person".into(), "patient".into(), "obs".into()]
    }

    fn plan_at(
        existing: Option<Checkpoint>,
        options: &SeedOptions,
        saved: Option<&Catalog>,
        now: &Catalog,
    ) -> Result<SeedStart, CaptureError> {
        let at = binlog(900);
        let snapshot = SnapshotPoint {
            position: "0-1-90",
            binlog: &at,
            catalog: now,
        };
        plan("clinic-a", existing, options, &snapshot, saved, tables())
    }

    /// A first seed interrupted after `rows` rows, its first snapshot at 0-1-50.
    fn interrupted_first_seed(rows: u64) -> Checkpoint {
        let mut c = Checkpoint::new("clinic-a", "0-1-50".into());
        c.binlog_position = Some(binlog(500));
        c.seeding = true;
        c.schema_version = Some(1);
        c.next_sequence = 7;
        c.seed = Some(SeedProgress {
            tables: tables(),
            table_index: 2,
            after_key: Some(4_000),
            rows,
        });
        c
    }

    #[test]
    fn a_new_site_starts_its_stream_at_the_snapshot() {
        let start = plan_at(None, &SeedOptions::default(), None, &catalog("a")).unwrap();
        assert!(start.new_stream && !start.resumed);
        assert!(start.checkpoint.seeding);
        assert_eq!(start.checkpoint.gtid_position, "0-1-90");
        assert_eq!(start.checkpoint.binlog_position, Some(binlog(900)));
        assert_eq!(start.checkpoint.schema_version, Some(1));
        assert_eq!(start.progress.tables, tables());
        assert_eq!((start.progress.table_index, start.progress.rows), (0, 0));
    }

    #[test]
    fn an_interrupted_first_seed_goes_on_and_keeps_the_first_snapshot_position() {
        let now = catalog("a");
        let start = plan_at(
            Some(interrupted_first_seed(9_000)),
            &SeedOptions::default(),
            Some(&now),
            &now,
        )
        .unwrap();
        assert!(start.resumed && !start.new_stream);
        // The stream replays what changed between the two snapshots.
        assert_eq!(start.checkpoint.gtid_position, "0-1-50");
        assert_eq!(start.checkpoint.binlog_position, Some(binlog(500)));
        assert_eq!(start.checkpoint.next_sequence, 7);
        assert_eq!(start.progress.table_index, 2);
        assert_eq!(start.progress.after_key, Some(4_000));
        assert_eq!(start.progress.rows, 9_000);
    }

    #[test]
    fn an_interrupted_first_seed_starts_over_when_the_schema_changed() {
        let start = plan_at(
            Some(interrupted_first_seed(9_000)),
            &SeedOptions::default(),
            Some(&catalog("before")),
            &catalog("after"),
        )
        .unwrap();
        assert!(start.new_stream && !start.resumed);
        assert_eq!(start.checkpoint.gtid_position, "0-1-90");
        assert_eq!(start.checkpoint.schema_version, Some(2));
        assert_eq!(start.checkpoint.seed, None);
        assert_eq!(start.progress.table_index, 0);
        // Same epoch and sequence: what was sent stays valid, and is simply sent again.
        assert_eq!(start.checkpoint.next_sequence, 7);
    }

    #[test]
    fn a_resend_leaves_the_stream_where_it_is_and_an_interrupted_one_goes_on() {
        let mut streaming = Checkpoint::new("clinic-a", "0-1-70".into());
        streaming.next_sequence = 40;
        let options = SeedOptions {
            tables: vec!["obs".into()],
            ..SeedOptions::default()
        };
        let start = plan_at(Some(streaming.clone()), &options, None, &catalog("a")).unwrap();
        assert!(!start.new_stream && !start.resumed);
        assert_eq!(start.checkpoint, streaming);

        streaming.seed = Some(SeedProgress {
            tables: vec!["obs".into()],
            table_index: 0,
            after_key: Some(10),
            rows: 10,
        });
        let start = plan_at(Some(streaming.clone()), &options, None, &catalog("a")).unwrap();
        assert!(start.resumed);
        assert_eq!(start.progress.after_key, Some(10));
        let other = SeedOptions {
            tables: vec!["person".into()],
            ..SeedOptions::default()
        };
        let err = plan_at(Some(streaming), &other, None, &catalog("a")).unwrap_err();
        assert!(err.to_string().contains("table(s) obs"), "{err}");
    }

    #[test]
    fn restarting_the_stream_opens_a_later_epoch_from_sequence_one() {
        let mut purged = Checkpoint::new("clinic-a", "0-1-70".into());
        purged.epoch = u64::MAX / 2;
        purged.next_sequence = 40;
        purged.schema_version = Some(3);
        let options = SeedOptions {
            restart_stream: true,
            ..SeedOptions::default()
        };
        let start = plan_at(Some(purged), &options, None, &catalog("a")).unwrap();
        assert!(start.new_stream && start.checkpoint.seeding);
        assert_eq!(start.checkpoint.epoch, u64::MAX / 2 + 1);
        assert_eq!(start.checkpoint.next_sequence, 1);
        assert_eq!(start.checkpoint.gtid_position, "0-1-90");
        assert_eq!(start.checkpoint.schema_version, Some(4));
    }

    #[test]
    fn another_sites_state_is_refused() {
        let other = Checkpoint::new("clinic-b", "0-1-70".into());
        let err = plan_at(Some(other), &SeedOptions::default(), None, &catalog("a")).unwrap_err();
        assert!(
            err.to_string().contains("belongs to site 'clinic-b'"),
            "{err}"
        );
    }
}
