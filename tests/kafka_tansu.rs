//! The Kafka transport end to end against a real broker in its own process (tansu, memory
//! storage), through a link the test cuts: the site keeps changing data (over 100,000 row
//! changes) while the shipper and the applier cannot reach the broker; the broker itself keeps
//! running (its memory storage would lose everything if stopped). When the link returns,
//! everything arrives exactly once. Guards invariants 1 and 2 over a real Kafka protocol
//! implementation, and prints the shipper's and the consumer's throughput through tansu.

use anyhow::{Context, Result};
use mysql_async::prelude::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tributary::dataset::{self, PatientShape};
use tributary_suite::pipeline::{
    CATCH_UP, CLINIC, Pipeline, PipelineOptions, run_ok, tributary_capture_checkpoint,
};
use tributary_suite::{Tansu, TcpProxy, wait_until};

const TOPIC: &str = "tributary.batches";
/// Patients written while the link is down: 3,000 x 34 rows = 102,000 row changes.
const OUTAGE_PATIENTS: u64 = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_broker_outage_loses_and_doubles_nothing() -> Result<()> {
    let p = Pipeline::start(
        "kafka-tansu",
        PipelineOptions {
            max_batch_rows: 500,
            ..PipelineOptions::default()
        },
    )
    .await?;
    let proxy = TcpProxy::bind()?;
    let tansu = Tansu::start("kafka-tansu", Some(proxy.port()))?;
    proxy.forward_to(tansu.port());
    p.use_kafka(&format!("127.0.0.1:{}", proxy.port()), TOPIC, 4)?;
    let init = run_ok(p.run(&["kafka", "init"])?).context(tansu.log_tail())?;
    assert!(init.contains("created topic"), "{init}");
    let again = run_ok(p.run(&["kafka", "init"])?)?;
    assert!(
        again.contains("exists"),
        "kafka init is idempotent: {again}"
    );

    let mut capture = p.spawn("capture", "capture")?;
    let mut ship = p.spawn("ship", "ship")?;
    let mut apply = p.spawn("apply", "apply")?;
    p.wait_capture_started("state", &capture).await?;
    let shape = PatientShape::default();
    let mut rows =
        dataset::load_patients(&mut p.site.conn().await?, CLINIC, "clinic-a", 0, 20, shape).await?;
    p.wait_caught_up(&mut [&mut capture, &mut ship, &mut apply])
        .await?;

    // The link goes down for as long as the site needs to make 100k+ row changes.
    proxy.cut();
    let outage = Instant::now();
    let spooled_at_cut = p.spooled_batches()?.len();
    let half = OUTAGE_PATIENTS / 2;
    let writers: Vec<_> = [(20, half), (20 + half, OUTAGE_PATIENTS - half)]
        .into_iter()
        .map(|(first, count)| p.spawn_patient_load(first, count, shape))
        .collect();
    for writer in writers {
        rows += writer.await??;
    }
    let live = dataset::live_changes(
        &mut p.site.conn().await?,
        "clinic-a",
        20 + OUTAGE_PATIENTS,
        shape,
    )
    .await?;
    rows += live.rows;
    p.wait_capture_published("state", &capture).await?;
    // ... and longer: until the clients have tried to reconnect many times (librdkafka backs
    // off to 10 s between attempts, so this takes about a minute).
    let proxy_ref = &proxy;
    wait_until(
        "the clients to try the broker 50 times",
        Duration::from_secs(180),
        move || async move { Ok(proxy_ref.attempts_while_cut() >= 50) },
    )
    .await?;
    let attempts_per_s = proxy.attempts_while_cut() as f64 / outage.elapsed().as_secs_f64();
    assert!(
        attempts_per_s < 10.0,
        "clients back off while the broker is unreachable ({attempts_per_s:.1} connections/s)"
    );
    let spooled = p.spooled_batches()?;
    assert!(
        spooled.len() > spooled_at_cut + 100,
        "the batches of the outage wait in the spool ({} -> {})\n{}",
        spooled_at_cut,
        spooled.len(),
        ship.logs()
    );
    assert!(ship.is_running() && apply.is_running(), "both keep running");
    let bytes = p.spool_bytes()?;
    eprintln!(
        "link down for {:.0} s ({} reconnect attempts) while the site made {} row changes; {} batches ({:.1} MB) spooled",
        outage.elapsed().as_secs_f64(),
        proxy.attempts_while_cut(),
        rows,
        spooled.len(),
        bytes as f64 / 1e6
    );

    // The link returns: the spool drains, HQ catches up.
    proxy.restore();
    let restored = Instant::now();
    let spool_empty = || {
        let spooled = p.spooled_batches();
        // (Capture keeps adding a keepalive batch every 0.5 s: one may be waiting.)
        async move { spooled.map(|s| s.len() <= 1) }
    };
    wait_until("the shipper to empty the spool", CATCH_UP, spool_empty)
        .await
        .map_err(|e| e.context(ship.logs()))?;
    let shipped_in = restored.elapsed().as_secs_f64();
    p.wait_caught_up(&mut [&mut capture, &mut ship, &mut apply])
        .await
        .map_err(|e| e.context(tansu.log_tail()))?;
    let applied_in = restored.elapsed().as_secs_f64();
    let batches = spooled.len() as f64;
    eprintln!(
        "shipper through tansu: {batches} batches, {:.1} MB in {shipped_in:.1} s = {:.0} batches/s, {:.2} MB/s",
        bytes as f64 / 1e6,
        batches / shipped_in,
        bytes as f64 / 1e6 / shipped_in
    );
    eprintln!(
        "consumer + apply at HQ (debug build): {batches} batches, {rows} rows in {applied_in:.1} s = {:.0} batches/s, {:.2} MB/s, {:.0} rows/s",
        batches / applied_in,
        bytes as f64 / 1e6 / applied_in,
        rows as f64 / applied_in
    );

    // HQ equals the site, and HQ's bookkeeping applied every batch exactly once.
    p.verify()?;
    let mut hq = p.hq.conn().await?;
    let (last, rows_applied): (u64, u64) = hq
        .query_first("SELECT last_sequence, rows_applied FROM tributary_site_progress")
        .await?
        .context("progress row")?;
    assert_eq!(rows_applied, rows, "every row change applied exactly once");
    let rejected: Option<u64> = hq
        .query_first("SELECT COUNT(*) FROM tributary_rejected_batch")
        .await?;
    assert_eq!(rejected, Some(0));
    let (_, next, _) =
        tributary_capture_checkpoint(&p.work.join("state"))?.context("checkpoint")?;
    assert!(
        last + 1 >= next - 1,
        "HQ applied up to the last published batch"
    );
    let log = strip_ansi(&apply.stderr());
    let applied: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("applied batch"))
        .filter_map(|l| {
            l.split("sequence=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let unique: BTreeSet<u64> = applied.iter().copied().collect();
    assert_eq!(unique.len(), applied.len(), "no batch applied twice");
    assert_eq!(unique.first(), Some(&1));
    assert_eq!(unique.last(), Some(&last));
    assert_eq!(unique.len() as u64, last, "no batch skipped");

    // One outage, one warning: not one per reconnect attempt.
    let warnings = ship.stderr().matches("kafka brokers unreachable").count();
    assert!(
        (1..=2).contains(&warnings),
        "the outage is logged once, not per attempt ({warnings} times)"
    );
    for child in [&mut ship, &mut apply, &mut capture] {
        child.signal("TERM")?;
        let status = child.wait_exit(Duration::from_secs(30)).await?;
        assert!(
            status.success(),
            "{} stops cleanly\n{}",
            child.name(),
            child.logs()
        );
    }
    Ok(())
}

/// The log without its colour escapes (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
