//! The integration publisher, run by `tributary apply` when `[hq.integration]` is on: reads
//! HQ's integration outbox in commit order, sends each entry's change events (the Debezium
//! envelope, masked) to Kafka, and removes the entries the broker took. At least once: a
//! failed round is sent again whole after a pause; the applier never waits for it (changes
//! wait in the outbox, which `tributary_apply_integration_outbox_entries` shows).

use anyhow::{Context, Result, bail};
use mysql_async::{Conn, Opts, OptsBuilder};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tributary_apply::integration::{
    EnvelopeSettings, MaskAction, OutboxEntry, OutboxReader, records_for, table_topic,
    transaction_topic,
};
use tributary_apply::metrics as apply_metrics;
use tributary_kafka::{Event, EventProducer, KafkaSettings, create_topics};
use tributary_schema::{Catalog, Policy, SchemaMap};

/// Outbox entries read per round at most.
const ENTRIES_PER_ROUND: u32 = 64;
/// Changes per round at most (an entry larger than this goes alone): bounds memory.
const CHANGES_PER_ROUND: u64 = 20_000;
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long `apply --once` keeps trying to publish what waits before leaving it for the next
/// start.
const DRAIN_PATIENCE: Duration = Duration::from_secs(120);
/// How long a stop waits for the publishing round in progress.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// `[hq.integration]`, resolved.
#[derive(Clone)]
pub struct IntegrationSettings {
    /// Brokers, client properties, and the partitions and replication factor of the topics
    /// it creates (`topic` is the transaction topic).
    pub kafka: KafkaSettings,
    pub envelope: EnvelopeSettings,
    pub hq: Opts,
    pub policy: Policy,
    pub poll_interval: Duration,
}

/// Without HQ's connection options (they hold its password).
impl std::fmt::Debug for IntegrationSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntegrationSettings")
            .field("kafka", &self.kafka)
            .field("envelope", &self.envelope)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

/// A running publisher.
pub struct IntegrationPublisher {
    task: JoinHandle<()>,
    stop: CancellationToken,
    drain: CancellationToken,
}

impl IntegrationPublisher {
    /// Checks the masking rules and tables against HQ's schema, then starts publishing.
    /// Creating the topics and reaching the broker happen in the background: the applier
    /// does not wait for Kafka.
    pub async fn start(mut settings: IntegrationSettings) -> Result<IntegrationPublisher> {
        let (topics, columns) = topics_to_create(&settings).await?;
        settings.envelope.published_columns = Some(columns);
        let reader = OutboxReader::connect(settings.hq.clone())
            .await
            .context("hq.integration: opening HQ's integration outbox")?;
        let producer = EventProducer::new(&settings.kafka).context("hq.integration")?;
        apply_metrics::register_integration();
        let stop = CancellationToken::new();
        let drain = CancellationToken::new();
        let publishing = Publishing {
            settings,
            reader: Some(reader),
            producer,
            waiting_for_lock: false,
            topics: HashSet::new(),
            stop: stop.clone(),
            drain: drain.clone(),
        };
        let task = tokio::spawn(publishing.run(topics));
        Ok(IntegrationPublisher { task, stop, drain })
    }

    /// Stops publishing. With `drain`, what waits in the outbox is published first (for a
    /// bounded time when the broker cannot be reached); otherwise it stops after the round
    /// in progress, and what waits is published at the next start.
    pub async fn finish(self, drain: bool) {
        if drain {
            self.drain.cancel();
        }
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the integration publisher ended abnormally");
        }
    }
}

/// Every table topic (of the published tables) and the transaction topic, and the columns HQ
/// syncs per table (only those are published); errors name the configuration field that asks
/// for a table or column HQ does not sync.
async fn topics_to_create(
    settings: &IntegrationSettings,
) -> Result<(Vec<String>, BTreeMap<String, BTreeSet<String>>)> {
    let envelope = &settings.envelope;
    let opts = OptsBuilder::from_opts(settings.hq.clone());
    let mut conn = Conn::new(opts)
        .await
        .context("hq.integration: connecting to HQ")?;
    let catalog = Catalog::introspect(&mut conn, &envelope.database).await?;
    let schema = SchemaMap::build(&catalog, &settings.policy)?;
    drop(conn);
    check_against_schema(envelope, &schema)?;
    let tables: BTreeSet<&str> = match &envelope.tables {
        Some(tables) => tables.iter().map(String::as_str).collect(),
        None => schema.tables().map(|t| t.name.as_str()).collect(),
    };
    let mut topics: Vec<String> = tables.iter().map(|t| table_topic(envelope, t)).collect();
    topics.push(transaction_topic(envelope));
    let columns = schema
        .tables()
        .map(|t| {
            let names = t.columns.iter().map(|c| c.name.clone()).collect();
            (t.name.clone(), names)
        })
        .collect();
    Ok((topics, columns))
}

