//! The integration topics end to end (issue 7): a site's changes, applied at HQ, are published
//! by `tributary apply` on a real broker (tansu, its own process) in the Debezium envelope,
//! and read back here with our own Kafka client: one event per applied row on
//! `<prefix>.<database>.<table>` keyed by the row's identity, references given as identities,
//! masked columns hashed or left out, and BEGIN/END events on `<prefix>.transaction` whose
//! counts match the events of their transaction.

use anyhow::{Context, Result, ensure};
use mysql_async::prelude::*;
use rdkafka::Offset;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::TopicPartitionList;
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tributary::dataset::{self, PatientShape};
use tributary_apply::integration::{MaskAction, Masking};
use tributary_model::Value;
use tributary_suite::pipeline::{CATCH_UP, CLINIC, Pipeline, PipelineOptions};
use tributary_suite::{ChildGuard, MariaDb, Tansu, TcpProxy, example_bin, wait_until};

const PREFIX: &str = "hq";
const MASK_KEY: &str = "integration-test-masking-key";
const PATIENTS: u64 = 4;
/// Published tables: `visit` is synced but left out, so its topic must not appear.
const TABLES: &[&str] = &[
    "person",
    "person_name",
    "patient",
    "patient_identifier",
    "encounter",
    "obs",
];

/// One record read back.
struct Record {
    topic: String,
    key: Json,
    value: Json,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_changes_are_published_as_debezium_events_with_masked_columns() -> Result<()> {
    // Small batches: the site's work reaches HQ as several transactions.
    let p = Pipeline::start(
        "integration-topics",
        PipelineOptions {
            max_batch_rows: 40,
            ..PipelineOptions::default()
        },
    )
    .await?;
    let tansu = Tansu::start("integration-topics", None)?;
    let brokers = format!("127.0.0.1:{}", tansu.port());
    std::fs::write(p.work.join("mask.key"), format!("{MASK_KEY}\n"))?;
    let section = format!(
        "{}\n[hq.integration.mask]\n\"person_name.given_name\" = \"hash\"\n\
         \"person_name.family_name\" = \"drop\"\n",
        integration_section(&brokers, TABLES)
    );
    let config = std::fs::read_to_string(&p.config)?;

    // A rule naming a column HQ does not sync is refused at start, naming the field.
    let bad = p.work.join("bad-mask.toml");
    std::fs::write(
        &bad,
        format!("{config}{section}\"person_name.nickname\" = \"drop\"\n"),
    )?;
    let refused = p.run_with(&bad, &["apply", "--once"])?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        !refused.status.success()
            && stderr.contains("hq.integration.mask.\"person_name.nickname\"")
            && stderr.contains("its columns are"),
        "a bad masking rule is refused with its field: {stderr}"
    );

