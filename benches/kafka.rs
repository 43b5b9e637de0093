//! Throughput of the Kafka transport through tansu (a real broker in its own process): the
//! shipper (spool -> topic, idempotent producer, acks=all) and the consumer (topic -> a
//! handler that only counts, as a member of a consumer group committing after every batch).
//!
//! `cargo bench --bench kafka` (release build). `TRIBUTARY_BENCH_BATCHES` (default 4,000) and
//! `TRIBUTARY_BENCH_BATCH_BYTES` (default 16,384 bytes of payload, about 10 KB once sealed:
//! the size of a sealed batch of ~300 OpenMRS rows) set the load. The batches are sealed with a real site key (random payloads, so
//! they are as incompressible as real sealed batches). The consumer's figure is timed from
//! its first record to its last, without tansu's slow first group join. Asserts nothing.

use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tributary_batch::{BatchHeader, SiteKey};
use tributary_kafka::{
    BatchHandler, ConsumerSettings, Handled, KafkaSettings, Received, RunMode, ShipperProgress,
    ShipperSettings, TopicInit,
};
use tributary_suite::Tansu;
use tributary_transport::{DEFAULT_SEGMENT_BYTES, Outbox, SegmentOutbox, SegmentSpool, Spool};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SITE: &str = "bench-site";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let batches = env_or("TRIBUTARY_BENCH_BATCHES", 4_000) as u64;
    let batch_bytes = env_or("TRIBUTARY_BENCH_BATCH_BYTES", 16_384);
    let tansu = Tansu::start("bench-kafka", None)?;
    let mut kafka = KafkaSettings::new(format!("127.0.0.1:{}", tansu.port()));
    kafka.topic = "bench.batches".into();
    kafka.group = "bench-hq".into();
    kafka.partitions = 4;
    kafka.replication_factor = 1;
    match tributary_kafka::init_topic(&kafka).await? {
        TopicInit::Created { .. } | TopicInit::Existed { .. } => {}
        other => anyhow::bail!("unexpected topic state {other:?}"),
    }

    let work = tansu.dir().join("spool");
    let filling = Instant::now();
    let spool = Arc::new(fill_spool(&work, batches, batch_bytes)?);
    let fill_s = filling.elapsed().as_secs_f64();
    let bytes = spool_bytes(&work)?;
    println!(
        "spool    (seal, stage with fsync, commit into segments): {batches} batches, {:.1} MB in {fill_s:.2} s = {:.0} batches/s",
        bytes as f64 / 1e6,
        batches as f64 / fill_s
    );

    // Shipper.
    let progress = Arc::new(ShipperProgress::default());
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let shipper = tokio::spawn({
        let (kafka, progress, shutdown, spool) = (
            kafka.clone(),
            progress.clone(),
            shutdown.clone(),
            spool.clone(),
        );
        async move {
            tributary_kafka::run_shipper(
                &*spool,
                &kafka,
                &ShipperSettings::default(),
                progress,
                shutdown,
            )
            .await
        }
    });
    while progress.batches.load(std::sync::atomic::Ordering::Relaxed) < batches {
        anyhow::ensure!(!shipper.is_finished(), "the shipper stopped early");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ship_s = started.elapsed().as_secs_f64();
    shutdown.cancel();
    shipper.await??;
    anyhow::ensure!(
        spool.committed_after(None, 1)?.is_empty(),
        "spool not empty"
    );

    // Consumer.
    let mut counter = Counter {
        started: Some(Instant::now()),
        ..Counter::default()
    };
    let settings = ConsumerSettings {
        idle_window: Duration::from_secs(3),
        ..ConsumerSettings::default()
    };
    let shutdown = CancellationToken::new();
    tributary_kafka::run_consumer(&kafka, &settings, &mut counter, RunMode::Drain, shutdown)
        .await
        .context("consumer")?;
    anyhow::ensure!(
        counter.seen == batches,
        "consumed {} of {batches}",
        counter.seen
    );
    let (first, last) = (
        counter.first.context("first")?,
        counter.last.context("last")?,
    );
    let consume_s = (last - first).as_secs_f64().max(1e-3);

    let mb = bytes as f64 / 1e6;
    println!(
        "shipper  (spool -> tansu): {batches} batches, {mb:.1} MB in {ship_s:.2} s = {:.0} batches/s, {:.1} MB/s",
        batches as f64 / ship_s,
        mb / ship_s
    );
    println!(
        "consumer (tansu -> handler, commit per batch): {batches} batches, {mb:.1} MB in {consume_s:.2} s = {:.0} batches/s, {:.1} MB/s (first group join took {:.1} s)",
        batches as f64 / consume_s,
        mb / consume_s,
        counter.join.map_or(0.0, |d| d.as_secs_f64())
    );
    Ok(())
}

fn fill_spool(root: &std::path::Path, batches: u64, batch_bytes: usize) -> Result<SegmentSpool> {
    let key = SiteKey::generate(SITE)?;
    let mut outbox = SegmentOutbox::open(root, SITE, DEFAULT_SEGMENT_BYTES)?;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut payload = vec![0u8; batch_bytes];
    for sequence in 1..=batches {
        for byte in payload.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = b'a' + (state % 26) as u8;
        }
        let header = BatchHeader::new(SITE, key.key_id(), 1, sequence, 1);
        let sealed = tributary_batch::seal(&header, &payload, &key)?;
        let staged = outbox.stage(1, sequence, &sealed)?;
        outbox.commit(&staged)?;
    }
    Ok(SegmentSpool::open(root, SITE)?)
}

fn spool_bytes(root: &std::path::Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(root.join(SITE))? {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}

#[derive(Default)]
struct Counter {
    seen: u64,
    started: Option<Instant>,
    join: Option<Duration>,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl BatchHandler for Counter {
    type Error = std::io::Error;

    async fn handle(&mut self, record: Received) -> Result<Handled, std::io::Error> {
        let now = Instant::now();
        if self.first.is_none() {
            self.first = Some(now);
            self.join = self.started.map(|s| now - s);
        }
        self.last = Some(now);
        if matches!(record, Received::Batch(_)) {
            self.seen += 1;
        }
        Ok(Handled::Done)
    }

    fn is_transient(_: &std::io::Error) -> bool {
        true
    }
}
