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
//! re-seed that supersedes the held one). The consumer later passes back over the held
//! batches, handing over only those (see `partition` for when, and what is remembered). So a
//! site held at a gap never holds the other sites that hash to its partition.
//!
//! Pausing: when the handler fails transiently (HQ unreachable), the partition is paused,
//! nothing past the batch is committed, and after a backoff the consumer seeks back to the
//! batch and tries it again. Records of a paused partition that librdkafka had already fetched
//! are dropped (they are read again after the seek). Other partitions keep flowing.

mod partition;

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
use crate::metrics;
use crate::record::{Received, decode};
use crate::settings::KafkaSettings;
use partition::{Admit, Lineage, Outcome, PartitionState};

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

    /// Whether a held batch (`sequence` of `site`'s `epoch`) may be handled otherwise now,
    /// e.g. because the site's progress at HQ moved since it was held. Asked before the
    /// consumer reads back to it; the default says yes.
    fn may_move(
        &mut self,
        site: &str,
        epoch: u64,
        sequence: u64,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send {
        let _ = (site, epoch, sequence);
        async { Ok(true) }
    }

    /// Whether an error may pass (the record is tried again later).
    fn is_transient(error: &Self::Error) -> bool;
}

/// Consumer tuning.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// How long held batches wait before the consumer considers reading back to them
    /// (doubled while nothing changes, up to [`MAX_HOLD_RETRY`]); a batch of a held site
    /// done meanwhile makes it consider them at once.
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

/// The longest wait before held batches are considered again.
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
    /// Partitions held (waiting at a gap, or paused) when the run ended, with the first
    /// offset they wait at.
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
        partitions: BTreeMap::new(),
        report: ConsumerReport::default(),
        warned_missing_topic: false,
    };
    let result = run.consume(handler, mode, &shutdown).await;
    run.commit_done(CommitMode::Sync);
    result?;
    run.report.held = run
        .partitions
        .iter()
        .filter_map(|(p, state)| Some((*p, state.waits_at()?)))
        .collect();
    Ok(run.report)
}

