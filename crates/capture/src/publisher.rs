//! The publisher: collects committed source transactions into batches, seals them, and
//! publishes each one with the checkpoint protocol of [`crate::checkpoint`].
//!
//! A batch closes at a transaction boundary when it holds `max_batch_rows` rows, or when the
//! capture loop asks for a flush (the stream went idle, or shutdown). Transactions with no
//! synced rows only move the position; when nothing is pending, that move is checkpointed on
//! its own.

use crate::captured::{CapturedTransaction, payload_json};
use crate::checkpoint::{Checkpoint, PartialTransaction, SeedProgress, StateDir};
use crate::error::CaptureError;
use crate::health::HealthReporter;
use crate::position::BinlogFilePosition;
use crate::sealer::{Sealer, Sink};
use crate::spool_budget::{SpoolBudget, SpoolLimits};
use tributary_batch::{BatchHeader, SiteKey};
use tributary_model::Origin;
use tributary_transport::Outbox;

pub struct Publisher {
    /// Seals and writes batches and checkpoints, in order, on its own thread.
    sealer: Sealer,
    key_id: String,
    /// The checkpoint as it stands once every job handed to the sealer has run.
    checkpoint: Checkpoint,
    origin: Origin,
    pending: Vec<CapturedTransaction>,
    pending_rows: usize,
    /// GTID position after the last transaction handed to this publisher.
    position: String,
    /// Binlog file/position after the same transaction (see [`Publisher::set_binlog_position`]).
    binlog_position: Option<BinlogFilePosition>,
    max_batch_rows: usize,
    /// Schema-history version valid after the last transaction handed over; saved with the
    /// next checkpoint, together with the position.
    schema_version: Option<u64>,
    /// How far into a chunked transaction the batches handed over reach.
    partial: Option<PartialTransaction>,
    /// How far the seed reaches with the transactions handed over (see [`Publisher::set_seed_progress`]).
    seed: Option<SeedProgress>,
    last_published: std::time::Instant,
    /// The site's health report, carried by a batch when due (capture only).
    health: Option<HealthReporter>,
    /// The newest source commit time handed over (a failure's report is stamped with it).
    last_source_commit: Option<u64>,
}

impl Publisher {
    /// Opens the publisher, finishing whatever a crash interrupted (see [`Publisher::resume`]).
    pub fn open(
        state: StateDir,
        outbox: Box<dyn Outbox>,
        key: SiteKey,
        checkpoint: Checkpoint,
        max_batch_rows: usize,
        limits: SpoolLimits,
    ) -> Result<Publisher, CaptureError> {
        let key_id = key.key_id().to_owned();
        let budget = SpoolBudget::open(outbox.dir(), limits)?;
        let mut publisher = Publisher {
            position: checkpoint.gtid_position.clone(),
            binlog_position: checkpoint.binlog_position.clone(),
            sealer: Sealer::start(Sink {
                state,
                outbox,
                key,
                budget,
            })?,
            key_id,
            checkpoint,
            origin: Origin::Binlog,
            pending: Vec::new(),
            pending_rows: 0,
            max_batch_rows: max_batch_rows.max(1),
            schema_version: None,
            partial: None,
            seed: None,
            last_published: std::time::Instant::now(),
            health: None,
            last_source_commit: None,
        };
        publisher.resume()?;
        Ok(publisher)
    }

