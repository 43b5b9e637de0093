//! The Kafka transport end to end against librdkafka's mock cluster (in this test process; the
//! `tributary` processes reach it over loopback TCP), with faults while the site works:
//! all brokers down and back, errors injected on Produce, Fetch and OffsetCommit, and a
//! partition leader change. Then `apply --once` drains the topic. Guards invariants 1 and 2:
//! HQ ends equal to the site with every row change applied exactly once, and nothing is
//! removed from the spool while no broker can acknowledge it.

use anyhow::Result;
use mysql_async::prelude::*;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use std::time::Duration;
use tributary::dataset::{self, PatientShape};
use tributary_suite::pipeline::{CLINIC, Pipeline, PipelineOptions, tributary_capture_checkpoint};
use tributary_suite::{scrape, wait_metrics_address, wait_until};

const TOPIC: &str = "tributary.batches";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_faults_lose_and_double_nothing() -> Result<()> {
    let p = Pipeline::start(
        "kafka-mock",
        PipelineOptions {
            max_batch_rows: 100,
            ..PipelineOptions::default()
        },
    )
    .await?;
    let mock = MockCluster::new(3)?;
    mock.create_topic(TOPIC, 4, 3)?;
    p.use_kafka(&mock.bootstrap_servers(), TOPIC, 4)?;
    let mut capture = p.spawn("capture", "capture")?;
    let mut ship = p.spawn_with_args(
        "ship",
        &p.config,
        "ship",
        &["--metrics-listen", "127.0.0.1:0"],
    )?;
    let mut apply = p.spawn("apply", "apply")?;
    p.wait_capture_started("state", &capture).await?;
    let ship_metrics = wait_metrics_address(&ship).await?;
    let shape = PatientShape::default();
    let mut site = p.site.conn().await?;
    let mut rows = dataset::load_patients(&mut site, CLINIC, "clinic-a", 0, 10, shape).await?;
    p.wait_caught_up(&mut [&mut capture, &mut ship, &mut apply])
        .await?;

    // Every broker down while the site works: batches pile up in the spool, none removed.
    mock.broker_down(-1)?;
    let spooled_before = p.spooled_batches()?.len();
    rows += dataset::load_patients(&mut site, CLINIC, "clinic-a", 10, 20, shape).await?;
    p.wait_capture_published("state", &capture).await?;
    let spooled = p.spooled_batches()?.len();
    assert!(
        spooled >= spooled_before + 5,
        "batches wait in the spool while the brokers are down ({spooled_before} -> {spooled})\n{}",
        ship.logs()
    );
    mock.broker_up(-1)?;

    // Request errors on both sides and a leader change while more changes flow.
    use RDKafkaRespErr::*;
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RD_KAFKA_RESP_ERR__TRANSPORT,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        ],
    );
    mock.request_errors(
        RDKafkaApiKey::Fetch,
        &[
            RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RD_KAFKA_RESP_ERR__TRANSPORT,
        ],
    );
    mock.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[
            RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
        ],
    );
    for partition in 0..4 {
        mock.partition_leader(TOPIC, partition, Some(2))?;
    }
    rows += dataset::load_patients(&mut site, CLINIC, "clinic-a", 30, 10, shape).await?;
    let live = dataset::live_changes(&mut site, "clinic-a", 40, shape).await?;
    rows += live.rows;
    p.wait_caught_up(&mut [&mut capture, &mut ship, &mut apply])
        .await?;

    // The applier stops; the site makes more changes and capture stops too (so no keepalive
    // follows); the shipper empties the spool; `apply --once` drains the topic and exits.
    apply.signal("TERM")?;
    assert!(apply.wait_exit(Duration::from_secs(30)).await?.success());
    rows += dataset::load_patients(&mut site, CLINIC, "clinic-a", 40, 5, shape).await?;
    p.wait_capture_published("state", &capture).await?;
    capture.signal("TERM")?;
    assert!(capture.wait_exit(Duration::from_secs(30)).await?.success());
    let spool_empty = || {
        let spooled = p.spooled_batches();
        async move { Ok(spooled?.is_empty()) }
    };
    wait_until(
        "the shipper to empty the spool",
        Duration::from_secs(60),
        spool_empty,
    )
    .await
    .map_err(|e| e.context(ship.logs()))?;
    // The shipper's metrics count every spooled batch once, however often it was retried.
    let (_, published, _) =
        tributary_capture_checkpoint(&p.work.join("state"))?.expect("a checkpoint");
    let shipped = (published - 1) as f64;
    wait_until(
        "the shipper's metrics to count every batch once",
        Duration::from_secs(30),
        || async move {
            let metrics = scrape(ship_metrics)?;
            Ok(
                metrics.value("tributary_ship_batches_total", &[]) == Some(shipped)
                    && metrics.value("tributary_ship_in_flight_batches", &[]) == Some(0.0)
                    && metrics.value("tributary_ship_bytes_total", &[]) > Some(0.0),
            )
        },
    )
    .await
    .map_err(|e| e.context(format!("{:?}\n{}", scrape(ship_metrics), ship.logs())))?;
    let mut cmd = std::process::Command::new(tributary_suite::tributary_bin());
    cmd.args(["apply", "--once", "--config"]).arg(&p.config);
    let mut once =
        tributary_suite::ChildGuard::spawn(&mut cmd, &p.work.join("logs"), "apply-once")?;
    let status = once.wait_exit(Duration::from_secs(180)).await?;
    assert!(status.success(), "{}", once.logs());
    let summary = once.stdout();
    assert!(summary.contains("applied "), "{summary}");
    assert!(!summary.contains("held"), "{summary}");
    let (_, next_sequence, _) =
        tributary_capture_checkpoint(&p.work.join("state"))?.expect("a checkpoint");
    let mut hq = p.hq.conn().await?;
    let last: Option<u64> = hq
        .query_first("SELECT last_sequence FROM tributary_site_progress")
        .await?;
    assert_eq!(
        last,
        Some(next_sequence - 1),
        "--once applied every published batch\n{}",
        once.logs()
    );

    p.verify()?;
    let applied: Option<u64> = hq
        .query_first("SELECT rows_applied FROM tributary_site_progress")
        .await?;
    assert_eq!(applied, Some(rows), "every row change applied exactly once");
    let rejected: Option<u64> = hq
        .query_first("SELECT COUNT(*) FROM tributary_rejected_batch")
        .await?;
    assert_eq!(rejected, Some(0));
    ship.signal("TERM")?;
    assert!(
        ship.wait_exit(Duration::from_secs(30)).await?.success(),
        "the shipper stops cleanly on SIGTERM\n{}",
        ship.logs()
    );
    Ok(())
}