fn check_against_schema(envelope: &EnvelopeSettings, schema: &SchemaMap) -> Result<()> {
    for table in envelope.tables.iter().flatten() {
        if schema.table(table).is_none() {
            bail!(
                "hq.integration.tables names `{table}`, which HQ does not sync (see `tributary \
                 schema show`); remove it or check its spelling"
            );
        }
    }
    for (table, column, action) in envelope.masking.rules() {
        let action = match action {
            MaskAction::Hash => "hash",
            MaskAction::Drop => "drop",
        };
        let field = format!("hq.integration.mask.\"{table}.{column}\" = \"{action}\"");
        let Some(map) = schema.table(table) else {
            bail!("{field}: HQ does not sync a table `{table}`; check its spelling");
        };
        if !map.columns.iter().any(|c| c.name == column) {
            let known: Vec<&str> = map.columns.iter().map(|c| c.name.as_str()).collect();
            bail!(
                "{field}: `{table}` has no synced column `{column}`; its columns are {}",
                known.join(", ")
            );
        }
    }
    Ok(())
}

struct Publishing {
    settings: IntegrationSettings,
    /// HQ's outbox on a connection of its own; dropped after a failure and made again.
    reader: Option<OutboxReader>,
    producer: EventProducer,
    /// Another applier holds the publisher lock (said once).
    waiting_for_lock: bool,
    /// Topics created (or found) so far: a table HQ starts syncing later gets its topic
    /// before its first event is sent.
    topics: HashSet<String>,
    stop: CancellationToken,
    drain: CancellationToken,
}

impl Publishing {
    async fn run(mut self, topics: Vec<String>) {
        let mut backoff = Backoff::default();
        let mut failing_since: Option<std::time::Instant> = None;
        while let Err(e) = create_topics(&self.settings.kafka, &topics).await {
            tracing::warn!(
                error = %e,
                "the integration topics cannot be created yet; retrying (applied changes wait \
                 in HQ's outbox)"
            );
            if self.gives_up(&mut failing_since) || !self.pause(&mut backoff).await {
                return;
            }
        }
        self.topics.extend(topics.iter().cloned());
        tracing::info!(
            topics = topics.len(),
            prefix = %self.settings.envelope.topic_prefix,
            "publishing applied changes on the integration topics"
        );
        let mut backoff = Backoff::default();
        let mut failing_since = None;
        loop {
            let Some(outcome) = self.round_or_stop().await else {
                return;
            };
            match outcome {
                Ok(0) if self.stop.is_cancelled() => return,
                Ok(0) => {
                    tokio::select! {
                        () = tokio::time::sleep(self.settings.poll_interval) => {}
                        () = self.stop.cancelled() => {}
                    }
                }
                Ok(_) => {
                    backoff = Backoff::default();
                    failing_since = None;
                }
                Err(e) => {
                    apply_metrics::integration_failed();
                    // A new HQ connection and a new producer for the next round: neither
                    // a dropped connection nor a producer librdkafka gave up on is kept.
                    self.reader = None;
                    match EventProducer::new(&self.settings.kafka) {
                        Ok(producer) => self.producer = producer,
                        Err(e) => tracing::warn!(error = %e, "cannot make a new producer"),
                    }
                    tracing::warn!(error = %format!("{e:#}"), "publishing applied changes failed; retrying");
                    if self.gives_up(&mut failing_since) || !self.pause(&mut backoff).await {
                        return;
                    }
                }
            }
            if self.stop.is_cancelled() && !self.drain.is_cancelled() {
                return;
            }
        }
    }

