//! [`SegmentSpool`]: the shipper's (and export's) view of a site's segment spool.
//!
//! Listing walks record headers only: a batch is listed when its commit record follows it.
//! Removal is a watermark: the shipper removes batches in stream order, so "everything up
//! to here was delivered" is one position, kept in the `acknowledged` file. A closed segment
//! whose every batch is at or below the watermark is deleted whole.
//!
//! Invariants:
//! - nothing is listed or read that is not committed and whole (both checksums match);
//! - a segment is deleted only once all of its batches were removed, and the active segment
//!   (the highest-numbered) never is;
//! - losing the watermark (it is written without fsync, at most every
//!   [`WATERMARK_INTERVAL`] while removing or listing, and at `flush`) only means batches
//!   are sent again, which the applier skips;
//! - memory is bounded by the listing limit, not by the spool's size.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::file::{SegmentFile, Step, list_segments, segment_name};
use super::record::{RecordHeader, RecordKind};
use crate::durability::sync_dir;
use crate::error::TransportError;
use crate::layout::site_dir;
use crate::spool::{Spool, SpooledBatch};

/// How often the watermark is written while batches are being removed.
pub const WATERMARK_INTERVAL: Duration = Duration::from_secs(1);

const WATERMARK_FILE: &str = "acknowledged";
const WATERMARK_MAGIC: &str = "tributary-spool-acknowledged 1";

/// Where a listed batch's record is.
#[derive(Debug, Clone, Copy)]
struct Located {
    segment: u64,
    offset: u64,
    header: RecordHeader,
    /// Its commit record, and where that is.
    commit: (RecordHeader, u64),
}

#[derive(Debug)]
struct ReaderState {
    /// The batches of the latest listing.
    located: HashMap<SpooledBatch, Located>,
    /// The last committed batch of each closed segment walked to its end.
    closed_last: BTreeMap<u64, Option<SpooledBatch>>,
    /// Everything up to here was removed.
    removed_through: Option<SpooledBatch>,
    written_through: Option<SpooledBatch>,
    written_at: Instant,
}

/// A site's segment spool, read as a [`Spool`].
#[derive(Debug)]
pub struct SegmentSpool {
    site_id: String,
    dir: PathBuf,
    state: Mutex<ReaderState>,
}

