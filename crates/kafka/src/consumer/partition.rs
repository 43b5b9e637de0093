//! What the consumer keeps per assigned partition, and the rules it follows with it: which
//! delivered record goes to the handler and which is skipped, what may be committed, and when
//! to pass back over held batches. No Kafka calls here (the consumer loop makes them on what
//! these answer), so the rules are tested on their own.
//!
//! A held batch (a gap before it) does not stop its partition: the records after it are
//! handled as usual. A batch is held because an earlier batch of its *lineage* (a site's
//! epoch) is missing, so every later batch of that lineage is held too: per held lineage only
//! the first held batch is remembered (offset and sequence), and memory stays bounded by the
//! number of held lineages however long they stay held. Nothing from the first held offset on
//! is committed.
//!
//! A *pass back* seeks to the first held batch and reads up to the furthest record already
//! finished, handing over only the held lineages' batches: everything else there was finished
//! before and is skipped without reaching the handler. Once a lineage is held again in a
//! pass, its later batches are not tried in it. A pass is considered as soon as a first-time
//! batch of a held site is done (its missing batch arrived, or a re-seed's new epoch began),
//! otherwise after a delay that doubles while nothing changes (up to [`MAX_HOLD_RETRY`]); the
//! loop makes it only if the handler says a held lineage may move, so a site held for days
//! costs a question per delay, not a re-read of everything since.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::MAX_HOLD_RETRY;

/// The lineage a batch belongs to: a site's epoch. Within one lineage, batches are applied in
/// sequence order, so a gap before one is a gap before every later one. `None` stands for
/// records that are not batches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Lineage {
    pub site: String,
    pub epoch: u64,
}

/// What to do with a record the partition delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Not now (paused, or not the offset a seek asked for): it is read again later.
    Drop,
    /// Finished before (read again on a pass back): neither handled nor committed again.
    Skip,
    /// Hand it to the handler; `first_time` unless it is a held batch tried again.
    Handle { first_time: bool },
}

/// What the handler made of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Done,
    Held,
}

/// The first held batch of a lineage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeldFrom {
    pub offset: i64,
    pub sequence: u64,
}

/// A pass back over the held batches, in progress.
#[derive(Debug)]
struct Pass {
    /// The furthest offset finished when the pass started: the pass ends there.
    up_to: i64,
    /// Lineages held again in this pass (their later batches are not tried in it).
    still_held: BTreeSet<Option<Lineage>>,
    /// Whether any held batch was done in this pass.
    resolved: bool,
}

/// A partition paused after a transient failure: the offset to come back to and when.
#[derive(Debug, Clone, Copy)]
struct Retry {
    offset: i64,
    until: Instant,
    backoff: Duration,
}

#[derive(Debug)]
pub(crate) struct PartitionState {
    /// The furthest offset the handler finished with (done or held).
    furthest: Option<i64>,
    held: BTreeMap<Option<Lineage>, HeldFrom>,
    /// When to consider a pass back, if none is in progress.
    revisit_at: Option<Instant>,
    /// The delay that led to `revisit_at` (doubled while nothing changes).
    delay: Duration,
    pass: Option<Pass>,
    /// After a seek: the offset the partition must deliver next.
    expect: Option<i64>,
    retry: Option<Retry>,
    /// The last commit point handed out (the next offset to read).
    committed: Option<i64>,
    hold_retry: Duration,
}

impl PartitionState {
    pub fn new(hold_retry: Duration) -> Self {
        let hold_retry = hold_retry.min(MAX_HOLD_RETRY);
        PartitionState {
            furthest: None,
            held: BTreeMap::new(),
            revisit_at: None,
            delay: hold_retry,
            pass: None,
            expect: None,
            retry: None,
            committed: None,
            hold_retry,
        }
    }

    /// Decides what becomes of the record at `offset`, of `lineage`.
    pub fn admit(&mut self, offset: i64, lineage: &Option<Lineage>, now: Instant) -> Admit {
        if self.retry.is_some() {
            return Admit::Drop;
        }
        if let Some(expected) = self.expect {
            if offset != expected {
                return Admit::Drop;
            }
            self.expect = None;
        }
        if self.furthest.is_some_and(|f| offset <= f) {
            let try_again = match (&self.pass, self.held.get(lineage)) {
                (Some(pass), Some(from)) => {
                    offset >= from.offset && !pass.still_held.contains(lineage)
                }
                _ => false,
            };
            if try_again {
                return Admit::Handle { first_time: false };
            }
            self.end_pass_at(offset, now);
            return Admit::Skip;
        }
        // Past what the pass set out to re-read.
        self.end_pass(now);
        Admit::Handle { first_time: true }
    }