    /// Brings the publisher back to exactly what the checkpoint says, before a (new) stream
    /// session reads from the checkpoint's position: staged batches the checkpoint already
    /// covers (sequence below `next_sequence`) are committed, any other staged batch is
    /// discarded (its events will be read again into the same sequence), and whatever was
    /// pending in memory is dropped (it will be read again too).
    pub fn resume(&mut self) -> Result<(), CaptureError> {
        // Batches already handed over are finished (or, after a failure, abandoned) first.
        self.sealer.restart();
        let known = self.checkpoint.clone();
        let (checkpoint, committed) = self.sealer.run(move |sink| {
            // What is on disk is the truth (a save whose directory fsync failed may have
            // landed).
            let checkpoint = sink.state.load()?.unwrap_or(known);
            let mut committed = false;
            for staged in sink.outbox.staged()? {
                if staged.epoch == checkpoint.epoch && staged.sequence < checkpoint.next_sequence {
                    sink.outbox.commit(&staged)?;
                    committed = true;
                    tracing::info!(
                        sequence = staged.sequence,
                        "committed a batch staged before an interruption"
                    );
                } else {
                    sink.outbox.discard(&staged)?;
                    tracing::info!(
                        sequence = staged.sequence,
                        "discarded a batch staged before an interruption; its events are read again"
                    );
                }
            }
            Ok((checkpoint, committed))
        })?;
        if committed {
            self.last_published = std::time::Instant::now();
        }
        self.checkpoint = checkpoint;
        self.pending.clear();
        self.pending_rows = 0;
        self.position = self.checkpoint.gtid_position.clone();
        self.binlog_position = self.checkpoint.binlog_position.clone();
        self.schema_version = self.checkpoint.schema_version;
        self.partial = self.checkpoint.partial.clone();
        self.seed = self.checkpoint.seed.clone();
        Ok(())
    }

    /// Waits until everything handed over is durable (batches published, checkpoint saved),
    /// reporting any failure.
    pub fn sync(&self) -> Result<(), CaptureError> {
        self.sealer.sync()
    }

    /// The schema version the next checkpoint records (set after a DDL statement).
    pub fn set_schema_version(&mut self, version: u64) {
        self.schema_version = Some(version);
    }

    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// Makes batches carry the site's health report every `interval` (an idle capture
    /// sends a keepalive batch for it).
    pub fn report_health_every(&mut self, interval: std::time::Duration) {
        self.health = Some(HealthReporter::new(interval));
    }

    /// The source's versions, for the health report.
    pub fn set_source_versions(&mut self, database: String, openmrs: Option<String>) {
        if let Some(health) = &mut self.health {
            health.set_versions(database, openmrs);
        }
    }

    fn health_due_while_idle(&self) -> bool {
        self.health
            .as_ref()
            .is_some_and(HealthReporter::due_while_idle)
    }

    /// Sends a health report now in a keepalive batch (a session just failed). What is on
    /// disk is read again first, as a new session does: rows handed over and not published
    /// are read again by the next session, and a batch whose publication failed is finished
    /// or discarded before the report takes the next sequence. The keepalive is stamped with
    /// the newest source commit handed over, so HQ's lag does not read as caught up.
    pub fn report_health_now(&mut self) -> Result<(), CaptureError> {
        if self.health.is_none() {
            return Ok(());
        }
        self.resume()?;
        if let Some(health) = &mut self.health {
            health.make_due();
        }
        let stamp = self.last_source_commit.unwrap_or_else(unix_now);
        self.push_keepalive(stamp);
        self.flush()?;
        self.sync()
    }

    /// Marks what the following batches carry (stream or snapshot rows).
    pub fn set_origin(&mut self, origin: Origin) -> Result<(), CaptureError> {
        if origin != self.origin {
            self.flush()?;
            self.origin = origin;
        }
        Ok(())
    }

    /// The binlog file/position after the transaction about to be [`add`](Publisher::add)ed
    /// (`None`: not known); checkpointed with its GTID position.
    pub fn set_binlog_position(&mut self, position: Option<BinlogFilePosition>) {
        self.binlog_position = position;
    }

    /// How far a seed reaches once the transaction about to be [`add`](Publisher::add)ed is
    /// published; checkpointed with it.
    pub fn set_seed_progress(&mut self, progress: Option<SeedProgress>) {
        self.seed = progress;
    }