struct Run<'a> {
    consumer: &'a StreamConsumer<ConsumerCtx>,
    topic: &'a str,
    settings: &'a ConsumerSettings,
    shared: &'a Mutex<Shared>,
    /// What is kept per partition since it was assigned.
    partitions: BTreeMap<i32, PartitionState>,
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
        // arrived for the idle window, and no pass back over held batches is under way:
        // records produced later (a live site's new batches and keepalives) are applied too,
        // but do not keep it running.
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
            self.retry_due();
            self.pass_back_where_due(handler).await?;
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
                } else if last_record.elapsed() >= self.settings.idle_window && !self.catching_up()
                {
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
            // A rebalance runs inside recv: forget moved partitions before using their state.
            self.forget_rebalanced();
            self.consumer.context().reachability.reachable("apply");
            if message.topic() != self.topic {
                continue;
            }
            let produced_before_start = message
                .timestamp()
                .to_millis()
                .is_none_or(|ms| ms < drain_from_ms);
            let received = decode(message);
            let (partition, offset) = (received.partition(), received.offset());
            let (lineage, sequence) = lineage_of(&received);
            let now = Instant::now();
            let hold_retry = self.settings.hold_retry;
            let state = self
                .partitions
                .entry(partition)
                .or_insert_with(|| PartitionState::new(hold_retry));
            let first_time = match state.admit(offset, &lineage, now) {
                Admit::Drop => continue,
                Admit::Skip => {
                    metrics::record("skipped");
                    self.commit_moved(partition);
                    continue;
                }
                Admit::Handle { first_time } => first_time,
            };
            let outcome = match handler.handle(received).await {
                Ok(Handled::Done) => {
                    self.report.done += 1;
                    if produced_before_start || !first_time {
                        last_record = Instant::now();
                    }
                    Outcome::Done
                }
                Ok(Handled::Hold { reason }) => {
                    tracing::debug!(partition, offset, reason, "batch held; reading on past it");
                    Outcome::Held
                }
                Err(e) if H::is_transient(&e) => {
                    self.pause_for_retry(partition, offset, &e);
                    continue;
                }
                Err(e) => return Err(ConsumeError::Handler(e)),
            };
            metrics::record(match outcome {
                Outcome::Done => "done",
                Outcome::Held => "held",
            });
            if let Some(state) = self.partitions.get_mut(&partition) {
                state.finished(offset, lineage, sequence, outcome, Instant::now());
            }
            self.commit_moved(partition);
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
        let due = self
            .partitions
            .values()
            .filter_map(PartitionState::next_due)
            .map(|at| at.saturating_duration_since(now))
            .min()
            .unwrap_or(tick);
        tick.min(due).max(Duration::from_millis(10))
    }

    fn catching_up(&self) -> bool {
        let now = Instant::now();
        self.partitions.values().any(|p| p.catching_up(now))
    }

    /// Commits the partition's commit point if it moved (asynchronously; see the module
    /// documentation for why a lost commit is harmless).
    fn commit_moved(&mut self, partition: i32) {
        let Some(state) = self.partitions.get_mut(&partition) else {
            return;
        };
        metrics::held(partition, state.held_lineages());
        let Some(next) = state.take_commit() else {
            return;
        };
        metrics::committed(partition, next);
        if let Ok(mut shared) = self.shared.lock() {
            shared.done.insert(partition, next);
        }
        let mut list = TopicPartitionList::new();
        if list
            .add_partition_offset(self.topic, partition, Offset::Offset(next))
            .is_ok()
        {
            match self.consumer.commit(&list, CommitMode::Async) {
                Ok(()) => {
                    self.report.committed.insert(partition, next);
                }
                Err(e) => {
                    tracing::debug!(partition, error = %e, "offset commit not sent; the batch may be read again and skipped")
                }
            }
        }
    }

    fn pause_for_retry(&mut self, partition: i32, offset: i64, error: &dyn std::error::Error) {
        let Some(state) = self.partitions.get_mut(&partition) else {
            return;
        };
        let backoff = state.pause_for_retry(offset, Instant::now());
        tracing::warn!(partition, offset, %error, retry_in_ms = backoff.as_millis() as u64, "batch not applied now; holding its partition and trying again");
        if let Err(e) = self.consumer.pause(&self.partition_list(partition)) {
            tracing::debug!(partition, error = %e, "cannot pause partition; its records are dropped until the retry");
        }
    }

    /// Seeks partitions paused after a transient failure back to their batch and resumes
    /// them, once their backoff has passed.
    fn retry_due(&mut self) {
        let now = Instant::now();
        let due: Vec<(i32, i64)> = self
            .partitions
            .iter()
            .filter_map(|(p, state)| Some((*p, state.due_retry(now)?)))
            .collect();
        for (partition, offset) in due {
            if !self.seek(partition, offset) {
                if let Some(state) = self.partitions.get_mut(&partition) {
                    state.postpone_retry(now + self.settings.hold_retry);
                }
                continue;
            }
            if let Err(e) = self.consumer.resume(&self.partition_list(partition)) {
                tracing::warn!(partition, error = %e, "resume failed");
            }
            if let Some(state) = self.partitions.get_mut(&partition) {
                state.retry_resumed();
            }
        }
    }

    /// Partitions whose held batches are due for a pass back seek to the first of them, if
    /// the handler says one of them may move now; otherwise they wait longer.
    async fn pass_back_where_due<H: BatchHandler>(
        &mut self,
        handler: &mut H,
    ) -> Result<(), ConsumeError<H::Error>> {
        let now = Instant::now();
        let due: Vec<_> = self
            .partitions
            .iter()
            .filter_map(|(p, state)| Some((*p, state.due_pass(now)?)))
            .collect();
        for (partition, held) in due {
            let mut may_move = false;
            for (lineage, from) in held {
                let Some(Lineage { site, epoch }) = lineage else {
                    may_move = true;
                    break;
                };
                match handler.may_move(&site, epoch, from.sequence).await {
                    Ok(true) => {
                        may_move = true;
                        break;
                    }
                    Ok(false) => {}
                    // Cannot tell now (HQ unreachable): read back and let the batch say.
                    Err(e) if H::is_transient(&e) => {
                        may_move = true;
                        break;
                    }
                    Err(e) => return Err(ConsumeError::Handler(e)),
                }
            }
            let Some(state) = self.partitions.get_mut(&partition) else {
                continue;
            };
            let first_held = state.first_held();
            match first_held {
                Some(offset) if may_move => {
                    if self.seek(partition, offset) {
                        if let Some(state) = self.partitions.get_mut(&partition) {
                            state.pass_started();
                        }
                    } else if let Some(state) = self.partitions.get_mut(&partition) {
                        state.pass_put_off(now);
                    }
                }
                _ => state.pass_put_off(now),
            }
        }
        Ok(())
    }

    fn seek(&self, partition: i32, offset: i64) -> bool {
        let sought = self.consumer.seek(
            self.topic,
            partition,
            Offset::Offset(offset),
            Duration::from_secs(5),
        );
        if let Err(e) = &sought {
            tracing::warn!(partition, offset, error = %e, "seek back failed; trying again later");
        }
        sought.is_ok()
    }

    /// Partitions that moved in a rebalance start over from their committed offset, and
    /// unpaused: librdkafka keeps a partition paused across a revocation and a new assignment,
    /// and the state that would have resumed it after its backoff is forgotten here, so one
    /// paused when HQ was unreachable would otherwise never be read again.
    fn forget_rebalanced(&mut self) {
        let changed = match self.shared.lock() {
            Ok(mut shared) => std::mem::take(&mut shared.changed),
            Err(_) => return,
        };
        for partition in changed {
            self.partitions.remove(&partition);
            metrics::held(partition, 0);
            if let Err(e) = self.consumer.resume(&self.partition_list(partition)) {
                tracing::debug!(partition, error = %e, "resume after a rebalance failed");
            }
        }
    }

    fn partition_list(&self, partition: i32) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        list.add_partition(self.topic, partition);
        list
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

/// The lineage and sequence of a record (records that are not batches have neither).
fn lineage_of(received: &Received) -> (Option<Lineage>, u64) {
    match received {
        Received::Batch(batch) => (
            Some(Lineage {
                site: batch.site_id.clone(),
                epoch: batch.epoch,
            }),
            batch.sequence,
        ),
        Received::Unreadable { .. } => (None, 0),
    }
}
