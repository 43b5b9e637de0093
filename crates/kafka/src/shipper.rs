//! The shipper: moves the site's committed batches from the spool to the Kafka topic, in
//! (epoch, sequence) order, and removes each from the spool only after its delivery report
//! said the broker has it (acks=all). DESIGN.md invariant 1.
//!
//! Design: one producer session at a time. A session lists the spool, hands batches to the
//! idempotent producer while fewer than `max_in_flight_batches` (and bytes) await their
//! report (bounded memory, whatever the backlog), and waits on the reports in send order. The
//! producer has no local delivery timeout: while the broker is unreachable, librdkafka keeps
//! the in-flight batches and reconnects with its own backoff; the shipper waits without
//! polling, and the outage is logged once (see `context`). A delivery error that can pass
//! (the producer was purged) ends the session: the reports still outstanding are awaited,
//! and a new session starts after a backoff from what the spool still holds. A refusal that
//! cannot pass (batch too large, no such topic, not authorised) stops the shipper with the
//! remedy.
//!
//! Order: one site's batches go to one partition (key = site id); the idempotent producer
//! keeps them in order across retries (at most 5 requests in flight). A batch whose delivery
//! failed is sent again only by a later session, after every batch sent before it has its
//! report, so the spool never has a hole that a later batch skipped over, except when the
//! broker refused a batch for good (the shipper stops there).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;
use tributary_transport::{Spool, SpooledBatch};

use crate::client_config;
use crate::context::{Reachability, TransportContext};
use crate::error::{KafkaTransportError, is_transient_kafka, remedy_for};
use crate::record::batch_headers;
use crate::settings::{KafkaSettings, ShipperSettings};

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Batches taken from the spool per listing: enough to keep the in-flight window full
/// between listings, few enough that memory does not grow with the spool.
const LISTING_LIMIT: usize = 1024;

/// Counters the shipper keeps (shared so tests, benchmarks and progress lines read them).
#[derive(Debug, Default)]
pub struct ShipperProgress {
    /// Batches delivered and removed from the spool.
    pub batches: AtomicU64,
    /// Their bytes.
    pub bytes: AtomicU64,
    /// Batches handed to the producer and not yet reported.
    pub in_flight: AtomicU64,
    /// Sessions ended by a transient error.
    pub restarts: AtomicU64,
}

/// Each change moves the counters above and the served metrics (`tributary_ship_*`) together.
impl ShipperProgress {
    /// A batch was handed to the producer.
    pub(crate) fn sent(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        crate::metrics::batch_sent();
    }

    /// A batch's delivery report arrived, whatever it said.
    pub(crate) fn reported(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::batch_reported();
    }

    /// A batch of `bytes` was acknowledged and removed from the spool.
    pub(crate) fn delivered(&self, bytes: u64) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        crate::metrics::batch_delivered(bytes);
    }
}

/// Runs the shipper until `shutdown`; returns the progress counters.
///
/// At shutdown, outstanding reports are awaited up to `drain_timeout`; batches without a
/// report stay in the spool and are sent again next time (the applier skips duplicates).
pub async fn run_shipper<S: Spool + ?Sized>(
    spool: &S,
    kafka: &KafkaSettings,
    settings: &ShipperSettings,
    progress: Arc<ShipperProgress>,
    shutdown: CancellationToken,
) -> Result<(), KafkaTransportError> {
    kafka.validate()?;
    let mut backoff = BACKOFF_MIN;
    loop {
        let session = Session::new(spool, kafka, settings, &progress)?;
        match session.run(&shutdown).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() => {
                progress.restarts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    error = %e,
                    remedy = e.remedy().unwrap_or("none needed: it retries by itself"),
                    retry_in_ms = backoff.as_millis() as u64,
                    "shipping interrupted; batches stay in the spool"
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            Err(e) => return Err(e),
        }
    }
}

/// A batch handed to the producer.
struct InFlight {
    batch: SpooledBatch,
    bytes: usize,
}