    /// Adds one committed transaction; `position_after` is the source position once it is
    /// applied. Publishes a batch when the row bound is reached.
    pub fn add(
        &mut self,
        txn: CapturedTransaction,
        position_after: String,
    ) -> Result<(), CaptureError> {
        self.position = position_after;
        self.partial = None;
        self.last_source_commit = self.last_source_commit.max(Some(txn.committed_at));
        // The final part of a transaction sent in parts travels even when empty: it marks the
        // transaction's end for whoever reads the parts.
        if !txn.is_empty() || txn.part.is_some() {
            self.pending_rows += txn.row_count();
            self.pending.push(txn);
        }
        if self.pending_rows >= self.max_batch_rows {
            self.flush()?;
        }
        Ok(())
    }

    /// Publishes a non-final part of a chunked transaction at once, after what was pending: the
    /// checkpoint keeps the position before the transaction and records how far into it the
    /// published parts reach.
    pub fn add_part(
        &mut self,
        part: CapturedTransaction,
        partial: PartialTransaction,
    ) -> Result<(), CaptureError> {
        self.flush()?;
        self.pending_rows = part.row_count();
        self.pending.push(part);
        self.partial = Some(partial);
        self.flush()
    }

    /// When nothing was published for `interval` and nothing is pending, publishes an empty
    /// batch stamped now: HQ then knows the site is alive and caught up.
    pub fn keep_alive(&mut self, interval: std::time::Duration) -> Result<(), CaptureError> {
        if !self.pending.is_empty()
            || (self.last_published.elapsed() < interval && !self.health_due_while_idle())
        {
            return Ok(());
        }
        self.push_keepalive(unix_now());
        self.flush()
    }

    /// An empty transaction stamped `committed_at`: a keepalive batch once flushed.
    fn push_keepalive(&mut self, committed_at: u64) {
        self.pending
            .push(CapturedTransaction::new(None, committed_at, None));
    }

    /// Hands what is pending to the sealer as the next batch (or checkpoints a position-only
    /// move). Publication completes in the background; [`Publisher::sync`] waits for it.
    pub fn flush(&mut self) -> Result<(), CaptureError> {
        if self.pending.is_empty() {
            if self.position != self.checkpoint.gtid_position
                || self.binlog_position != self.checkpoint.binlog_position
                || self.schema_version != self.checkpoint.schema_version
                || self.partial != self.checkpoint.partial
                || self.seed != self.checkpoint.seed
            {
                let mut next = self.checkpoint.clone();
                next.gtid_position = self.position.clone();
                next.binlog_position = self.binlog_position.clone();
                next.schema_version = self.schema_version;
                next.partial = self.partial.clone();
                next.seed = self.seed.clone();
                next.staged_sequence = None;
                let saved = next.clone();
                self.sealer.submit(move |sink| sink.state.save(&saved))?;
                self.checkpoint = next;
            }
            return Ok(());
        }
        let health = match &mut self.health {
            Some(health) if health.due() => Some(health.report(&self.position)),
            _ => None,
        };
        let rows = std::mem::take(&mut self.pending_rows);
        let sequence = self.checkpoint.next_sequence;
        let header = BatchHeader::new(
            &self.checkpoint.site_id,
            &self.key_id,
            self.checkpoint.epoch,
            sequence,
            u32::try_from(rows).unwrap_or(u32::MAX),
        );
        let mut next = self.checkpoint.clone();
        next.gtid_position = self.position.clone();
        next.binlog_position = self.binlog_position.clone();
        next.next_sequence = sequence + 1;
        next.staged_sequence = Some(sequence);
        next.schema_version = self.schema_version;
        next.partial = self.partial.clone();
        next.seed = self.seed.clone();
        let saved = next.clone();
        // The rows were written as JSON when they were built; the envelope is added here, on
        // the thread that built them (their identities are counted and freed by one thread).
        let json = payload_json(self.origin, &self.pending, health.as_ref());
        self.pending.clear();
        self.sealer
            .submit(move |sink| publish(sink, &header, json, &saved))?;
        self.checkpoint = next;
        self.last_published = std::time::Instant::now();
        Ok(())
    }