    /// A round; when stopped meanwhile (without a drain), the round gets [`STOP_GRACE`] to
    /// finish, and `None` when it does not: its entries stay in the outbox for the next start.
    async fn round_or_stop(&mut self) -> Option<Result<usize>> {
        let stop = self.stop.clone();
        let drain = self.drain.clone();
        let round = self.round();
        tokio::pin!(round);
        tokio::select! {
            outcome = &mut round => Some(outcome),
            () = stop.cancelled(), if !drain.is_cancelled() => {
                if drain.is_cancelled() {
                    // A drain was asked for with the stop: the round finishes.
                    return Some(round.await);
                }
                match tokio::time::timeout(STOP_GRACE, round).await {
                    Ok(outcome) => Some(outcome),
                    Err(_) => {
                        tracing::info!(
                            "stopping with a publishing round unconfirmed; its changes stay in \
                             HQ's outbox and are sent again at the next start"
                        );
                        None
                    }
                }
            }
        }
    }

    /// Publishes the oldest outbox entries; returns how many were published.
    async fn round(&mut self) -> Result<usize> {
        if self.reader.is_none() {
            self.reader = Some(OutboxReader::connect(self.settings.hq.clone()).await?);
        }
        let Some(reader) = self.reader.as_mut() else {
            return Ok(0);
        };
        if !reader.may_publish().await? {
            if !self.waiting_for_lock {
                tracing::info!(
                    "another applier publishes the integration topics; this one stands by"
                );
                self.waiting_for_lock = true;
            }
            return Ok(0);
        }
        if std::mem::take(&mut self.waiting_for_lock) {
            tracing::info!("this applier publishes the integration topics now");
        }
        report_backlog(reader).await?;
        let entries = reader.oldest(ENTRIES_PER_ROUND, CHANGES_PER_ROUND).await?;
        if entries.is_empty() {
            return Ok(0);
        }
        let records: Vec<_> = entries
            .iter()
            .flat_map(|entry: &OutboxEntry| records_for(entry, &self.settings.envelope))
            .collect();
        let new_topics: BTreeSet<&String> = records
            .iter()
            .map(|r| &r.topic)
            .filter(|t| !self.topics.contains(*t))
            .collect();
        if !new_topics.is_empty() {
            let new_topics: Vec<String> = new_topics.into_iter().cloned().collect();
            create_topics(&self.settings.kafka, &new_topics).await?;
            self.topics.extend(new_topics);
        }
        let events: Vec<Event<'_>> = records
            .iter()
            .map(|r| Event {
                topic: &r.topic,
                key: &r.key,
                value: &r.value,
            })
            .collect();
        let sent = self.producer.publish(&events).await?;
        let ids: Vec<u64> = entries.iter().map(|e| e.id).collect();
        if let Some(reader) = self.reader.as_mut() {
            reader.remove(&ids).await?;
        }
        apply_metrics::integration_published(sent as u64);
        tracing::debug!(
            entries = ids.len(),
            records = sent,
            "published applied changes"
        );
        Ok(ids.len())
    }

    /// Whether a drain stops trying: after [`DRAIN_PATIENCE`] of failures in a row.
    fn gives_up(&self, failing_since: &mut Option<std::time::Instant>) -> bool {
        let since = *failing_since.get_or_insert_with(std::time::Instant::now);
        let gives_up = self.drain.is_cancelled() && since.elapsed() >= DRAIN_PATIENCE;
        if gives_up {
            tracing::warn!(
                "stopping with applied changes still waiting in HQ's integration outbox; they \
                 are published at the next start"
            );
        }
        gives_up
    }

    /// Waits out the backoff; `false` when stopped meanwhile without a drain.
    async fn pause(&self, backoff: &mut Backoff) -> bool {
        let delay = backoff.next();
        if self.drain.is_cancelled() {
            tokio::time::sleep(delay).await;
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = self.stop.cancelled() => false,
        }
    }
}

/// Sets the outbox gauges from what waits in it.
async fn report_backlog(reader: &mut OutboxReader) -> Result<()> {
    let (entries, oldest_ms) = reader.backlog().await?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let age = oldest_ms.map_or(0, |t| now_ms.saturating_sub(t) / 1000);
    apply_metrics::integration_backlog(entries, age);
    Ok(())
}

/// A pause doubling from a second up to thirty.
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(BACKOFF_MIN)
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let delay = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        delay
    }
}
