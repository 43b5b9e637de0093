//! Fifty sites feeding one HQ at once over Kafka (issue 9), through librdkafka's mock cluster
//! (three brokers; tansu does not expire a killed consumer's group membership, so the survivor
//! of a killed applier would never get its partitions there): fifty site streams with their own ids and keys, interleaved on one topic of
//! eight partitions, applied by two appliers in one consumer group, one of them killed
//! mid-stream. Every site converges, each row is applied once, and three misbehaving sites (one
//! sealing with a key HQ does not have, one whose first patient arrives without its person,
//! one whose observations carry a column HQ lacks) block none of the others. Prints throughput, HQ statements and applier memory.
//!
//! The sites' work is real: one site database holds the fifty clinics' patients (each clinic
//! its own uuids), capture turns it into batches once, and each source transaction is sent
//! again as its clinic's stream, sealed with that clinic's key.

use anyhow::{Context, Result, ensure};
use mysql_async::prelude::*;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;
use tributary::dataset::{self, PatientShape};
use tributary_batch::{BatchHeader, Keyring, SiteKey};
use tributary_model::{BatchPayload, SourceTransaction};
use tributary_suite::pipeline::{CATCH_UP, CLINIC, Pipeline, PipelineOptions, batch_files};
use tributary_suite::wait_until;

const SITES: usize = 50;
const PATIENTS_PER_SITE: u64 = 4;
const TRANSACTIONS_PER_BATCH: usize = 2;
const TOPIC: &str = "tributary.batches";
const PARTITIONS: u32 = 8;
const EPOCH: u64 = 1_000;
/// Seals with a key HQ does not have: every batch rejected.
const FORGED: usize = SITES - 1;
/// Its first patient arrives without the person: those rows wait, parked.
const BROKEN: usize = SITES - 2;
/// Its observations carry a column HQ's `obs` lacks (a module HQ does not run): they park.
const DRIFTED: usize = SITES - 3;
const DRIFTED_COLUMN: &str = "site_module_flag";

fn site_id(site: usize) -> String {
    format!("fleet-{site:02}")
}