    /// Rewrites checkpoint fields that are not part of batch publication.
    pub fn update_checkpoint(
        &mut self,
        change: impl FnOnce(&mut Checkpoint),
    ) -> Result<(), CaptureError> {
        let mut next = self.checkpoint.clone();
        change(&mut next);
        let saved = next.clone();
        self.sealer.run(move |sink| sink.state.save(&saved))?;
        self.checkpoint = next;
        Ok(())
    }
}

/// Seals one batch and publishes it: stage (durable), checkpoint past it, commit.
fn publish(
    sink: &mut Sink,
    header: &BatchHeader,
    json: Vec<u8>,
    next: &Checkpoint,
) -> Result<(), CaptureError> {
    let sealed = tributary_batch::seal(header, &json, &sink.key)?;
    drop(json);
    if let Err(refused) = sink.budget.admit(sealed.len() as u64) {
        // Waiting for the transport: how long its oldest batch has waited keeps showing.
        sink.budget.note_oldest(&*sink.outbox);
        return Err(refused);
    }
    let staged = sink.outbox.stage(next.epoch, header.sequence, &sealed)?;
    sink.state.save(next)?;
    sink.outbox.commit(&staged)?;
    sink.budget.note_oldest(&*sink.outbox);
    crate::metrics::batch_published(header.row_count);
    tracing::debug!(
        sequence = header.sequence,
        rows = header.row_count,
        "published batch"
    );
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_model::json::write_row_head;
    use tributary_model::{Identity, Op};
    use tributary_transport::{SpoolFormat, open_outbox, open_spool};

    fn txn() -> CapturedTransaction {
        let mut txn = CapturedTransaction::new(Some("0-1-5".into()), 1, None);
        let identity = Identity::from_uuid("p-1");
        txn.push_row(identity.clone(), |out| {
            write_row_head(out, "person", Op::Insert, identity.as_str());
            out.extend_from_slice(b"{}}");
        });
        txn
    }

    const FORMATS: [SpoolFormat; 2] = [SpoolFormat::Files, SpoolFormat::Segments];

    struct Site {
        _dir: tempfile::TempDir,
        state: std::path::PathBuf,
        outbox: std::path::PathBuf,
        key: SiteKey,
        format: SpoolFormat,
    }

    impl Site {
        fn new(format: SpoolFormat) -> Site {
            let dir = tempfile::tempdir().unwrap();
            Site {
                state: dir.path().join("state"),
                outbox: dir.path().join("batches"),
                _dir: dir,
                key: SiteKey::generate("clinic-a").unwrap(),
                format,
            }
        }

        fn outbox(&self) -> Box<dyn Outbox> {
            open_outbox(self.format, &self.outbox, "clinic-a", 1 << 20).unwrap()
        }

        fn open(&self) -> Publisher {
            let state = StateDir::open(&self.state).unwrap();
            let checkpoint = state.load().unwrap().unwrap_or_else(|| {
                let checkpoint = Checkpoint::new("clinic-a", "0-1-4".into());
                state.save(&checkpoint).unwrap();
                checkpoint
            });
            Publisher::open(
                state,
                self.outbox(),
                self.key.clone(),
                checkpoint,
                100,
                SpoolLimits::default(),
            )
            .unwrap()
        }

        fn committed(&self) -> Vec<u64> {
            open_spool(self.format, &self.outbox, "clinic-a")
                .unwrap()
                .committed_after(None, usize::MAX)
                .unwrap()
                .iter()
                .map(|b| b.sequence)
                .collect()
        }
    }

    #[test]
    fn a_flush_publishes_the_batch_and_then_advances_the_checkpoint() {
        for format in FORMATS {
            let site = Site::new(format);
            let mut publisher = site.open();
            publisher.add(txn(), "0-1-5".into()).unwrap();
            assert!(
                site.committed().is_empty(),
                "below the row bound nothing is published yet"
            );
            publisher.flush().unwrap();
            publisher.sync().unwrap();
            assert_eq!(site.committed(), vec![1]);
            assert_eq!(publisher.checkpoint().next_sequence, 2);
            assert_eq!(publisher.checkpoint().gtid_position, "0-1-5");
        }
    }

    #[test]
    fn the_binlog_position_is_checkpointed_with_the_gtid_position() {
        let site = Site::new(SpoolFormat::Files);
        let mut publisher = site.open();
        let at = |offset| {
            Some(BinlogFilePosition {
                file: "mariadb-bin.000002".into(),
                offset,
            })
        };
        publisher.set_binlog_position(at(900));
        publisher.add(txn(), "0-1-5".into()).unwrap();
        publisher.flush().unwrap();
        // A transaction without synced rows moves both keys without a batch.
        publisher.set_binlog_position(at(1_400));
        publisher
            .add(
                CapturedTransaction::new(Some("0-1-6".into()), 1, None),
                "0-1-6".into(),
            )
            .unwrap();
        publisher.flush().unwrap();
        publisher.sync().unwrap();
        drop(publisher);
        let saved = StateDir::peek(&site.state).unwrap().unwrap();
        assert_eq!(
            (saved.gtid_position.as_str(), saved.binlog_position),
            ("0-1-6", at(1_400))
        );
        assert_eq!(saved.next_sequence, 2);
        assert_eq!(site.open().checkpoint().binlog_position, at(1_400));
    }

    #[test]
    fn a_batch_staged_before_its_checkpoint_is_discarded_on_restart() {
        for format in FORMATS {
            let site = Site::new(format);
            drop(site.open());
            // Crash after staging batch 1 but before the checkpoint covered it.
            let epoch = StateDir::peek(&site.state).unwrap().map_or(1, |c| c.epoch);
            site.outbox().stage(epoch, 1, b"sealed").unwrap();
            let publisher = site.open();
            drop(publisher);
            assert!(site.outbox().staged().unwrap().is_empty(), "{format:?}");
            assert!(
                site.committed().is_empty(),
                "the events are read again into sequence 1"
            );
            assert_eq!(site.open().checkpoint().next_sequence, 1);
        }
    }

    #[test]
    fn a_failed_commit_is_finished_when_the_next_session_resumes() {
        for format in FORMATS {
            let site = Site::new(format);
            let mut publisher = site.open();
            publisher.add(txn(), "0-1-5".into()).unwrap();
            publisher.flush().unwrap();
            publisher.sync().unwrap();
            // As if the commit of batch 2 had failed after its checkpoint was saved: staged
            // only.
            let epoch = publisher.checkpoint().epoch;
            publisher
                .update_checkpoint(|c| c.next_sequence = 3)
                .unwrap();
            publisher
                .sealer
                .run(move |sink| Ok(sink.outbox.stage(epoch, 2, b"sealed")?))
                .unwrap();
            publisher.add(txn(), "0-1-6".into()).unwrap();
            publisher.resume().unwrap();
            assert_eq!(site.committed(), vec![1, 2], "{format:?}");
            publisher.flush().unwrap();
            publisher.sync().unwrap();
            assert_eq!(
                site.committed(),
                vec![1, 2],
                "pending rows were dropped: they are read again"
            );
        }
    }

    #[test]
    fn a_batch_staged_and_checkpointed_is_committed_on_restart() {
        for format in FORMATS {
            let site = Site::new(format);
            drop(site.open());
            // Crash after the checkpoint covered staged batch 1 but before it was committed.
            {
                let state = StateDir::open(&site.state).unwrap();
                let mut checkpoint = Checkpoint::new("clinic-a", "0-1-5".into());
                site.outbox().stage(checkpoint.epoch, 1, b"sealed").unwrap();
                checkpoint.next_sequence = 2;
                checkpoint.staged_sequence = Some(1);
                state.save(&checkpoint).unwrap();
            }
            let publisher = site.open();
            assert_eq!(
                site.committed(),
                vec![1],
                "the checkpoint already covers it: it must be published"
            );
            assert_eq!(publisher.checkpoint().next_sequence, 2);
        }
    }
}
