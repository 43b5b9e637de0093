//! The shipper and the consumer against librdkafka's in-process mock cluster, with faults:
//! brokers down and back, request errors injected on Produce, Fetch and OffsetCommit, a
//! partition leader change, and a consumer-group rebalance. The applier is a fake that keeps
//! HQ's progress in memory with the same rule as the real one (apply the next sequence, skip
//! what is covered, hold at a gap), so these tests check the transport's own promises:
//! nothing leaves the spool before its delivery report; every batch arrives, in order, once
//! per (site, sequence) applied; offsets are committed only past batches the applier finished.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tributary_batch::{BatchHeader, SiteKey};
use tributary_kafka::{
    BatchHandler, ConsumerReport, ConsumerSettings, Handled, KafkaSettings, Received, RunMode,
    ShipperProgress, ShipperSettings, run_consumer, run_shipper,
};
use tributary_transport::{DirectoryOutbox, DirectorySpool, Spool};

const TOPIC: &str = "tributary.batches";
const DEADLINE: Duration = Duration::from_secs(60);

type Mock = MockCluster<'static, DefaultProducerContext>;

fn cluster(partitions: i32) -> Mock {
    let mock = MockCluster::new(3).expect("mock cluster");
    mock.create_topic(TOPIC, partitions, 3).expect("topic");
    mock
}

fn settings(mock: &Mock, group: &str) -> KafkaSettings {
    let mut settings = KafkaSettings::new(mock.bootstrap_servers());
    settings.group = group.to_owned();
    settings
}

/// A spool holding sealed batches of `site` at the given sequences (epoch 1).
fn spool(
    root: &std::path::Path,
    site: &str,
    sequences: impl IntoIterator<Item = u64>,
) -> DirectorySpool {
    let key = SiteKey::generate(site).unwrap();
    let outbox = DirectoryOutbox::open(root, site).unwrap();
    for sequence in sequences {
        let header = BatchHeader::new(site, key.key_id(), 1, sequence, 1);
        let payload = format!("{{\"batch\":{sequence},\"pad\":\"{}\"}}", "x".repeat(2_000));
        let sealed = tributary_batch::seal(&header, payload.as_bytes(), &key).unwrap();
        let staged = outbox.stage(1, sequence, &sealed).unwrap();
        outbox.commit(&staged).unwrap();
    }
    DirectorySpool::open(root, site).unwrap()
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running shipper task and what it reports.
struct Shipping {
    progress: Arc<ShipperProgress>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start_shipper(
    spool: DirectorySpool,
    kafka: KafkaSettings,
    settings: ShipperSettings,
) -> Shipping {
    let progress = Arc::new(ShipperProgress::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let (progress, shutdown) = (progress.clone(), shutdown.clone());
        async move {
            run_shipper(&spool, &kafka, &settings, progress, shutdown)
                .await
                .expect("shipper");
        }
    });
    Shipping {
        progress,
        shutdown,
        task,
    }
}

impl Shipping {
    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
    }
}

/// Every record of the topic, read with assign() from the beginning: (partition, site,
/// sequence) in offset order per partition.
async fn topic_records(mock: &Mock, partitions: i32, expected: usize) -> Vec<(i32, String, u64)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut records = Vec::new();
    while records.len() < expected {
        let message = tokio::time::timeout(DEADLINE, consumer.recv())
            .await
            .expect("records within the deadline")
            .unwrap();
        let header = |name: &str| {
            let headers = message.headers().unwrap();
            let h = headers.iter().find(|h| h.key == name).unwrap();
            String::from_utf8(h.value.unwrap().to_vec()).unwrap()
        };
        assert_eq!(
            message.key(),
            Some(header("tributary-site").as_bytes()),
            "record key is the site id"
        );
        assert_eq!(header("tributary-epoch"), "1");
        records.push((
            message.partition(),
            header("tributary-site"),
            header("tributary-sequence").parse().unwrap(),
        ));
    }
    records
}

