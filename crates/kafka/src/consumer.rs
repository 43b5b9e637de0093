//! The applier's Kafka source: consumes the sync topic as a member of HQ's consumer group and
//! hands each batch, in partition order, to a [`BatchHandler`] (the applier). DESIGN.md
//! invariants 1 and 2.
//!
//! Offsets: auto-commit is off. The offset after a batch is committed only once the handler
//! returned [`Handled::Done`], which it does after HQ's transaction for the batch committed
//! (applied, skipped as already applied, or rejected and kept aside). Commits are
//! asynchronous; before partitions are revoked in a rebalance, everything done is committed
//! synchronously. A commit that fails, or a crash before it, only means the batch is read
//! again, and the handler skips it by (site, epoch, sequence): offsets are an optimisation,
//! the HQ progress row is the truth.
//!
//! Waiting: when the handler answers [`Handled::Hold`] (a gap: an earlier batch of that site
//! is missing), nothing from that batch on is committed, but the partition keeps flowing: the
//! records after it are handed over as usual, and the handler decides (another site's batches
//! are applied; the held site's later batches wait too, unless they start a later epoch, a
//! re-seed that supersedes the held one). After a delay, which doubles while the same batch
//! stays held (up to a minute), the consumer seeks back to the batch and reads on from there;
//! what was applied meanwhile is skipped as already applied. So a site held at a gap never
//! holds the other sites that hash to its partition.
//!
//! Pausing: when the handler fails transiently (HQ unreachable), the partition is paused,
//! nothing past the batch is committed, and after a backoff the consumer seeks back to the
//! batch and tries it again. Records of a paused partition that librdkafka had already fetched
//! are dropped (they are read again after the seek). Other partitions keep flowing.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::{FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::client_config;
use crate::context::{Reachability, route_error, route_log};
use crate::error::KafkaTransportError;
use crate::record::{Received, decode};
use crate::settings::KafkaSettings;

/// What the handler did with a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// HQ committed what it does with the batch: commit the offset after it.
    Done,
    /// The batch cannot be applied yet (an earlier batch of its site is missing): commit
    /// nothing from here on, go on with the records after it, and come back to it later.
    Hold { reason: String },
}

/// The applier, as the consumer sees it.
pub trait BatchHandler: Send {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Applies (or skips, or rejects) one record. Called in partition order.
    fn handle(
        &mut self,
        record: Received,
    ) -> impl Future<Output = Result<Handled, Self::Error>> + Send;

    /// Periodic work between records (retrying parked rows); called at least every
    /// `tick_interval`.
    fn tick(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        async { Ok(()) }
    }

    /// Whether an error may pass (the record is tried again later).
    fn is_transient(error: &Self::Error) -> bool;
}

/// Consumer tuning.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// How long a batch held by a gap waits before it is tried again (doubled while the same
    /// batch stays held, up to [`MAX_HOLD_RETRY`]).
    pub hold_retry: Duration,
    /// How often [`BatchHandler::tick`] runs.
    pub tick_interval: Duration,
    /// `Drain` mode: stop when no record produced before the run started was finished for
    /// this long after partitions were assigned.
    pub idle_window: Duration,
    /// `Drain` mode: how long to wait for the first assignment (a group join can be slow).
    pub assignment_timeout: Duration,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        ConsumerSettings {
            hold_retry: Duration::from_secs(5),
            tick_interval: Duration::from_secs(1),
            idle_window: Duration::from_secs(5),
            assignment_timeout: Duration::from_secs(120),
        }
    }
}

/// The longest wait before a held batch is tried again.
pub const MAX_HOLD_RETRY: Duration = Duration::from_secs(60);

/// How long the consumer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Until the shutdown token is cancelled.
    Follow,
    /// Until nothing more arrives (`tributary apply --once`).
    Drain,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerReport {
    /// Records the handler finished (applied, duplicates, rejected).
    pub done: u64,
    /// Partitions held (waiting at a gap, or paused) when the run ended, with the offset they
    /// wait at.
    pub held: BTreeMap<i32, i64>,
    /// The last offset commit requested per partition (partition -> next offset).
    pub committed: BTreeMap<i32, i64>,
}