/// A batch missing from the topic (lost from the spool before shipping) holds the site at HQ:
/// nothing after it is applied, `tributary status` shows what it waits for, and once the
/// operator applies the missing batch another way (here: a directory and `apply --once`),
/// the Kafka applier moves on by itself. Invariant 2: a gap is held and reported, never
/// skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_missing_from_kafka_holds_the_site_until_it_is_supplied() -> Result<()> {
    let p = Pipeline::start(
        "kafka-gap",
        PipelineOptions {
            max_batch_rows: 50,
            ..PipelineOptions::default()
        },
    )
    .await?;
    let mock = MockCluster::new(1)?;
    mock.create_topic(TOPIC, 2, 1)?;
    p.use_kafka(&mock.bootstrap_servers(), TOPIC, 2)?;
    let mut capture = p.spawn("capture", "capture")?;
    let mut apply = p.spawn_with_args(
        "apply",
        &p.config,
        "apply",
        &["--metrics-listen", "127.0.0.1:0"],
    )?;
    let apply_metrics = wait_metrics_address(&apply).await?;
    p.wait_capture_started("state", &capture).await?;
    let shape = PatientShape::default();
    let rows =
        dataset::load_patients(&mut p.site.conn().await?, CLINIC, "clinic-a", 0, 4, shape).await?;
    p.wait_capture_published("state", &capture).await?;

    // Batch 2 goes missing before the shipper starts (taken out while capture is stopped).
    capture.signal("TERM")?;
    assert!(capture.wait_exit(Duration::from_secs(30)).await?.success());
    let (missing_name, missing_bytes) = p.take_from_spool(2)?;
    let mut capture = p.spawn("capture", "capture-again")?;
    let mut ship = p.spawn("ship", "ship")?;

    wait_held_at_batch_2(&p, &apply).await?;
    let status = p.status()?;
    assert!(status.contains("waiting for batch 2"), "{status}");
    let held = "tributary_apply_kafka_held_lineages";
    wait_until(
        "the consumer's metrics to show the held site",
        Duration::from_secs(30),
        || async move { Ok(scrape(apply_metrics)?.sum(held) == 1.0) },
    )
    .await?;

    // The operator applies the missing batch from a directory; Kafka's applier moves on.
    let inbox = p.work.join("inbox");
    tributary_suite::pipeline::deliver(&missing_bytes, &inbox, &p.site_id, &missing_name)?;
    let directory_config = p.config_with("directory.toml", &inbox, &p.key_file, "unused-state")?;
    tributary_suite::pipeline::run_ok(p.run_with(&directory_config, &["apply", "--once"])?)?;
    p.wait_caught_up(&mut [&mut capture, &mut ship, &mut apply])
        .await?;
    p.verify()?;
    let metrics = scrape(apply_metrics)?;
    assert_eq!(metrics.sum(held), 0.0, "{}", metrics.text());
    let records = "tributary_apply_kafka_records_total";
    assert!(metrics.require(records, &[("outcome", "held")])? >= 1.0);
    assert!(metrics.require(records, &[("outcome", "done")])? >= 3.0);
    let applied: Option<u64> =
        p.hq.conn()
            .await?
            .query_first("SELECT rows_applied FROM tributary_site_progress")
            .await?;
    assert_eq!(applied, Some(rows), "every row change applied exactly once");
    Ok(())
}