/// One clinic's stream: sealed batches in sequence order, and the rows they carry.
struct Stream {
    batches: Vec<Vec<u8>>,
    rows: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sites_converge_through_two_appliers_and_a_misbehaving_site_blocks_none() -> Result<()>
{
    let p = Pipeline::start("fleet", PipelineOptions::default()).await?;
    let shape = PatientShape::one_encounter(3);

    // 1. The clinics' work, captured once.
    let mut capture = p.spawn("capture", "capture")?;
    p.wait_capture_started("state", &capture).await?;
    let mut site = p.site.conn().await?;
    for clinic in 0..SITES {
        dataset::load_patients(
            &mut site,
            CLINIC,
            &site_id(clinic),
            0,
            PATIENTS_PER_SITE,
            shape,
        )
        .await?;
    }
    p.wait_capture_published("state", &capture).await?;
    capture.kill9()?;
    let keyring = Keyring::load_files([&p.key_file])?;
    let mut transactions = Vec::new();
    for file in batch_files(&p.work.join("batches"), &p.site_id)? {
        let (_, json) = tributary_batch::open(&std::fs::read(&file)?, &keyring)?;
        let payload: BatchPayload = serde_json::from_slice(&json)?;
        transactions.extend(payload.transactions);
        std::fs::remove_file(file)?;
    }

    // 2. Fifty streams, each transaction to the clinic whose patient it writes.
    let mut owner: HashMap<String, usize> = HashMap::new();
    for clinic in 0..SITES {
        for n in 0..PATIENTS_PER_SITE {
            owner.insert(
                dataset::patient_rows(&site_id(clinic), n, shape).person,
                clinic,
            );
        }
    }
    let mut by_site: Vec<Vec<SourceTransaction>> = vec![Vec::new(); SITES];
    for transaction in transactions {
        let clinic = transaction
            .rows
            .iter()
            .find(|r| r.table == "person")
            .and_then(|r| owner.get(r.identity.as_str()));
        if let Some(&clinic) = clinic {
            by_site[clinic].push(transaction);
        }
    }
    let keys_dir = p.key_file.parent().context("key directory")?;
    let mut streams = Vec::new();
    for (clinic, mut site_transactions) in by_site.into_iter().enumerate() {
        ensure!(
            site_transactions.len() == PATIENTS_PER_SITE as usize,
            "clinic {clinic}: {} transactions",
            site_transactions.len()
        );
        let key = SiteKey::generate(&site_id(clinic))?;
        if clinic != FORGED {
            key.write_new(&keys_dir.join(key.file_name()))?;
        }
        if clinic == BROKEN {
            site_transactions[0].rows.retain(|r| r.table != "person");
        }
        if clinic == DRIFTED {
            for row in site_transactions.iter_mut().flat_map(|t| t.rows.iter_mut()) {
                if row.table == "obs" {
                    row.columns
                        .insert(DRIFTED_COLUMN.into(), tributary_model::Value::Int(1));
                }
            }
        }
        streams.push(seal_stream(&key, site_transactions)?);
    }

    // 3. HQ reads them from one topic, with two appliers in one group.
    let mock = MockCluster::new(3)?;
    mock.create_topic(TOPIC, PARTITIONS as i32, 3)?;
    let brokers = mock.bootstrap_servers();
    p.use_kafka(&brokers, TOPIC, PARTITIONS)?;
    let config = std::fs::read_to_string(&p.config)?;
    std::fs::write(
        &p.config,
        format!(
            "{config}\n[transport.kafka.librdkafka]\n\"session.timeout.ms\" = 6000\n\
             \"heartbeat.interval.ms\" = 1000\n"
        ),
    )?;
    let started = Instant::now();
    produce_interleaved(&brokers, &streams).await?;
    let produced_in = started.elapsed();
    let mut first = p.spawn("apply", "apply-1")?;
    let mut second = p.spawn("apply", "apply-2")?;
    let total_batches: usize = streams.iter().map(|s| s.batches.len()).sum();

    // One applier dies mid-stream; the other takes its partitions over.
    let hq = &p.hq;
    wait_until(
        "HQ to apply a third of the batches",
        CATCH_UP,
        || async move { Ok(applied_batches(hq).await? * 3 >= total_batches as u64) },
    )
    .await
    .map_err(|e| e.context(first.logs()))?;
    first.kill9()?;
    let expected: Vec<(String, u64)> = (0..SITES)
        .filter(|&clinic| clinic != FORGED)
        .map(|clinic| (site_id(clinic), streams[clinic].batches.len() as u64))
        .collect();
    let expected_ref = &expected;
    wait_until("every clinic to converge", CATCH_UP * 2, || async move {
        let progress = site_progress(hq).await?;
        Ok(expected_ref
            .iter()
            .all(|(site, batches)| progress.get(site).is_some_and(|(seq, _)| seq == batches)))
    })
    .await
    .map_err(|e| e.context(second.logs()))?;
    let applied_in = started.elapsed();
    ensure!(second.is_running(), "{}", second.logs());

    // Each clinic's rows are at HQ once; the broken clinic's first patient waits; the forged
    // clinic's batches were all refused.
    let progress = site_progress(hq).await?;
    let mut conn = hq.conn().await?;
    let mut rows_expected = 0;
    for (clinic, stream) in streams.iter().enumerate() {
        let id = site_id(clinic);
        let persons: Vec<String> = (0..PATIENTS_PER_SITE)
            .map(|n| dataset::patient_rows(&id, n, shape).person)
            .collect();
        let at_hq: u64 = conn
            .exec_first(
                format!(
                    "SELECT COUNT(*) FROM person WHERE uuid IN ({})",
                    vec!["?"; persons.len()].join(",")
                ),
                persons,
            )
            .await?
            .unwrap_or(0);
        match clinic {
            FORGED => ensure!(
                at_hq == 0
                    && progress
                        .get(&id)
                        .is_none_or(|(seq, rows)| *seq == 0 && *rows == 0),
                "{id}: {at_hq} persons, progress {:?}",
                progress.get(&id)
            ),
            BROKEN => ensure!(at_hq == PATIENTS_PER_SITE - 1, "{id}: {at_hq} persons"),
            _ => ensure!(at_hq == PATIENTS_PER_SITE, "{id}: {at_hq} persons"),
        }
        if clinic != FORGED {
            rows_expected += stream.rows;
        }
    }
    let rows_applied: u64 = progress.values().map(|(_, rows)| rows).sum();
    let parked: u64 =
        p.hq.scalar("SELECT COUNT(*) FROM tributary_parked_row")
            .await?;
    let parked_elsewhere: u64 =
        p.hq.scalar(&format!(
            "SELECT COUNT(*) FROM tributary_parked_row WHERE site_id NOT IN ('{}', '{}')",
            site_id(BROKEN),
            site_id(DRIFTED)
        ))
        .await?;
    ensure!(
        parked > 0 && parked_elsewhere == 0,
        "only the broken and the drifted clinics wait: {parked} parked, {parked_elsewhere} \
         elsewhere"
    );
    let drifted_obs: u64 =
        p.hq.scalar(&format!(
            "SELECT COUNT(*) FROM tributary_parked_row WHERE site_id = '{}' AND table_name = 'obs' \
             AND reason LIKE '%{DRIFTED_COLUMN}%'",
            site_id(DRIFTED)
        ))
        .await?;
    ensure!(
        drifted_obs == PATIENTS_PER_SITE * 3,
        "the drifted clinic's observations wait, saying why ({drifted_obs})"
    );
    ensure!(
        rows_applied + parked == rows_expected,
        "every row applied once: {rows_applied} applied + {parked} parked, {rows_expected} sent"
    );
    let forged: u64 =
        p.hq.scalar(&format!(
            "SELECT COUNT(*) FROM tributary_rejected_batch WHERE site_id = '{}'",
            site_id(FORGED)
        ))
        .await?;
    ensure!(
        forged >= 1 && forged <= streams[FORGED].batches.len() as u64,
        "the forged clinic's batches are refused and recorded ({forged})"
    );
    let peak_kib = tributary_suite::peak_rss_kib(Some(second.id())).unwrap_or(0);
    eprintln!(
        "{SITES} sites, {total_batches} batches, {rows_expected} rows: produced in {:.1} s; \
         applied by two appliers (one killed after a third) in {:.1} s = {:.0} rows/s; \
         {} HQ statements; surviving applier peak RSS {} MiB",
        produced_in.as_secs_f64(),
        applied_in.as_secs_f64(),
        rows_expected as f64 / applied_in.as_secs_f64(),
        p.hq.statements_run().await?,
        peak_kib / 1024
    );
    drop(second);
    drop(mock);
    Ok(())
}

/// Seals a clinic's transactions as its stream, a few transactions a batch.
fn seal_stream(key: &SiteKey, transactions: Vec<SourceTransaction>) -> Result<Stream> {
    let rows = transactions.iter().map(|t| t.rows.len() as u64).sum();
    let mut batches = Vec::new();
    for (index, chunk) in transactions.chunks(TRANSACTIONS_PER_BATCH).enumerate() {
        let payload = BatchPayload {
            transactions: chunk.to_vec(),
            ..BatchPayload::default()
        };
        let header = BatchHeader::new(
            key.site_id(),
            key.key_id(),
            EPOCH,
            index as u64 + 1,
            u32::try_from(payload.row_count())?,
        );
        batches.push(tributary_batch::seal(
            &header,
            &serde_json::to_vec(&payload)?,
            key,
        )?);
    }
    Ok(Stream { batches, rows })
}

/// Sends every stream at once: round-robin over the clinics, each in its own order.
async fn produce_interleaved(brokers: &str, streams: &[Stream]) -> Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    let longest = streams.iter().map(|s| s.batches.len()).max().unwrap_or(0);
    let mut deliveries = Vec::new();
    for sequence in 0..longest {
        for (clinic, stream) in streams.iter().enumerate() {
            let Some(batch) = stream.batches.get(sequence) else {
                continue;
            };
            let id = site_id(clinic);
            let record = FutureRecord::to(TOPIC).key(&id).payload(batch).headers(
                tributary_kafka::batch_headers(&id, EPOCH, sequence as u64 + 1),
            );
            deliveries.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| anyhow::anyhow!("sending: {e}"))?,
            );
        }
    }
    for delivery in deliveries {
        delivery
            .await
            .context("delivery report")?
            .map_err(|(e, _)| anyhow::anyhow!("delivery: {e}"))?;
    }
    Ok(())
}

/// Per site at HQ: the last sequence applied and the rows applied.
async fn site_progress(hq: &tributary_suite::MariaDb) -> Result<BTreeMap<String, (u64, u64)>> {
    let mut conn = hq.conn().await?;
    let rows: Vec<(String, u64, u64)> = conn
        .query("SELECT site_id, last_sequence, rows_applied FROM tributary_site_progress")
        .await?;
    Ok(rows
        .into_iter()
        .map(|(site, seq, rows)| (site, (seq, rows)))
        .collect())
}

async fn applied_batches(hq: &tributary_suite::MariaDb) -> Result<u64> {
    Ok(site_progress(hq).await?.values().map(|(seq, _)| seq).sum())
}