#[derive(Debug, Error)]
pub enum ConsumeError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Kafka(#[from] KafkaTransportError),
    #[error("applying a batch from kafka: {0}")]
    Handler(#[source] E),
}

/// Shared between the consumer loop and librdkafka's rebalance callbacks.
#[derive(Debug, Default)]
struct Shared {
    /// Next offset to commit per partition (work the handler finished).
    done: BTreeMap<i32, i64>,
    /// Partitions revoked or assigned since the loop last looked.
    changed: Vec<i32>,
}

struct ConsumerCtx {
    topic: String,
    shared: Arc<Mutex<Shared>>,
    reachability: Reachability,
}

impl ClientContext for ConsumerCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        route_log("apply", level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        route_error("apply", &self.reachability, &error, reason);
    }
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let Ok(mut shared) = self.shared.lock() else {
            return;
        };
        let mut commit = TopicPartitionList::new();
        for element in revoked.elements_for_topic(&self.topic) {
            let partition = element.partition();
            shared.changed.push(partition);
            if let Some(next) = shared.done.get(&partition)
                && commit
                    .add_partition_offset(&self.topic, partition, Offset::Offset(*next))
                    .is_err()
            {
                tracing::debug!(partition, "cannot list the revoked partition for commit");
            }
        }
        for element in revoked.elements_for_topic(&self.topic) {
            // A later assignment starts from the committed offset, not from this.
            shared.done.remove(&element.partition());
        }
        if commit.count() > 0 {
            // Finished work is committed before another member takes the partitions; if this
            // fails the new owner re-reads a few batches and the applier skips them.
            match consumer.commit(&commit, CommitMode::Sync) {
                Ok(()) => tracing::info!(
                    partitions = commit.count(),
                    "committed offsets before the partitions were revoked"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "offset commit before revocation failed; batches will be read again and skipped")
                }
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(assigned) => {
                let partitions: Vec<i32> = assigned
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                tracing::info!(?partitions, "kafka partitions assigned");
                if let Ok(mut shared) = self.shared.lock() {
                    shared.changed.extend(partitions);
                }
            }
            Rebalance::Revoke(_) => tracing::info!("kafka partitions revoked"),
            Rebalance::Error(e) => tracing::warn!(error = %e, "kafka rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::debug!(error = %e, "offset commit failed; the batches will be read again and skipped");
        }
    }
}

/// A partition paused after a transient failure, or waiting at a held batch: the offset to
/// come back to, when, and the delay that led there.
#[derive(Debug, Clone, Copy)]
struct Hold {
    offset: i64,
    until: Instant,
    backoff: Duration,
}

/// Runs the consumer until `shutdown` (or, in `Drain` mode, until the topic is drained).
pub async fn run_consumer<H: BatchHandler>(
    kafka: &KafkaSettings,
    settings: &ConsumerSettings,
    handler: &mut H,
    mode: RunMode,
    shutdown: CancellationToken,
) -> Result<ConsumerReport, ConsumeError<H::Error>> {
    kafka.validate()?;
    let shared = Arc::new(Mutex::new(Shared::default()));
    let context = ConsumerCtx {
        topic: kafka.topic.clone(),
        shared: shared.clone(),
        reachability: Reachability::default(),
    };
    let consumer: StreamConsumer<ConsumerCtx> =
        StreamConsumer::from_config_and_context(&client_config::consumer(kafka), context)
            .map_err(|e| KafkaTransportError::Config(format!("cannot create the consumer: {e}")))?;
    consumer
        .subscribe(&[&kafka.topic])
        .map_err(KafkaTransportError::client("subscribe to the topic"))?;
    let mut run = Run {
        consumer: &consumer,
        topic: &kafka.topic,
        settings,
        shared: &shared,
        holds: BTreeMap::new(),
        waiting: BTreeMap::new(),
        last_waited: BTreeMap::new(),
        furthest: BTreeMap::new(),
        expect: BTreeMap::new(),
        report: ConsumerReport::default(),
        warned_missing_topic: false,
    };
    let result = run.consume(handler, mode, &shutdown).await;
    run.commit_done(CommitMode::Sync);
    result?;
    run.report.held = run
        .waiting
        .iter()
        .chain(run.holds.iter())
        .map(|(p, h)| (*p, h.offset))
        .collect();
    Ok(run.report)
}

struct Run<'a> {
    consumer: &'a StreamConsumer<ConsumerCtx>,
    topic: &'a str,
    settings: &'a ConsumerSettings,
    shared: &'a Mutex<Shared>,
    /// Partitions paused after a transient failure.
    holds: BTreeMap<i32, Hold>,
    /// Partitions flowing past a held batch: nothing from its offset on is committed.
    waiting: BTreeMap<i32, Hold>,
    /// The batch each partition last came back to, and the delay it had waited.
    last_waited: BTreeMap<i32, (i64, Duration)>,
    /// The furthest offset handled per partition (records read again after a seek back are
    /// not new work).
    furthest: BTreeMap<i32, i64>,
    /// After a seek back: the offset the partition must deliver next (older fetched records
    /// of it are dropped until then).
    expect: BTreeMap<i32, i64>,
    report: ConsumerReport,
    warned_missing_topic: bool,
}