/// The same lost batch, but the site is seeded again instead (`seed --restart-stream`, the
/// remedy for a lost spool): the new epoch's batches come after the held one in the partition,
/// the Kafka applier reads on past the held batch, takes the new epoch, and keeps what was
/// left of the old one as stale. No batch is delivered by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_seeded_again_after_a_lost_batch_moves_on_over_kafka() -> Result<()> {
    let p = Pipeline::start(
        "kafka-gap-reseed",
        PipelineOptions {
            max_batch_rows: 50,
            ..PipelineOptions::default()
        },
    )
    .await?;
    let mock = MockCluster::new(1)?;
    mock.create_topic(TOPIC, 2, 1)?;
    p.use_kafka(&mock.bootstrap_servers(), TOPIC, 2)?;
    let mut capture = p.spawn("capture", "capture")?;
    let mut apply = p.spawn("apply", "apply")?;
    p.wait_capture_started("state", &capture).await?;
    let shape = PatientShape::default();
    let mut site = p.site.conn().await?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 0, 4, shape).await?;
    p.wait_capture_published("state", &capture).await?;
    capture.signal("TERM")?;
    assert!(capture.wait_exit(Duration::from_secs(30)).await?.success());
    p.take_from_spool(2)?;
    let mut capture = p.spawn("capture", "capture-again")?;
    let mut ship = p.spawn("ship", "ship")?;
    wait_held_at_batch_2(&p, &apply).await?;

    // The remedy at the site: everything again, in a new epoch, shipped behind the held batch.
    capture.signal("TERM")?;
    assert!(capture.wait_exit(Duration::from_secs(30)).await?.success());
    tributary_suite::pipeline::run_ok(p.run(&["seed", "--restart-stream"])?)?;
    let mut capture = p.spawn("capture", "capture-after-reseed")?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 4, 1, shape).await?;
    p.wait_caught_up(&mut [&mut capture, &mut ship, &mut apply])
        .await?;
    tributary_suite::pipeline::run_ok(p.run(&["verify", "--site", "clinic-a"])?)?;
    let (parked, conflicts) = p.parked_and_conflicts().await?;
    assert_eq!((parked, conflicts), (0, 0), "{}", p.status()?);
    let hq = &p.hq;
    wait_until(
        "the old epoch's left-over batches to be kept as stale",
        Duration::from_secs(60),
        move || async move {
            let stale: Option<u64> = hq
                .conn()
                .await?
                .query_first(
                    "SELECT COUNT(*) FROM tributary_rejected_batch WHERE reason_code = 'stale_epoch'",
                )
                .await?;
            Ok(stale.is_some_and(|n| n > 0))
        },
    )
    .await?;

    // Reading the whole topic again (a new consumer group, twice) applies nothing twice and
    // records no rejection twice: the second read adds nothing at all.
    let rejections = || async {
        let count: Option<u64> =
            p.hq.conn()
                .await?
                .query_first("SELECT COUNT(*) FROM tributary_rejected_batch")
                .await?;
        anyhow::Ok(count.unwrap_or(0))
    };
    let applied = || async {
        let rows: Option<u64> =
            p.hq.conn()
                .await?
                .query_first("SELECT rows_applied FROM tributary_site_progress")
                .await?;
        anyhow::Ok(rows)
    };
    let applied_before = applied().await?;
    let mut counts = Vec::new();
    for group in ["reread-1", "reread-2"] {
        let config = p.work.join(format!("{group}.toml"));
        let text = std::fs::read_to_string(&p.config)?
            .replace("group = \"tributary-hq\"", &format!("group = \"{group}\""));
        std::fs::write(&config, text)?;
        tributary_suite::pipeline::run_ok(p.run_with(&config, &["apply", "--once"])?)?;
        counts.push(rejections().await?);
    }
    assert_eq!(counts[0], counts[1], "a rejection recorded twice");
    assert_eq!(applied().await?, applied_before, "a batch applied twice");
    Ok(())
}

/// Waits until HQ holds the site after batch 1, waiting for batch 2.
async fn wait_held_at_batch_2(p: &Pipeline, apply: &tributary_suite::ChildGuard) -> Result<()> {
    let hq = &p.hq;
    wait_until(
        "HQ to hold the site at the gap",
        Duration::from_secs(60),
        move || async move {
            let row: Option<(u64, Option<u64>)> = hq
                .conn()
                .await?
                .query_first(
                    "SELECT last_sequence, waiting_for_sequence FROM tributary_site_progress",
                )
                .await?;
            Ok(row == Some((1, Some(2))))
        },
    )
    .await
    .map_err(|e| e.context(apply.logs()))
}