struct Session<'a, S: Spool + ?Sized> {
    spool: &'a S,
    kafka: &'a KafkaSettings,
    settings: &'a ShipperSettings,
    progress: &'a ShipperProgress,
    producer: FutureProducer<TransportContext>,
    reachability: Arc<Reachability>,
    /// Listed, not yet sent.
    queue: VecDeque<SpooledBatch>,
    /// The last batch handed to the producer: later listings start after it.
    last_sent: Option<SpooledBatch>,
    in_flight_bytes: usize,
    /// Set when a delivery failed: send nothing more, settle what is outstanding, end.
    failed: Option<KafkaTransportError>,
}

type Pending = FuturesOrdered<
    std::pin::Pin<Box<dyn std::future::Future<Output = (InFlight, DeliveryOutcome)> + Send>>,
>;

type DeliveryOutcome = Result<(), KafkaError>;

impl<'a, S: Spool + ?Sized> Session<'a, S> {
    fn new(
        spool: &'a S,
        kafka: &'a KafkaSettings,
        settings: &'a ShipperSettings,
        progress: &'a ShipperProgress,
    ) -> Result<Self, KafkaTransportError> {
        let config = client_config::producer(kafka, spool.site_id());
        let reachability = Arc::new(Reachability::default());
        let context = TransportContext::new("ship", reachability.clone());
        let producer = FutureProducer::from_config_and_context(&config, context)
            .map_err(|e| KafkaTransportError::Config(format!("cannot create the producer: {e}")))?;
        Ok(Session {
            spool,
            kafka,
            settings,
            progress,
            producer,
            reachability,
            queue: VecDeque::new(),
            last_sent: None,
            in_flight_bytes: 0,
            failed: None,
        })
    }

    async fn run(mut self, shutdown: &CancellationToken) -> Result<(), KafkaTransportError> {
        let mut pending: Pending = FuturesOrdered::new();
        let mut last_listing: Option<Instant> = None;
        let mut last_progress = Instant::now();
        let mut reported = (0u64, 0u64);
        loop {
            if self.failed.is_none() {
                self.fill(&mut pending, &mut last_listing)?;
            }
            if let Some(error) = self.failed.take_if(|_| pending.is_empty()) {
                return Err(error);
            }
            if last_progress.elapsed() >= self.settings.progress_interval {
                last_progress = Instant::now();
                let now = (
                    self.progress.batches.load(Ordering::Relaxed),
                    self.progress.bytes.load(Ordering::Relaxed),
                );
                // Only when something moved: a long outage is not a line every 10 s.
                if now != reported {
                    tracing::info!(
                        shipped_batches = now.0,
                        shipped_mb = now.1 / 1_000_000,
                        in_flight = pending.len(),
                        waiting_in_spool = self.queue.len(),
                        broker_reachable = !self.reachability.in_outage(),
                        "shipping"
                    );
                    reported = now;
                }
            }
            let wait = if pending.is_empty() {
                self.settings.poll_interval
            } else {
                self.settings.progress_interval
            };
            tokio::select! {
                _ = shutdown.cancelled() => return self.drain(pending).await,
                Some((sent, outcome)) = pending.next() => self.settle(sent, outcome)?,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Lists the spool when the queue ran dry (at most every poll interval) and hands batches
    /// to the producer while the in-flight bounds allow.
    fn fill(
        &mut self,
        pending: &mut Pending,
        last_listing: &mut Option<Instant>,
    ) -> Result<(), KafkaTransportError> {
        let has_room = |s: &Self, pending: &Pending| {
            pending.len() < s.settings.max_in_flight_batches
                && (pending.is_empty() || s.in_flight_bytes < s.settings.max_in_flight_bytes)
        };
        if !has_room(self, pending) {
            return Ok(());
        }
        if self.queue.is_empty()
            && last_listing.is_none_or(|t| t.elapsed() >= self.settings.poll_interval)
        {
            *last_listing = Some(Instant::now());
            self.queue = self
                .spool
                .committed_after(self.last_sent, LISTING_LIMIT)?
                .into();
        }
        while has_room(self, pending) {
            let Some(batch) = self.queue.pop_front() else {
                break;
            };
            let sealed = match self.spool.read(&batch) {
                Ok(sealed) => sealed,
                Err(e) => {
                    self.queue.push_front(batch);
                    return Err(e.into());
                }
            };
            self.check(&batch, &sealed)?;
            let headers = batch_headers(self.spool.site_id(), batch.epoch, batch.sequence);
            let record = FutureRecord::to(&self.kafka.topic)
                .key(self.spool.site_id())
                .payload(&sealed)
                .headers(headers);
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    let sent = InFlight {
                        batch,
                        bytes: sealed.len(),
                    };
                    self.in_flight_bytes += sent.bytes;
                    self.progress.sent();
                    self.last_sent = Some(batch);
                    pending.push_back(Box::pin(report(sent, delivery)));
                }
                Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    self.queue.push_front(batch);
                    break;
                }
                Err((e, _)) => {
                    self.queue.push_front(batch);
                    return Err(self.refused(&batch, e));
                }
            }
        }
        Ok(())
    }