impl SegmentSpool {
    /// The spool of `site_id` under `root`. A missing spool directory is an empty spool.
    pub fn open(root: &Path, site_id: &str) -> Result<Self, TransportError> {
        let dir = site_dir(root, site_id)?;
        let removed_through = read_watermark(&dir)?;
        Ok(SegmentSpool {
            site_id: site_id.to_owned(),
            dir,
            state: Mutex::new(ReaderState {
                located: HashMap::new(),
                closed_last: BTreeMap::new(),
                removed_through,
                written_through: removed_through,
                written_at: Instant::now(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReaderState> {
        // A panic while holding the lock cannot leave the state inconsistent in a way that
        // matters: it is a cache plus a watermark that only ever grows.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn segments(&self) -> Result<Vec<u64>, TransportError> {
        match fs::metadata(&self.dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            _ => list_segments(&self.dir),
        }
    }

    /// The position of the first record of segment `number`, if it has one.
    fn first_position(&self, number: u64) -> Result<Option<SpooledBatch>, TransportError> {
        let Some(segment) = self.open_segment(number)? else {
            return Ok(None);
        };
        Ok(match segment.step(0, segment.len()?) {
            Ok(Step::Record { header, .. }) => Some(position(&header)),
            _ => None,
        })
    }

    fn open_segment(&self, number: u64) -> Result<Option<SegmentFile>, TransportError> {
        match SegmentFile::open(&self.dir, number) {
            Ok(segment) => Ok(Some(segment)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(TransportError::Io {
                operation: "open spool segment",
                path: self.dir.join(segment_name(number)),
                source: e,
            }),
        }
    }

    /// Writes the watermark and deletes the closed segments it covers.
    fn write_watermark(&self, state: &mut ReaderState) -> Result<(), TransportError> {
        let Some(through) = state.removed_through else {
            return Ok(());
        };
        if state.written_through != Some(through) {
            let path = self.dir.join(WATERMARK_FILE);
            let temporary = self.dir.join(format!(".{WATERMARK_FILE}.tmp"));
            let text = format!(
                "{WATERMARK_MAGIC}\n{} {}\n",
                through.epoch, through.sequence
            );
            fs::write(&temporary, text)
                .map_err(TransportError::io("write spool watermark", &temporary))?;
            fs::rename(&temporary, &path)
                .map_err(TransportError::io("replace spool watermark", &path))?;
            state.written_through = Some(through);
        }
        state.written_at = Instant::now();
        let removable: Vec<u64> = state
            .closed_last
            .iter()
            .filter(|(_, last)| last.is_none_or(|last| last <= through))
            .map(|(&number, _)| number)
            .collect();
        for number in &removable {
            let path = self.dir.join(segment_name(*number));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(TransportError::io("delete spool segment", &path)(e)),
            }
            state.closed_last.remove(number);
        }
        if !removable.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Finds a batch that is not in the latest listing by walking the spool.
    fn locate(&self, batch: &SpooledBatch) -> Result<Option<Located>, TransportError> {
        let before = (batch.sequence > 0).then(|| SpooledBatch {
            epoch: batch.epoch,
            sequence: batch.sequence - 1,
        });
        let before = before.or_else(|| {
            (batch.epoch > 0).then(|| SpooledBatch {
                epoch: batch.epoch - 1,
                sequence: u64::MAX,
            })
        });
        let mut state = self.lock();
        let listed = self.list(&mut state, before, 1, false)?;
        Ok(listed
            .first()
            .filter(|found| *found == batch)
            .and_then(|found| state.located.get(found).copied()))
    }

    fn list(
        &self,
        state: &mut ReaderState,
        after: Option<SpooledBatch>,
        limit: usize,
        above_watermark: bool,
    ) -> Result<Vec<SpooledBatch>, TransportError> {
        let floor = if above_watermark {
            after.max(state.removed_through)
        } else {
            after
        };
        let mut listed = Vec::new();
        let numbers = self.segments()?;
        for (i, &number) in numbers.iter().enumerate() {
            if listed.len() >= limit {
                break;
            }
            let closed = i + 1 < numbers.len();
            if let Some(floor) = floor {
                let below = match state.closed_last.get(&number) {
                    Some(last) => last.is_none_or(|last| last <= floor),
                    None if closed => self
                        .first_position(numbers[i + 1])?
                        .is_some_and(|next_first| next_first <= floor),
                    None => false,
                };
                if below {
                    continue;
                }
            }
            let Some(segment) = self.open_segment(number)? else {
                continue;
            };
            let len = segment.len()?;
            let mut offset = 0;
            let mut staged: Option<(RecordHeader, u64)> = None;
            let mut last = None;
            loop {
                match segment.step(offset, len)? {
                    Step::Record { header, offset: at } => {
                        offset = at + header.record_len();
                        match header.kind {
                            RecordKind::Batch => staged = Some((header, at)),
                            RecordKind::Commit => {
                                let Some((batch_header, batch_offset)) = staged.take() else {
                                    continue;
                                };
                                let batch = position(&batch_header);
                                if batch != position(&header) {
                                    continue;
                                }
                                last = Some(batch);
                                if floor.is_none_or(|floor| batch > floor) {
                                    listed.push(batch);
                                    state.located.insert(
                                        batch,
                                        Located {
                                            segment: number,
                                            offset: batch_offset,
                                            header: batch_header,
                                            commit: (header, at),
                                        },
                                    );
                                    if listed.len() >= limit {
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    Step::End => {
                        if closed {
                            state.closed_last.insert(number, last);
                        }
                        break;
                    }
                    // The writer is at work there, or will cut it off when it next opens.
                    Step::Torn { .. } => break,
                }
            }
        }
        Ok(listed)
    }
}

impl Spool for SegmentSpool {
    fn site_id(&self) -> &str {
        &self.site_id
    }

    fn committed_after(
        &self,
        after: Option<SpooledBatch>,
        limit: usize,
    ) -> Result<Vec<SpooledBatch>, TransportError> {
        let mut state = self.lock();
        // A shipper with nothing left to remove still lists: its last removals are recorded
        // (and delivered segments deleted) here.
        if state.removed_through != state.written_through
            && state.written_at.elapsed() >= WATERMARK_INTERVAL
        {
            self.write_watermark(&mut state)?;
        }
        state.located.clear();
        self.list(&mut state, after, limit.max(1), true)
    }

    fn oldest_committed_at(&self) -> Result<Option<SystemTime>, TransportError> {
        let mut state = self.lock();
        let Some(oldest) = self.list(&mut state, None, 1, true)?.into_iter().next() else {
            return Ok(None);
        };
        let Some(located) = state.located.get(&oldest).copied() else {
            return Ok(None);
        };
        drop(state);
        let Some(segment) = self.open_segment(located.segment)? else {
            return Ok(None);
        };
        let (commit, offset) = located.commit;
        Ok(super::record::commit_time(
            &segment.payload(&commit, offset)?,
        ))
    }

    fn read(&self, batch: &SpooledBatch) -> Result<Vec<u8>, TransportError> {
        let located = self.lock().located.get(batch).copied();
        let located = match located {
            Some(located) => Some(located),
            None => self.locate(batch)?,
        };
        let missing = || TransportError::NotInSpool {
            spool: self.dir.clone(),
            epoch: batch.epoch,
            sequence: batch.sequence,
        };
        let located = located.ok_or_else(missing)?;
        let segment = self.open_segment(located.segment)?.ok_or_else(missing)?;
        segment.payload(&located.header, located.offset)
    }

    fn remove(&self, batch: &SpooledBatch) -> Result<(), TransportError> {
        let mut state = self.lock();
        state.removed_through = state.removed_through.max(Some(*batch));
        if state.written_at.elapsed() >= WATERMARK_INTERVAL {
            self.write_watermark(&mut state)?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), TransportError> {
        let mut state = self.lock();
        self.write_watermark(&mut state)
    }
}

impl Drop for SegmentSpool {
    fn drop(&mut self) {
        if let Err(error) = self.flush() {
            tracing::warn!(%error, "could not record which spooled batches were delivered; they will be sent again");
        }
    }
}

fn position(header: &RecordHeader) -> SpooledBatch {
    SpooledBatch {
        epoch: header.epoch,
        sequence: header.sequence,
    }
}

/// The watermark in `dir`, if one was written.
fn read_watermark(dir: &Path) -> Result<Option<SpooledBatch>, TransportError> {
    let path = dir.join(WATERMARK_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TransportError::io("read spool watermark", &path)(e)),
    };
    let mut lines = text.lines();
    let parsed = (lines.next() == Some(WATERMARK_MAGIC))
        .then(|| lines.next())
        .flatten()
        .and_then(|line| line.split_once(' '))
        .and_then(|(epoch, sequence)| Some((epoch.parse().ok()?, sequence.parse().ok()?)));
    match parsed {
        Some((epoch, sequence)) => Ok(Some(SpooledBatch { epoch, sequence })),
        None => Err(TransportError::BadWatermark { path }),
    }
}