    std::fs::write(&p.config, format!("{config}{section}"))?;
    let mut capture = p.spawn("capture", "capture")?;
    let mut apply = p.spawn("apply", "apply")?;
    p.wait_capture_started("state", &capture).await?;
    let shape = PatientShape::default();
    let mut site = p.site.conn().await?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 0, PATIENTS, shape).await?;
    let live = dataset::live_changes(&mut site, "clinic-a", PATIENTS, shape).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    wait_published(&p.hq, &apply).await?;

    let database = p.hq.database().to_owned();
    // What must arrive: a create event for every clinical row the site made, the name
    // correction's update and the identifier's delete.
    let patient_names: BTreeSet<String> = (0..PATIENTS)
        .map(|n| dataset::patient_rows("clinic-a", n, shape).name)
        .collect();
    let mut expected: BTreeSet<(String, String, String)> = BTreeSet::new();
    for table in ["encounter", "obs", "person_name"] {
        let mut uuids: Vec<String> = site.query(format!("SELECT uuid FROM {table}")).await?;
        if table == "person_name" {
            // The users' names were there before capture started.
            uuids.retain(|uuid| patient_names.contains(uuid));
        }
        ensure!(!uuids.is_empty());
        for uuid in uuids {
            expected.insert((
                format!("{PREFIX}.{database}.{table}"),
                uuid.to_lowercase(),
                "c".into(),
            ));
        }
    }
    let corrected = dataset::patient_rows("clinic-a", 0, shape).name;
    expected.insert((
        format!("{PREFIX}.{database}.person_name"),
        corrected.to_lowercase(),
        "u".into(),
    ));
    let (_, deleted) = &live.deleted[0];
    expected.insert((
        format!("{PREFIX}.{database}.patient_identifier"),
        deleted.to_lowercase(),
        "d".into(),
    ));
    let read_brokers = brokers.clone();
    let (topics, records) = tokio::task::spawn_blocking({
        let expected = expected.clone();
        move || read_until_complete(&read_brokers, expected)
    })
    .await??;
    let topic = |table: &str| format!("{PREFIX}.{database}.{table}");
    let expected_topics: BTreeSet<String> = TABLES
        .iter()
        .map(|t| topic(t))
        .chain([format!("{PREFIX}.transaction")])
        .collect();
    ensure!(
        topics == expected_topics,
        "the publisher creates one topic per published table and the transaction topic: \
         {topics:?}"
    );
    let events: Vec<&Record> = records
        .iter()
        .filter(|r| r.topic != format!("{PREFIX}.transaction"))
        .collect();

    // Every event is in the envelope, keyed by the row's identity.
    for event in &events {
        let v = &event.value;
        ensure!(
            ["c", "u", "d", "r"].contains(&v["op"].as_str().unwrap_or_default()),
            "op: {v}"
        );
        ensure!(v["source"]["connector"] == "tributary" && v["source"]["site"] == "clinic-a");
        ensure!(v["source"]["db"] == database.as_str());
        ensure!(event.topic == topic(v["source"]["table"].as_str().unwrap_or_default()));
        let row = if v["op"] == "d" {
            &v["before"]
        } else {
            &v["after"]
        };
        // A row's identity is its uuid, or its parent's when it inherits it (patient).
        let own = row.get("uuid").or_else(|| row.get("patient_id"));
        ensure!(
            own.is_some() && event.key["identity"] == *own.unwrap_or(&Json::Null),
            "the key is the row's identity: {} vs {row}",
            event.key
        );
        ensure!(v["transaction"]["id"].is_string() && v["ts_ms"].is_u64());
    }

    // Names: the given name is the keyed hash of the site's current value, the family name is
    // not there, and no name appears in clear anywhere.
    let masking = Masking::new(
        BTreeMap::from([(
            ("person_name".to_owned(), "given_name".to_owned()),
            MaskAction::Hash,
        )]),
        MASK_KEY.as_bytes().to_vec(),
    );
    let names: Vec<(String, String, String)> = site
        .query("SELECT uuid, given_name, family_name FROM person_name")
        .await?
        .into_iter()
        .filter(|(uuid, _, _): &(String, String, String)| patient_names.contains(uuid))
        .collect();
    ensure!(names.len() == PATIENTS as usize);
    let mut last_name_event: BTreeMap<String, &Json> = BTreeMap::new();
    for event in events.iter().filter(|e| e.topic == topic("person_name")) {
        ensure!(
            event.value["after"].get("family_name").is_none(),
            "family_name is dropped: {}",
            event.value
        );
        let uuid = event.key["identity"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        last_name_event.insert(uuid, &event.value);
    }
    ensure!(last_name_event.len() == names.len(), "one name per person");
    for (uuid, given, family) in &names {
        let event = last_name_event
            .get(&uuid.to_lowercase())
            .with_context(|| format!("an event for person_name {uuid}"))?;
        ensure!(
            event["after"]["given_name"].as_str()
                == masking.hash(&Value::Text(given.clone())).as_deref(),
            "the given name is hashed with the key, as it is now"
        );
        for record in &records {
            let text = record.value.to_string();
            ensure!(!text.contains(given.as_str()) && !text.contains(family.as_str()));
        }
    }
    let name_ops: Vec<&str> = events
        .iter()
        .filter(|e| e.topic == topic("person_name"))
        .filter_map(|e| e.value["op"].as_str())
        .collect();
    ensure!(
        name_ops.contains(&"u"),
        "the name correction is an update: {name_ops:?}"
    );

    // References are the referenced rows' identities.
    let encounters: Vec<(String, String, String)> = site
        .query(
            "SELECT e.uuid, p.uuid, l.uuid FROM encounter e
             JOIN person p ON p.person_id = e.patient_id
             JOIN location l ON l.location_id = e.location_id",
        )
        .await?;
    ensure!(!encounters.is_empty());
    for (encounter, patient, location) in &encounters {
        let event = events
            .iter()
            .find(|e| {
                e.topic == topic("encounter") && e.key["identity"] == encounter.to_lowercase()
            })
            .with_context(|| format!("an event for encounter {encounter}"))?;
        let after = &event.value["after"];
        ensure!(
            after["patient_id"] == patient.to_lowercase()
                && after["location_id"] == location.to_lowercase(),
            "references as identities: {after}"
        );
    }

    // The deleted identifier is a delete event carrying the row as it was.
    let delete = events
        .iter()
        .find(|e| e.topic == topic("patient_identifier") && e.value["op"] == "d")
        .context("a delete event")?;
    ensure!(delete.key["identity"] == deleted.to_lowercase());
    ensure!(delete.value["after"].is_null() && delete.value["before"]["uuid"].is_string());
    ensure!(
        !events.iter().any(|e| e.topic == topic("visit")),
        "visit is not published"
    );

    // Each transaction: BEGIN, then END with the count of its events, per table too.
    let mut per_transaction: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for event in &events {
        let id = event.value["transaction"]["id"]
            .as_str()
            .unwrap_or_default();
        let table = event.value["source"]["table"].as_str().unwrap_or_default();
        *per_transaction
            .entry(id.to_owned())
            .or_default()
            .entry(format!("{database}.{table}"))
            .or_default() += 1;
    }
    let markers: Vec<&Json> = records
        .iter()
        .filter(|r| r.topic == format!("{PREFIX}.transaction"))
        .map(|r| &r.value)
        .collect();
    let mut begun = BTreeSet::new();
    let mut ended = BTreeSet::new();
    for marker in &markers {
        let id = marker["id"].as_str().unwrap_or_default().to_owned();
        match marker["status"].as_str() {
            Some("BEGIN") => {
                begun.insert(id);
            }
            Some("END") => {
                ensure!(begun.contains(&id), "BEGIN comes before END: {id}");
                let counts = per_transaction
                    .get(&id)
                    .with_context(|| format!("events of transaction {id}"))?;
                ensure!(marker["event_count"] == counts.values().sum::<u64>());
                for collection in marker["data_collections"]
                    .as_array()
                    .context("collections")?
                {
                    let name = collection["data_collection"].as_str().unwrap_or_default();
                    ensure!(collection["event_count"] == counts.get(name).copied().unwrap_or(0));
                }
                ensure!(
                    id.starts_with("clinic-a:"),
                    "a batch's transaction is named after it"
                );
                ended.insert(id);
            }
            other => anyhow::bail!("a transaction marker with status {other:?}"),
        }
    }
    ensure!(
        ended.len() == per_transaction.len(),
        "every transaction with events ends: {} of {}",
        ended.len(),
        per_transaction.len()
    );

    // Each row the site created is created once at HQ, so has exactly one create event.
    let mut creates: BTreeMap<(String, String), u64> = BTreeMap::new();
    for event in events.iter().filter(|e| e.value["op"] == "c") {
        let identity = event.key["identity"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        *creates.entry((event.topic.clone(), identity)).or_default() += 1;
    }
    let site_rows = expected.iter().filter(|(_, _, op)| op == "c");
    for (topic, identity, _) in site_rows {
        let count = creates
            .get(&(topic.clone(), identity.clone()))
            .copied()
            .unwrap_or(0);
        ensure!(count == 1, "{topic} {identity}: {count} create events");
    }
    // The example consumer of docs/integration-topics.md reads the same events.
    let mut example = std::process::Command::new(example_bin("integration_consumer"));
    example.args([&brokers, &topic("encounter")]);
    let example = ChildGuard::spawn(&mut example, &p.work.join("logs"), "example-consumer")?;
    let example_ref = &example;
    let encounter_uuids: Vec<String> = encounters
        .iter()
        .map(|(e, _, _)| e.to_lowercase())
        .collect();
    let uuids_ref = &encounter_uuids;
    wait_until(
        "the example consumer to print every encounter",
        CATCH_UP,
        move || {
            let printed = example_ref.logs();
            async move {
                Ok(uuids_ref
                    .iter()
                    .all(|uuid| printed.contains(&format!("c {uuid} from clinic-a"))))
            }
        },
    )
    .await?;
    drop(example);
    eprintln!(
        "{} change events in {} transactions on {} table topics",
        events.len(),
        ended.len(),
        TABLES.len()
    );
    drop(capture);
    drop(apply);
    drop(tansu);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_row_is_published_when_it_is_written_and_not_before() -> Result<()> {
    let p = Pipeline::start("integration-parked", PipelineOptions::default()).await?;
    let tansu = Tansu::start("integration-parked", None)?;
    let brokers = format!("127.0.0.1:{}", tansu.port());
    std::fs::write(p.work.join("mask.key"), format!("{MASK_KEY}\n"))?;
    let config = std::fs::read_to_string(&p.config)?;
    std::fs::write(
        &p.config,
        format!("{config}{}", integration_section(&brokers, &["location"])),
    )?;
    // A district HQ does not have: made before capture started, so it does not travel.
    let mut site = p.site.conn().await?;
    let district = dataset::demo_uuid("integration/district", 1);
    let insert_location = "INSERT INTO location (name, creator, date_created, retired, uuid, \
         parent_location) SELECT ?, u.user_id, '2024-01-01 00:00:00', 0, ?, \
         (SELECT location_id FROM location WHERE uuid = ?) FROM users u WHERE u.uuid = ?";
    site.exec_drop(
        insert_location,
        ("District", &district, "none", dataset::ADMIN_USER),
    )
    .await?;
    let mut capture = p.spawn("capture", "capture")?;
    let mut apply = p.spawn("apply", "apply")?;
    p.wait_capture_started("state", &capture).await?;

    // One source transaction: a post inside the district (parked at HQ: its parent is
    // missing) and a ward of the clinic (written).
    let post = dataset::demo_uuid("integration/post", 1);
    let ward = dataset::demo_uuid("integration/ward", 1);
    let mut tx = site.start_transaction(Default::default()).await?;
    tx.exec_drop(
        insert_location,
        ("Post", &post, &district, dataset::ADMIN_USER),
    )
    .await?;
    tx.exec_drop(
        insert_location,
        ("Ward", &ward, "none", dataset::ADMIN_USER),
    )
    .await?;
    tx.commit().await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let (parked, _) = p.parked_and_conflicts().await?;
    ensure!(
        parked == 1,
        "the post waits for its district: {parked} parked"
    );
    wait_published(&p.hq, &apply).await?;
    let location = format!("{PREFIX}.{}.location", p.hq.database());
    let expect = |uuid: &str, op: &str| (location.clone(), uuid.to_lowercase(), op.to_owned());
    let read_brokers = brokers.clone();
    let first = BTreeSet::from([expect(&ward, "c")]);
    let (_, records) =
        tokio::task::spawn_blocking(move || read_until_complete(&read_brokers, first)).await??;
    let events_of = |records: &[Record], uuid: &str| -> Vec<Json> {
        records
            .iter()
            .filter(|r| r.key["identity"] == uuid.to_lowercase())
            .map(|r| r.value.clone())
            .collect()
    };
    ensure!(
        events_of(&records, &post).is_empty(),
        "a parked row is not published: HQ has not written it"
    );

    // The district arrives (an edit at the site sends it): the post is released with it, in
    // the same HQ transaction, and published then.
    site.exec_drop(
        "UPDATE location SET description = 'district office' WHERE uuid = ?",
        (&district,),
    )
    .await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let (parked, _) = p.parked_and_conflicts().await?;
    ensure!(parked == 0, "the post was released");
    wait_published(&p.hq, &apply).await?;
    let second = BTreeSet::from([expect(&district, "u"), expect(&post, "c")]);
    let read_brokers = brokers.clone();
    let (_, records) =
        tokio::task::spawn_blocking(move || read_until_complete(&read_brokers, second)).await??;
    let post_events = events_of(&records, &post);
    let district_events = events_of(&records, &district);
    ensure!(
        post_events.len() == 1 && district_events.len() == 1,
        "one event each: {post_events:?} {district_events:?}"
    );
    ensure!(
        post_events[0]["transaction"]["id"] == district_events[0]["transaction"]["id"],
        "released in the district's HQ transaction"
    );
    ensure!(post_events[0]["after"]["parent_location"] == district.to_lowercase());
    drop(capture);
    drop(apply);
    drop(tansu);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_applied_while_the_broker_is_unreachable_wait_and_are_published_once_it_returns()
-> Result<()> {
    let p = Pipeline::start("integration-outage", PipelineOptions::default()).await?;
    let proxy = TcpProxy::bind()?;
    let tansu = Tansu::start("integration-outage", Some(proxy.port()))?;
    proxy.forward_to(tansu.port());
    let brokers = format!("127.0.0.1:{}", proxy.port());
    std::fs::write(p.work.join("mask.key"), format!("{MASK_KEY}\n"))?;
    let config = std::fs::read_to_string(&p.config)?;
    std::fs::write(
        &p.config,
        format!("{config}{}", integration_section(&brokers, &["encounter"])),
    )?;
    let mut capture = p.spawn("capture", "capture")?;
    let mut apply = p.spawn("apply", "apply")?;
    p.wait_capture_started("state", &capture).await?;
    let shape = PatientShape::default();
    let mut site = p.site.conn().await?;
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 0, 2, shape).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    wait_published(&p.hq, &apply).await?;

    // The broker cannot be reached: HQ keeps applying, and what it applied waits in HQ's
    // outbox, also across the applier's restart.
    proxy.cut();
    dataset::load_patients(&mut site, CLINIC, "clinic-a", 2, 2, shape).await?;
    p.wait_caught_up(&mut [&mut capture, &mut apply]).await?;
    let mut hq = p.hq.conn().await?;
    let waiting: Option<u64> = hq
        .query_first("SELECT COUNT(*) FROM tributary_integration_outbox")
        .await?;
    ensure!(waiting > Some(0), "applied changes wait for the broker");
    apply.signal("TERM")?;
    let apply_ref = &mut apply;
    wait_until("the applier to stop", CATCH_UP, move || {
        let running = apply_ref.is_running();
        async move { Ok(!running) }
    })
    .await?;

    // The broker returns: `apply --once` publishes what waits before it exits.
    proxy.restore();
    let drained = p.run(&["apply", "--once"])?;
    ensure!(
        drained.status.success(),
        "{}",
        String::from_utf8_lossy(&drained.stderr)
    );
    let waiting: Option<u64> = hq
        .query_first("SELECT COUNT(*) FROM tributary_integration_outbox")
        .await?;
    ensure!(waiting == Some(0), "the drain published everything");
    let encounters: Vec<String> = site.query("SELECT uuid FROM encounter").await?;
    let topic = format!("{PREFIX}.{}.encounter", p.hq.database());
    let expected: BTreeSet<(String, String, String)> = encounters
        .iter()
        .map(|uuid| (topic.clone(), uuid.to_lowercase(), "c".to_owned()))
        .collect();
    let per_patient = shape.visits * shape.encounters_per_visit;
    ensure!(
        expected.len() == 4 * per_patient as usize,
        "{} encounters",
        expected.len()
    );
    let (_, records) =
        tokio::task::spawn_blocking(move || read_until_complete(&brokers, expected)).await??;
    eprintln!(
        "{} encounter events, {} records in all, after the outage",
        encounters.len(),
        records.len()
    );
    drop(capture);
    drop(tansu);
    Ok(())
}

/// `[hq.integration]` publishing `tables` to `brokers` under [`PREFIX`], masking key
/// `mask.key` beside the configuration.
fn integration_section(brokers: &str, tables: &[&str]) -> String {
    let tables: Vec<String> = tables.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "\n[hq.integration]\nbrokers = \"{brokers}\"\ntopic_prefix = \"{PREFIX}\"\n\
         replication_factor = 1\npoll_interval_ms = 50\nhash_key_file = \"mask.key\"\n\
         tables = [{}]\n",
        tables.join(", ")
    )
}

/// Waits until HQ's integration outbox is empty: everything applied was published.
async fn wait_published(hq: &MariaDb, apply: &ChildGuard) -> Result<()> {
    wait_until("HQ's integration outbox to empty", CATCH_UP, || async {
        let mut conn = hq.conn().await?;
        let waiting: Option<u64> = conn
            .query_first("SELECT COUNT(*) FROM tributary_integration_outbox")
            .await?;
        Ok(waiting == Some(0))
    })
    .await
    .map_err(|e| e.context(apply.logs()))
}

/// Every record of every `hq.` topic, read with our own client until the `expected` events
/// (topic, identity, op) are there and every transaction they belong to has ended. (Tansu's
/// high watermark counts record batches, not records, so it cannot say where a topic ends.)
fn read_until_complete(
    brokers: &str,
    mut expected: BTreeSet<(String, String, String)>,
) -> Result<(BTreeSet<String>, Vec<Record>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "integration-topics-test")
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    let mut topics = BTreeSet::new();
    let mut assignment = TopicPartitionList::new();
    for topic in metadata.topics() {
        if !topic.name().starts_with(&format!("{PREFIX}.")) {
            continue;
        }
        topics.insert(topic.name().to_owned());
        for partition in topic.partitions() {
            assignment.add_partition_offset(topic.name(), partition.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    let mut records = Vec::new();
    // Per transaction: events read, and the count its END announced.
    let mut transactions: BTreeMap<String, (u64, Option<u64>)> = BTreeMap::new();
    let complete = |expected: &BTreeSet<_>, transactions: &BTreeMap<String, (u64, Option<u64>)>| {
        expected.is_empty()
            && transactions
                .values()
                .all(|(read, announced)| Some(*read) == *announced)
    };
    let deadline = Instant::now() + CATCH_UP;
    while !complete(&expected, &transactions) {
        ensure!(
            Instant::now() < deadline,
            "events still missing: {expected:?}; transactions (events read, END's count): \
             {transactions:?}"
        );
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message?;
        let record = Record {
            topic: message.topic().to_owned(),
            key: serde_json::from_slice(message.key().unwrap_or_default())?,
            value: serde_json::from_slice(message.payload().unwrap_or_default())?,
        };
        let text = |v: &Json| v.as_str().unwrap_or_default().to_owned();
        if record.topic == format!("{PREFIX}.transaction") {
            if record.value["status"] == "END" {
                transactions.entry(text(&record.value["id"])).or_default().1 =
                    record.value["event_count"].as_u64();
            }
        } else {
            transactions
                .entry(text(&record.value["transaction"]["id"]))
                .or_default()
                .0 += 1;
            expected.remove(&(
                record.topic.clone(),
                text(&record.key["identity"]),
                text(&record.value["op"]),
            ));
        }
        records.push(record);
    }
    Ok((topics, records))
}