fn assert_in_order_once(records: &[(i32, String, u64)], site: &str, count: u64) {
    let sequences: Vec<u64> = records
        .iter()
        .filter(|r| r.1 == site)
        .map(|r| r.2)
        .collect();
    assert_eq!(
        sequences,
        (1..=count).collect::<Vec<_>>(),
        "site {site}: every batch once, in order"
    );
    let partitions: BTreeSet<i32> = records
        .iter()
        .filter(|r| r.1 == site)
        .map(|r| r.0)
        .collect();
    assert_eq!(partitions.len(), 1, "one site, one partition");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_keeps_batches_in_the_spool_until_delivered() {
    let mock = cluster(4);
    let dir = tempfile::tempdir().unwrap();
    let spool = spool(dir.path(), "clinic-a", 1..=40);
    mock.broker_down(-1).unwrap();
    let shipping = start_shipper(
        spool.clone(),
        settings(&mock, "g"),
        ShipperSettings {
            max_in_flight_batches: 16,
            ..ShipperSettings::default()
        },
    );
    let progress = shipping.progress.clone();
    wait_until("the shipper to fill its in-flight window", || {
        progress.in_flight.load(Ordering::Relaxed) == 16
    })
    .await;
    assert_eq!(
        spool.committed_after(None, usize::MAX).unwrap().len(),
        40,
        "nothing is removed from the spool while no broker can acknowledge it"
    );
    assert_eq!(progress.batches.load(Ordering::Relaxed), 0);
    mock.broker_up(-1).unwrap();
    // A batch is counted once it is out of the spool: wait for both.
    wait_until("the spool to empty and every batch to be counted", || {
        spool.committed_after(None, usize::MAX).unwrap().is_empty()
            && progress.batches.load(Ordering::Relaxed) == 40
    })
    .await;
    shipping.stop().await;
    assert_in_order_once(&topic_records(&mock, 4, 40).await, "clinic-a", 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_errors_and_a_leader_change_lose_and_duplicate_nothing() {
    let mock = cluster(2);
    let dir = tempfile::tempdir().unwrap();
    let spool_a = spool(dir.path(), "clinic-a", 1..=60);
    let spool_b = spool(dir.path(), "clinic-b", 1..=60);
    use RDKafkaRespErr::*;
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
            RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
            RD_KAFKA_RESP_ERR__TRANSPORT,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        ],
    );
    let small = ShipperSettings {
        max_in_flight_batches: 4,
        ..ShipperSettings::default()
    };
    let a = start_shipper(spool_a.clone(), settings(&mock, "g"), small.clone());
    let b = start_shipper(spool_b.clone(), settings(&mock, "g"), small);
    let progress = a.progress.clone();
    wait_until("a third of site a's batches", || {
        progress.batches.load(Ordering::Relaxed) >= 20
    })
    .await;
    for partition in 0..2 {
        mock.partition_leader(TOPIC, partition, Some(3)).unwrap();
    }
    wait_until("both spools to empty", || {
        spool_a
            .committed_after(None, usize::MAX)
            .unwrap()
            .is_empty()
            && spool_b
                .committed_after(None, usize::MAX)
                .unwrap()
                .is_empty()
    })
    .await;
    a.stop().await;
    b.stop().await;
    let records = topic_records(&mock, 2, 120).await;
    assert_in_order_once(&records, "clinic-a", 60);
    assert_in_order_once(&records, "clinic-b", 60);
}

/// HQ in memory, with the applier's order rule.
#[derive(Debug, Default)]
struct FakeHq {
    progress: BTreeMap<String, u64>,
    applied: Vec<(String, u64)>,
    duplicates: u64,
    holds: u64,
    /// (partition, offset) of every record the handler finished.
    finished: BTreeMap<i32, i64>,
    /// How often each (site, sequence) was handed over.
    handled: BTreeMap<(String, u64), u32>,
    /// How often the consumer asked whether a held batch may move.
    asked: u64,
    /// HQ cannot be reached: every batch fails with a transient error.
    unreachable: bool,
    /// (member, partition) of the batches that failed that way.
    failed_by: BTreeSet<(u8, i32)>,
}

#[derive(Clone, Default)]
struct FakeApplier {
    hq: Arc<Mutex<FakeHq>>,
    /// Which group member this applier serves (several share one HQ).
    member: u8,
}

impl FakeApplier {
    fn member(hq: &FakeApplier, member: u8) -> FakeApplier {
        FakeApplier {
            hq: Arc::clone(&hq.hq),
            member,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut FakeHq) -> T) -> T {
        f(&mut self.hq.lock().unwrap())
    }

    /// The partitions whose batches failed for this member (HQ unreachable).
    fn failed_partitions(&self) -> BTreeSet<i32> {
        self.with(|hq| {
            hq.failed_by
                .iter()
                .filter(|(member, _)| *member == self.member)
                .map(|(_, partition)| *partition)
                .collect()
        })
    }

    fn forget_failures(&self) {
        self.with(|hq| hq.failed_by.retain(|(member, _)| *member != self.member));
    }
}

impl BatchHandler for FakeApplier {
    type Error = std::io::Error;

    async fn handle(&mut self, record: Received) -> Result<Handled, std::io::Error> {
        let Received::Batch(batch) = record else {
            panic!("only batches are produced here");
        };
        let member = self.member;
        if self.with(|hq| {
            if hq.unreachable {
                hq.failed_by.insert((member, batch.partition));
            }
            hq.unreachable
        }) {
            return Err(std::io::Error::other("HQ unreachable"));
        }
        Ok(self.with(|hq| {
            *hq.handled
                .entry((batch.site_id.clone(), batch.sequence))
                .or_default() += 1;
            let last = hq.progress.get(&batch.site_id).copied().unwrap_or(0);
            if batch.sequence <= last {
                hq.duplicates += 1;
            } else if batch.sequence == last + 1 {
                hq.progress.insert(batch.site_id.clone(), batch.sequence);
                hq.applied.push((batch.site_id.clone(), batch.sequence));
            } else {
                hq.holds += 1;
                return Handled::Hold {
                    reason: format!("waiting for {}", last + 1),
                };
            }
            let finished = hq.finished.entry(batch.partition).or_default();
            *finished = (*finished).max(batch.offset + 1);
            Handled::Done
        }))
    }

    async fn may_move(
        &mut self,
        site: &str,
        _epoch: u64,
        sequence: u64,
    ) -> Result<bool, std::io::Error> {
        Ok(self.with(|hq| {
            hq.asked += 1;
            hq.progress.get(site).copied().unwrap_or(0) + 1 >= sequence
        }))
    }

    fn is_transient(_: &std::io::Error) -> bool {
        true
    }
}

/// The group's committed offsets, as a new member would find them.
fn committed(mock: &Mock, group: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(TOPIC, p);
    }
    let offsets = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .unwrap();
    offsets
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

fn consumer_settings() -> ConsumerSettings {
    ConsumerSettings {
        hold_retry: Duration::from_millis(300),
        tick_interval: Duration::from_millis(100),
        idle_window: Duration::from_secs(3),
        assignment_timeout: Duration::from_secs(60),
    }
}

async fn ship_all(mock: &Mock, spool: DirectorySpool) {
    let shipping = start_shipper(
        spool.clone(),
        settings(mock, "g"),
        ShipperSettings::default(),
    );
    wait_until("the spool to empty", || {
        spool.committed_after(None, usize::MAX).unwrap().is_empty()
    })
    .await;
    shipping.stop().await;
}

fn start_consumer(
    kafka: KafkaSettings,
    applier: FakeApplier,
    mode: RunMode,
) -> (CancellationToken, tokio::task::JoinHandle<ConsumerReport>) {
    start_consumer_with(kafka, consumer_settings(), applier, mode)
}

fn start_consumer_with(
    kafka: KafkaSettings,
    settings: ConsumerSettings,
    applier: FakeApplier,
    mode: RunMode,
) -> (CancellationToken, tokio::task::JoinHandle<ConsumerReport>) {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let mut applier = applier;
            run_consumer(&kafka, &settings, &mut applier, mode, shutdown)
                .await
                .expect("consumer")
        }
    });
    (shutdown, task)
}