    /// Records what the handler made of the record at `offset` (of `lineage`, at `sequence`).
    pub fn finished(
        &mut self,
        offset: i64,
        lineage: Option<Lineage>,
        sequence: u64,
        outcome: Outcome,
        now: Instant,
    ) {
        let first_time = self.furthest.is_none_or(|f| offset > f);
        if first_time {
            self.furthest = Some(offset);
        }
        let held_from = HeldFrom { offset, sequence };
        match (outcome, &mut self.pass) {
            (Outcome::Done, Some(pass)) if !first_time => pass.resolved = true,
            (Outcome::Done, _) => {
                let moves_held_site = lineage.as_ref().is_some_and(|l| {
                    self.held
                        .keys()
                        .any(|h| h.as_ref().is_some_and(|h| h.site == l.site))
                });
                if first_time && moves_held_site && self.pass.is_none() {
                    // Its site moved at HQ: the held batches may fit now.
                    self.revisit_at = Some(now);
                    self.delay = self.hold_retry;
                }
            }
            (Outcome::Held, Some(pass)) if !first_time => {
                // The lineage's batches before this one were done in this pass.
                self.held.insert(lineage.clone(), held_from);
                pass.still_held.insert(lineage);
            }
            (Outcome::Held, _) => {
                self.held.entry(lineage).or_insert(held_from);
                if self.revisit_at.is_none() {
                    self.revisit_at = Some(now + self.delay);
                }
            }
        }
        self.end_pass_at(offset, now);
    }

    /// The commit point (the next offset to read) when it moved since last asked: everything
    /// below the first held batch is finished, or, with nothing held, everything up to the
    /// furthest record.
    pub fn take_commit(&mut self) -> Option<i64> {
        let point = self.first_held().or(self.furthest.map(|f| f + 1))?;
        if self.committed.is_some_and(|c| c >= point) {
            return None;
        }
        self.committed = Some(point);
        Some(point)
    }

    /// The partition failed transiently at `offset`: it is paused; returns the backoff.
    pub fn pause_for_retry(&mut self, offset: i64, now: Instant) -> Duration {
        let backoff = self
            .retry
            .map_or(Duration::from_millis(500), |r| r.backoff * 2)
            .min(Duration::from_secs(30));
        self.retry = Some(Retry {
            offset,
            until: now + backoff,
            backoff,
        });
        backoff
    }

    /// The offset to seek back to, when a paused partition's retry is due.
    pub fn due_retry(&self, now: Instant) -> Option<i64> {
        self.retry.filter(|r| r.until <= now).map(|r| r.offset)
    }

    /// The seek for the retry succeeded: the partition reads from there again.
    pub fn retry_resumed(&mut self) {
        if let Some(retry) = self.retry.take() {
            self.expect = Some(retry.offset);
        }
    }

    /// The seek for the retry failed: try again later.
    pub fn postpone_retry(&mut self, until: Instant) {
        if let Some(retry) = &mut self.retry {
            retry.until = until;
        }
    }

    /// The held lineages and their first held batch, when a pass back is due.
    pub fn due_pass(&self, now: Instant) -> Option<Vec<(Option<Lineage>, HeldFrom)>> {
        if self.pass.is_some() || self.retry.is_some() || self.held.is_empty() {
            return None;
        }
        self.revisit_at.filter(|at| *at <= now)?;
        Some(self.held.iter().map(|(l, h)| (l.clone(), *h)).collect())
    }

    /// How many lineages are held.
    pub fn held_lineages(&self) -> usize {
        self.held.len()
    }

    /// The first held offset: where a pass back seeks to.
    pub fn first_held(&self) -> Option<i64> {
        self.held.values().map(|h| h.offset).min()
    }

    /// The seek for a pass back succeeded.
    pub fn pass_started(&mut self) {
        self.pass = Some(Pass {
            up_to: self.furthest.unwrap_or(i64::MIN),
            still_held: BTreeSet::new(),
            resolved: false,
        });
        self.expect = self.first_held();
        self.revisit_at = None;
    }

    /// No pass now (nothing held may move, or the seek failed): consider one again after the
    /// delay, doubled.
    pub fn pass_put_off(&mut self, now: Instant) {
        self.delay = (self.delay * 2).min(MAX_HOLD_RETRY);
        self.revisit_at = Some(now + self.delay);
    }

    /// When this partition next needs the loop's attention (a retry or a pass back).
    pub fn next_due(&self) -> Option<Instant> {
        match self.retry {
            Some(retry) => Some(retry.until),
            None if self.pass.is_none() && !self.held.is_empty() => self.revisit_at,
            None => None,
        }
    }