impl Run<'_> {
    async fn consume<H: BatchHandler>(
        &mut self,
        handler: &mut H,
        mode: RunMode,
        shutdown: &CancellationToken,
    ) -> Result<(), ConsumeError<H::Error>> {
        let started = Instant::now();
        // Drain mode stops once nothing that was already in the topic when it started has
        // arrived for the idle window: records produced later (a live site's new batches and
        // keepalives) are applied too, but do not keep it running.
        let drain_from_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(i64::MAX, |d| {
                i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
            });
        let mut last_record = Instant::now();
        let mut last_tick = Instant::now();
        let mut assigned = false;
        loop {
            self.forget_rebalanced();
            self.release_due_holds();
            self.come_back_to_held();
            if last_tick.elapsed() >= self.settings.tick_interval {
                last_tick = Instant::now();
                handler.tick().await.map_err(ConsumeError::Handler)?;
            }
            if mode == RunMode::Drain {
                if !assigned {
                    assigned = self.consumer.assignment().is_ok_and(|a| a.count() > 0);
                    if assigned {
                        last_record = Instant::now();
                    } else if started.elapsed() >= self.settings.assignment_timeout {
                        return Err(KafkaTransportError::Topic {
                            topic: self.topic.to_owned(),
                            problem: format!(
                                "no partition was assigned to this consumer within {} s; is the \
                                 broker reachable and the topic created ('tributary kafka init')?",
                                self.settings.assignment_timeout.as_secs()
                            ),
                        }
                        .into());
                    }
                } else if last_record.elapsed() >= self.settings.idle_window {
                    return Ok(());
                }
            }
            let wait = self.next_wakeup(last_tick);
            let message = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                received = tokio::time::timeout(wait, self.consumer.recv()) => received,
            };
            let message = match message {
                Err(_elapsed) => continue,
                Ok(Err(e)) => {
                    self.report_consumer_error(&e);
                    continue;
                }
                Ok(Ok(message)) => message.detach(),
            };
            self.consumer.context().reachability.reachable("apply");
            let partition = message.partition();
            let offset = message.offset();
            if message.topic() != self.topic || self.holds.contains_key(&partition) {
                continue;
            }
            if let Some(expected) = self.expect.get(&partition) {
                if offset != *expected {
                    continue;
                }
                self.expect.remove(&partition);
            }
            let produced_before_start = message
                .timestamp()
                .to_millis()
                .is_none_or(|ms| ms < drain_from_ms);
            let first_time = self.furthest.get(&partition).is_none_or(|f| offset > *f);
            if first_time {
                self.furthest.insert(partition, offset);
            }
            match handler.handle(decode(message)).await {
                Ok(Handled::Done) => {
                    if produced_before_start && first_time {
                        last_record = Instant::now();
                    }
                    self.done(partition, offset);
                }
                Ok(Handled::Hold { reason }) => {
                    tracing::debug!(partition, offset, reason, "batch held; reading on past it");
                    self.wait(partition, offset);
                }
                Err(e) if H::is_transient(&e) => {
                    let backoff = self.next_backoff(partition);
                    tracing::warn!(partition, offset, error = %e, retry_in_ms = backoff.as_millis() as u64, "batch not applied now; holding its partition and trying again");
                    self.hold(partition, offset, backoff);
                }
                Err(e) => return Err(ConsumeError::Handler(e)),
            }
        }
    }

    /// Consumer errors are librdkafka's to retry; a missing topic is worth one warning.
    fn report_consumer_error(&mut self, error: &KafkaError) {
        use rdkafka::error::RDKafkaErrorCode as C;
        let missing_topic = matches!(
            error.rdkafka_error_code(),
            Some(C::UnknownTopicOrPartition | C::UnknownTopic)
        );
        if missing_topic && !self.warned_missing_topic {
            self.warned_missing_topic = true;
            tracing::warn!(topic = self.topic, %error, "the topic does not exist (yet); create it with 'tributary kafka init'");
        } else {
            tracing::debug!(%error, "kafka consumer error");
        }
    }

    fn next_wakeup(&self, last_tick: Instant) -> Duration {
        let now = Instant::now();
        let tick = (last_tick + self.settings.tick_interval).saturating_duration_since(now);
        let hold = self
            .holds
            .values()
            .chain(self.waiting.values())
            .map(|h| h.until.saturating_duration_since(now))
            .min()
            .unwrap_or(tick);
        tick.min(hold).max(Duration::from_millis(10))
    }

    /// The handler finished `offset`: commit the offset after it (unless an earlier batch of
    /// the partition is held).
    fn done(&mut self, partition: i32, offset: i64) {
        self.report.done += 1;
        if self.waiting.contains_key(&partition) {
            return;
        }
        if let Ok(mut shared) = self.shared.lock() {
            shared.done.insert(partition, offset + 1);
        }
        let mut list = TopicPartitionList::new();
        if list
            .add_partition_offset(self.topic, partition, Offset::Offset(offset + 1))
            .is_ok()
        {
            match self.consumer.commit(&list, CommitMode::Async) {
                Ok(()) => {
                    self.report.committed.insert(partition, offset + 1);
                }
                Err(e) => {
                    tracing::debug!(partition, error = %e, "offset commit not sent; the batch may be read again and skipped")
                }
            }
        }
    }

    fn hold(&mut self, partition: i32, offset: i64, backoff: Duration) {
        if let Some(list) = self.partition_list(partition)
            && let Err(e) = self.consumer.pause(&list)
        {
            tracing::debug!(partition, error = %e, "cannot pause partition; its records are dropped until the retry");
        }
        self.holds.insert(
            partition,
            Hold {
                offset,
                until: Instant::now() + backoff,
                backoff,
            },
        );
    }

    /// A batch at `offset` is held: commit nothing from it on, and come back to it after a
    /// delay (the first held batch of the partition counts).
    fn wait(&mut self, partition: i32, offset: i64) {
        if self.waiting.contains_key(&partition) {
            return;
        }
        let delay = match self.last_waited.get(&partition) {
            Some((last, delay)) if *last == offset => (*delay * 2).min(MAX_HOLD_RETRY),
            _ => self.settings.hold_retry,
        };
        self.waiting.insert(
            partition,
            Hold {
                offset,
                until: Instant::now() + delay,
                backoff: delay,
            },
        );
    }

    /// Partitions waiting at a held batch whose delay has passed read on from that batch
    /// again.
    fn come_back_to_held(&mut self) {
        let now = Instant::now();
        let due: Vec<(i32, Hold)> = self
            .waiting
            .iter()
            .filter(|(p, h)| h.until <= now && !self.holds.contains_key(p))
            .map(|(p, h)| (*p, *h))
            .collect();
        for (partition, held) in due {
            let sought = self.consumer.seek(
                self.topic,
                partition,
                Offset::Offset(held.offset),
                Duration::from_secs(5),
            );
            if let Err(e) = sought {
                tracing::debug!(partition, error = %e, "seek back failed; trying again later");
                if let Some(h) = self.waiting.get_mut(&partition) {
                    h.until = now + self.settings.hold_retry;
                }
                continue;
            }
            self.waiting.remove(&partition);
            self.last_waited
                .insert(partition, (held.offset, held.backoff));
            self.expect.insert(partition, held.offset);
        }
    }

    fn next_backoff(&self, partition: i32) -> Duration {
        let previous = self
            .holds
            .get(&partition)
            .map_or(Duration::from_millis(500), |h| h.backoff * 2);
        previous.min(Duration::from_secs(30))
    }

    /// Seeks held partitions whose delay has passed back to their batch and resumes them.
    fn release_due_holds(&mut self) {
        let now = Instant::now();
        let due: Vec<(i32, Hold)> = self
            .holds
            .iter()
            .filter(|(_, h)| h.until <= now)
            .map(|(p, h)| (*p, *h))
            .collect();
        for (partition, hold) in due {
            let sought = self.consumer.seek(
                self.topic,
                partition,
                Offset::Offset(hold.offset),
                Duration::from_secs(5),
            );
            if let Err(e) = sought {
                tracing::debug!(partition, error = %e, "seek back failed; trying again later");
                if let Some(h) = self.holds.get_mut(&partition) {
                    h.until = now + self.settings.hold_retry;
                }
                continue;
            }
            if let Some(list) = self.partition_list(partition)
                && let Err(e) = self.consumer.resume(&list)
            {
                tracing::debug!(partition, error = %e, "resume failed");
            }
            self.holds.remove(&partition);
            self.expect.insert(partition, hold.offset);
        }
    }

    /// Partitions that moved in a rebalance start over from their committed offset.
    fn forget_rebalanced(&mut self) {
        let changed = match self.shared.lock() {
            Ok(mut shared) => std::mem::take(&mut shared.changed),
            Err(_) => return,
        };
        for partition in changed {
            self.holds.remove(&partition);
            self.waiting.remove(&partition);
            self.last_waited.remove(&partition);
            self.furthest.remove(&partition);
            self.expect.remove(&partition);
        }
    }

    fn partition_list(&self, partition: i32) -> Option<TopicPartitionList> {
        let mut list = TopicPartitionList::new();
        list.add_partition(self.topic, partition);
        Some(list)
    }

    /// Commits everything done (at the end of a run).
    fn commit_done(&mut self, mode: CommitMode) {
        let done = match self.shared.lock() {
            Ok(shared) => shared.done.clone(),
            Err(_) => return,
        };
        let mut list = TopicPartitionList::new();
        for (partition, next) in &done {
            let _ = list.add_partition_offset(self.topic, *partition, Offset::Offset(*next));
        }
        if list.count() > 0
            && let Err(e) = self.consumer.commit(&list, mode)
        {
            tracing::warn!(error = %e, "final offset commit failed; the last batches will be read again and skipped");
        }
    }
}