/// A site held at a gap holds only itself: the other sites in its partition flow on, nothing
/// from the held batch on is committed, and the held batches are read back only once they may
/// fit, the others never handed over twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_holds_its_site_and_offsets_never_pass_an_unapplied_batch() {
    let mock = cluster(1);
    let dir = tempfile::tempdir().unwrap();
    // Site a's batch 4 never reaches Kafka (it arrives at HQ by another way, later).
    ship_all(&mock, spool(dir.path(), "clinic-a", [1, 2, 3, 5, 6])).await;
    ship_all(&mock, spool(dir.path(), "clinic-b", 1..=3)).await;
    let applier = FakeApplier::default();
    let (shutdown, task) = start_consumer(settings(&mock, "hq"), applier.clone(), RunMode::Follow);
    // Site b's batches, behind site a's held ones in the same partition, are applied.
    wait_until("site b's batches", || {
        applier.with(|hq| hq.applied.len() == 6)
    })
    .await;
    assert_eq!(
        applier.with(|hq| hq.applied.clone()),
        vec![
            ("clinic-a".into(), 1),
            ("clinic-a".into(), 2),
            ("clinic-a".into(), 3),
            ("clinic-b".into(), 1),
            ("clinic-b".into(), 2),
            ("clinic-b".into(), 3),
        ],
        "nothing of site a past its gap was applied"
    );
    // Offsets 0-2 are a1-a3, offset 3 is a5: the group must resume at a5, whatever came after.
    wait_until("the commit of a1-a3", || {
        committed(&mock, "hq", 1).get(&0) == Some(&3)
    })
    .await;
    // The consumer asks, after its delay, whether the held batches may fit; while they do
    // not, nothing is read back: every batch was handed over once.
    wait_until("the held batches to be considered twice", || {
        applier.with(|hq| hq.asked >= 2)
    })
    .await;
    assert_eq!(committed(&mock, "hq", 1).get(&0), Some(&3));
    assert!(
        applier.with(|hq| hq.handled.values().all(|n| *n == 1)),
        "nothing handed over twice: {:?}",
        applier.with(|hq| hq.handled.clone())
    );
    // Batch 4 arrives by another transport: the partition moves on by itself.
    applier.with(|hq| {
        hq.progress.insert("clinic-a".into(), 4);
    });
    wait_until("everything after the gap", || {
        applier.with(|hq| hq.applied.len() == 8)
    })
    .await;
    wait_until("the commit of everything", || {
        committed(&mock, "hq", 1).get(&0) == Some(&8)
    })
    .await;
    shutdown.cancel();
    let report = task.await.unwrap();
    assert_eq!(report.committed.get(&0), Some(&8));
    assert!(report.held.is_empty());
    let handled = applier.with(|hq| hq.handled.clone());
    for sequence in 1..=3 {
        assert_eq!(
            handled[&("clinic-b".to_owned(), sequence)],
            1,
            "b{sequence}"
        );
    }
    for sequence in [5, 6] {
        assert_eq!(
            handled[&("clinic-a".to_owned(), sequence)],
            2,
            "a{sequence}"
        );
    }
}