    /// Work under way that a draining run must finish before it stops: a pass back, or one
    /// to consider now because a held site moved.
    pub fn catching_up(&self, now: Instant) -> bool {
        self.pass.is_some() || self.due_pass(now).is_some()
    }

    /// The offset the partition waits at (its first held batch, or the batch a retry comes
    /// back to), if any.
    pub fn waits_at(&self) -> Option<i64> {
        let retry = self.retry.map(|r| r.offset);
        match (self.first_held(), retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn end_pass_at(&mut self, offset: i64, now: Instant) {
        if self.pass.as_ref().is_some_and(|p| offset >= p.up_to) {
            self.end_pass(now);
        }
    }

    /// Lineages not held again in the pass had every batch re-read and done: they are no
    /// longer held.
    fn end_pass(&mut self, now: Instant) {
        let Some(pass) = self.pass.take() else { return };
        self.held
            .retain(|lineage, _| pass.still_held.contains(lineage));
        if self.held.is_empty() {
            self.revisit_at = None;
            self.delay = self.hold_retry;
            return;
        }
        self.delay = if pass.resolved {
            self.hold_retry
        } else {
            (self.delay * 2).min(MAX_HOLD_RETRY)
        };
        self.revisit_at = Some(now + self.delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(site: &str, epoch: u64) -> Option<Lineage> {
        Some(Lineage {
            site: site.into(),
            epoch,
        })
    }

    const RETRY: Duration = Duration::from_secs(5);

    /// Delivers `offset` (batch `sequence` of `lineage`) and, when it is handed over,
    /// finishes it with `outcome`, as the loop would.
    fn deliver(
        p: &mut PartitionState,
        offset: i64,
        lineage: Option<Lineage>,
        sequence: u64,
        outcome: Outcome,
        now: Instant,
    ) -> Admit {
        let admit = p.admit(offset, &lineage, now);
        if let Admit::Handle { .. } = admit {
            p.finished(offset, lineage, sequence, outcome, now);
        }
        admit
    }

    #[test]
    fn commits_stop_at_the_first_held_batch_and_move_once_it_is_done() {
        let mut p = PartitionState::new(RETRY);
        let now = Instant::now();
        let first = Admit::Handle { first_time: true };
        assert_eq!(deliver(&mut p, 0, of("a", 1), 1, Outcome::Done, now), first);
        assert_eq!(p.take_commit(), Some(1));
        deliver(&mut p, 1, of("a", 1), 3, Outcome::Held, now);
        deliver(&mut p, 2, of("b", 1), 1, Outcome::Done, now);
        assert_eq!(p.take_commit(), None, "nothing from the held batch on");
        assert_eq!(p.waits_at(), Some(1));
        assert_eq!(p.due_pass(now), None);
        // After the delay, a pass re-reads offsets 1 and 2; only the held one is handed over.
        let later = now + RETRY;
        let due = p.due_pass(later).expect("a pass is due");
        assert_eq!(
            due,
            vec![(
                of("a", 1),
                HeldFrom {
                    offset: 1,
                    sequence: 3
                }
            )]
        );
        p.pass_started();
        assert_eq!(
            p.admit(2, &of("b", 1), later),
            Admit::Drop,
            "not the sought offset"
        );
        let again = Admit::Handle { first_time: false };
        assert_eq!(
            deliver(&mut p, 1, of("a", 1), 3, Outcome::Done, later),
            again
        );
        assert_eq!(p.admit(2, &of("b", 1), later), Admit::Skip);
        assert_eq!(p.take_commit(), Some(3));
        assert_eq!((p.waits_at(), p.next_due()), (None, None));
    }

    #[test]
    fn a_first_time_batch_of_a_held_site_makes_a_pass_due_at_once() {
        let mut p = PartitionState::new(RETRY);
        let now = Instant::now();
        deliver(&mut p, 0, of("a", 1), 5, Outcome::Held, now);
        deliver(&mut p, 1, of("b", 1), 1, Outcome::Done, now);
        assert!(
            p.due_pass(now).is_none(),
            "another site's progress changes nothing"
        );
        assert!(!p.catching_up(now));
        // Site a's batch 4 arrives: its lineage may move.
        deliver(&mut p, 2, of("a", 1), 4, Outcome::Done, now);
        assert!(p.due_pass(now).is_some());
        assert!(p.catching_up(now));
    }

    #[test]
    fn a_lineage_held_again_is_not_tried_further_in_the_same_pass() {
        let mut p = PartitionState::new(RETRY);
        let now = Instant::now();
        for (offset, sequence) in [(0, 5), (1, 6), (2, 7)] {
            deliver(&mut p, offset, of("a", 1), sequence, Outcome::Held, now);
        }
        deliver(&mut p, 3, of("b", 1), 9, Outcome::Held, now);
        let later = now + RETRY;
        p.pass_started();
        let again = Admit::Handle { first_time: false };
        assert_eq!(
            deliver(&mut p, 0, of("a", 1), 5, Outcome::Held, later),
            again
        );
        assert_eq!(p.admit(1, &of("a", 1), later), Admit::Skip);
        assert_eq!(p.admit(2, &of("a", 1), later), Admit::Skip);
        assert_eq!(
            deliver(&mut p, 3, of("b", 1), 9, Outcome::Held, later),
            again
        );
        // The pass ended at offset 3 and resolved nothing: the next waits twice as long.
        let next = p.next_due().expect("a next pass");
        assert_eq!(next, later + RETRY * 2);
        assert_eq!(p.waits_at(), Some(0));
    }

    #[test]
    fn a_pass_keeps_a_lineage_held_from_its_first_batch_still_missing_one() {
        let mut p = PartitionState::new(RETRY);
        let now = Instant::now();
        deliver(&mut p, 0, of("a", 1), 5, Outcome::Held, now);
        deliver(&mut p, 1, of("b", 1), 1, Outcome::Done, now);
        deliver(&mut p, 2, of("a", 1), 7, Outcome::Held, now);
        p.pass_started();
        // Batch 4 came another way: 5 fits, 7 still waits for 6.
        deliver(&mut p, 0, of("a", 1), 5, Outcome::Done, now);
        assert_eq!(p.admit(1, &of("b", 1), now), Admit::Skip);
        deliver(&mut p, 2, of("a", 1), 7, Outcome::Held, now);
        assert_eq!(p.waits_at(), Some(2));
        assert_eq!(p.take_commit(), Some(2));
        let due = p.due_pass(now + RETRY).expect("still held");
        assert_eq!(
            due,
            vec![(
                of("a", 1),
                HeldFrom {
                    offset: 2,
                    sequence: 7
                }
            )]
        );
    }

    #[test]
    fn a_later_epoch_done_resolves_the_held_one_as_stale() {
        let mut p = PartitionState::new(RETRY);
        let now = Instant::now();
        deliver(&mut p, 0, of("a", 1), 5, Outcome::Held, now);
        deliver(&mut p, 1, of("a", 1), 6, Outcome::Held, now);
        deliver(&mut p, 2, of("a", 2), 1, Outcome::Done, now);
        assert!(p.due_pass(now).is_some(), "the re-seed moved the site");
        p.pass_started();
        // The handler rejects the old epoch's batches as stale: done.
        deliver(&mut p, 0, of("a", 1), 5, Outcome::Done, now);
        deliver(&mut p, 1, of("a", 1), 6, Outcome::Done, now);
        assert_eq!(p.admit(2, &of("a", 2), now), Admit::Skip);
        assert_eq!((p.waits_at(), p.take_commit()), (None, Some(3)));
    }

    #[test]
    fn the_delay_is_capped_and_put_off_passes_double_it() {
        let mut p = PartitionState::new(Duration::from_secs(3_600));
        let now = Instant::now();
        deliver(&mut p, 0, of("a", 1), 2, Outcome::Held, now);
        assert_eq!(p.next_due(), Some(now + MAX_HOLD_RETRY));
        let mut p = PartitionState::new(RETRY);
        deliver(&mut p, 0, of("a", 1), 2, Outcome::Held, now);
        p.pass_put_off(now);
        assert_eq!(p.next_due(), Some(now + RETRY * 2));
    }

    #[test]
    fn a_retry_comes_back_to_its_batch_and_drops_what_was_fetched_meanwhile() {
        let mut p = PartitionState::new(RETRY);
        let now = Instant::now();
        deliver(&mut p, 0, of("a", 1), 1, Outcome::Done, now);
        assert_eq!(
            p.admit(1, &of("a", 1), now),
            Admit::Handle { first_time: true }
        );
        let backoff = p.pause_for_retry(1, now);
        assert_eq!(p.admit(2, &of("a", 1), now), Admit::Drop);
        assert_eq!(p.waits_at(), Some(1));
        assert_eq!(p.due_retry(now), None);
        assert_eq!(p.due_retry(now + backoff), Some(1));
        p.retry_resumed();
        assert_eq!(
            p.admit(2, &of("a", 1), now),
            Admit::Drop,
            "not the sought offset"
        );
        let first = Admit::Handle { first_time: true };
        assert_eq!(deliver(&mut p, 1, of("a", 1), 2, Outcome::Done, now), first);
        assert_eq!(p.take_commit(), Some(2));
    }
}