    /// The spool file must be this site's batch at the position its name says.
    fn check(&self, batch: &SpooledBatch, sealed: &[u8]) -> Result<(), KafkaTransportError> {
        let foreign = |problem: String| KafkaTransportError::ForeignBatch {
            site_id: self.spool.site_id().to_owned(),
            epoch: batch.epoch,
            sequence: batch.sequence,
            problem,
        };
        let header = tributary_batch::read_header(sealed)
            .map_err(|e| foreign(format!("unreadable batch header: {e}")))?;
        if header.site_id != self.spool.site_id()
            || header.epoch != batch.epoch
            || header.sequence != batch.sequence
        {
            return Err(foreign(format!(
                "its header says site '{}' epoch {} sequence {}",
                header.site_id, header.epoch, header.sequence
            )));
        }
        Ok(())
    }

    /// Handles one delivery report, in send order.
    fn settle(
        &mut self,
        sent: InFlight,
        outcome: DeliveryOutcome,
    ) -> Result<(), KafkaTransportError> {
        self.in_flight_bytes -= sent.bytes;
        self.progress.reported();
        match outcome {
            Ok(()) => {
                self.reachability.reachable("ship");
                // Invariant 1: removed only now that the broker acknowledged it.
                self.spool.remove(&sent.batch)?;
                self.progress.delivered(sent.bytes as u64);
                Ok(())
            }
            Err(e) => {
                let error = self.refused(&sent.batch, e);
                if !error.is_transient() {
                    return Err(error);
                }
                // Later batches may still be reported; settle them, then start over.
                self.queue.clear();
                if self.failed.is_none() {
                    self.failed = Some(error);
                }
                Ok(())
            }
        }
    }

    fn refused(&self, batch: &SpooledBatch, e: KafkaError) -> KafkaTransportError {
        if is_transient_kafka(&e) {
            return KafkaTransportError::Client {
                operation: "deliver a batch",
                source: Box::new(e),
            };
        }
        KafkaTransportError::Undeliverable {
            site_id: self.spool.site_id().to_owned(),
            epoch: batch.epoch,
            sequence: batch.sequence,
            topic: self.kafka.topic.clone(),
            remedy: remedy_for(&e),
            source: Box::new(e),
        }
    }

    /// At shutdown: wait a bounded time for outstanding reports, removing what was delivered.
    async fn drain(mut self, mut pending: Pending) -> Result<(), KafkaTransportError> {
        let deadline = tokio::time::Instant::now() + self.settings.drain_timeout;
        while !pending.is_empty() {
            match tokio::time::timeout_at(deadline, pending.next()).await {
                Ok(Some((sent, outcome))) => {
                    if let Err(e) = self.settle(sent, outcome)
                        && !e.is_transient()
                    {
                        return Err(e);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::info!(
                        unreported = pending.len(),
                        "stopping with batches whose delivery is unconfirmed; they stay in the spool"
                    );
                    break;
                }
            }
        }
        Ok(self.spool.flush()?)
    }
}

async fn report(sent: InFlight, delivery: DeliveryFuture) -> (InFlight, DeliveryOutcome) {
    let outcome = match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _message))) => Err(e),
        // The producer was dropped before reporting: not delivered as far as we know.
        Err(_canceled) => Err(KafkaError::Canceled),
    };
    (sent, outcome)
}