/// A site's missing batch, found later in its partition, makes the consumer read back to the
/// held batches at once (not after the hold delay), and a draining run finishes that before
/// it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_batch_found_later_releases_the_held_ones_in_the_same_run() {
    let mock = cluster(1);
    let dir = tempfile::tempdir().unwrap();
    let site_a = |sequences: &[u64]| spool(dir.path(), "clinic-a", sequences.to_vec());
    ship_all(&mock, site_a(&[1, 3, 4])).await;
    ship_all(&mock, spool(dir.path(), "clinic-b", 1..=2)).await;
    ship_all(&mock, site_a(&[2])).await;
    let applier = FakeApplier::default();
    let patient = ConsumerSettings {
        // Far beyond the run: only the arrival of batch 2 can send the consumer back.
        hold_retry: Duration::from_secs(3_600),
        ..consumer_settings()
    };
    let (_, task) = start_consumer_with(
        settings(&mock, "hq"),
        patient,
        applier.clone(),
        RunMode::Drain,
    );
    let report = task.await.unwrap();
    let applied = applier.with(|hq| hq.applied.clone());
    let site = |name: &str| -> Vec<u64> {
        applied
            .iter()
            .filter(|(s, _)| s == name)
            .map(|(_, n)| *n)
            .collect()
    };
    assert_eq!(site("clinic-a"), vec![1, 2, 3, 4]);
    assert_eq!(site("clinic-b"), vec![1, 2]);
    assert!(report.held.is_empty(), "held at the end: {:?}", report.held);
    assert_eq!(report.committed.get(&0), Some(&6));
    let handled = applier.with(|hq| hq.handled.clone());
    assert_eq!(
        handled[&("clinic-b".to_owned(), 1)],
        1,
        "read back but skipped"
    );
    assert_eq!(
        handled[&("clinic-a".to_owned(), 3)],
        2,
        "held, then applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_and_offset_commit_errors_cause_rereads_that_dedupe_absorbs() {
    let mock = cluster(3);
    let dir = tempfile::tempdir().unwrap();
    for site in ["clinic-a", "clinic-b", "clinic-c"] {
        ship_all(&mock, spool(dir.path(), site, 1..=30)).await;
    }
    use RDKafkaRespErr::*;
    mock.request_errors(
        RDKafkaApiKey::Fetch,
        &[
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR__TRANSPORT,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        ],
    );
    mock.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[
            RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
            RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
        ],
    );
    let applier = FakeApplier::default();
    let (_, task) = start_consumer(settings(&mock, "hq"), applier.clone(), RunMode::Drain);
    task.await.unwrap();
    let applied = applier.with(|hq| hq.applied.len());
    assert_eq!(applied, 90, "every batch applied once");
    // A second run of the group re-reads at most what was not committed, and applies nothing.
    let (_, task) = start_consumer(settings(&mock, "hq"), applier.clone(), RunMode::Drain);
    task.await.unwrap();
    assert_eq!(applier.with(|hq| hq.applied.len()), 90);
    let finished = applier.with(|hq| hq.finished.clone());
    assert_eq!(
        committed(&mock, "hq", 3),
        finished,
        "the group resumes after the last finished batch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_hands_partitions_over_without_loss() {
    let mock = cluster(4);
    let dir = tempfile::tempdir().unwrap();
    let sites = [
        "clinic-a", "clinic-b", "clinic-c", "clinic-d", "clinic-e", "clinic-f",
    ];
    for site in sites {
        ship_all(&mock, spool(dir.path(), site, 1..=40)).await;
    }
    let applier = FakeApplier::default();
    let (stop_first, first) =
        start_consumer(settings(&mock, "hq"), applier.clone(), RunMode::Follow);
    wait_until("the first member to apply some batches", || {
        applier.with(|hq| hq.applied.len() >= 10)
    })
    .await;
    let (stop_second, second) =
        start_consumer(settings(&mock, "hq"), applier.clone(), RunMode::Follow);
    wait_until("every batch applied", || {
        applier.with(|hq| hq.applied.len() == 240)
    })
    .await;
    let finished = applier.with(|hq| hq.finished.clone());
    wait_until("the group's offsets to reach the end", || {
        committed(&mock, "hq", 4) == finished
    })
    .await;
    stop_first.cancel();
    stop_second.cancel();
    first.await.unwrap();
    second.await.unwrap();
    let applied = applier.with(|hq| hq.applied.clone());
    let unique: BTreeSet<_> = applied.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        240,
        "each (site, sequence) applied exactly once"
    );
}

/// Partitions paused while HQ is unreachable and then moved in rebalances (a member joins,
/// then leaves) are consumed again once HQ is back: no partition stays paused for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_paused_across_rebalances_resume_when_hq_returns() {
    let mock = cluster(4);
    let dir = tempfile::tempdir().unwrap();
    let sites = ["clinic-a", "clinic-b", "clinic-c", "clinic-d", "clinic-e"];
    for site in sites {
        ship_all(&mock, spool(dir.path(), site, 1..=8)).await;
    }
    let all: BTreeSet<i32> = (0..4).collect();
    let mut kafka = settings(&mock, "hq");
    // A member that leaves is noticed at once, not after the default session timeout.
    kafka
        .properties
        .insert("session.timeout.ms".into(), "6000".into());
    let hq = FakeApplier::default();
    hq.with(|hq| hq.unreachable = true);
    let first = FakeApplier::member(&hq, 1);
    let (stop_first, first_task) = start_consumer(kafka.clone(), first.clone(), RunMode::Follow);
    wait_until("the first member to pause every partition", || {
        first.failed_partitions() == all
    })
    .await;
    // A second member joins: every partition is revoked, some come back to the first member
    // (paused by it before), the others go to the second, which pauses them in turn.
    let second = FakeApplier::member(&hq, 2);
    let (stop_second, second_task) = start_consumer(kafka.clone(), second.clone(), RunMode::Follow);
    wait_until("the second member to pause its partitions", || {
        !second.failed_partitions().is_empty()
    })
    .await;
    // It leaves: the first member gets every partition back, some of them paused by it in the
    // first assignment; it reads each again (HQ still unreachable) and pauses it.
    stop_second.cancel();
    second_task.await.unwrap();
    first.forget_failures();
    wait_until("the first member to read every partition again", || {
        first.failed_partitions() == all
    })
    .await;
    hq.with(|hq| hq.unreachable = false);
    wait_until("every batch applied once HQ is back", || {
        hq.with(|hq| hq.applied.len() == 40)
    })
    .await;
    stop_first.cancel();
    first_task.await.unwrap();
}
