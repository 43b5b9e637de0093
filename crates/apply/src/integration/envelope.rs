//! Change events in the Debezium MySQL envelope (JSON without schemas), and the transaction
//! metadata events around them. `docs/integration-topics.md` describes every field.
//!
//! Topics: `<prefix>.<database>.<table>` per table, keyed by the row's identity; and
//! `<prefix>.transaction`, a BEGIN and an END event per HQ transaction, keyed by its id.

use super::applied::AppliedChange;
use super::masking::{MaskAction, Masking};
use super::outbox::OutboxEntry;
use serde_json::{Map, Value as Json, json};
use std::collections::{BTreeMap, BTreeSet};
use tributary_model::{Columns, Op, Value};

/// How events are named and filtered.
#[derive(Debug, Clone)]
pub struct EnvelopeSettings {
    /// The first part of every topic name (Debezium's `topic.prefix`).
    pub topic_prefix: String,
    /// HQ's database name, the second part of a table topic's name.
    pub database: String,
    /// Tables published; every synced table when `None`.
    pub tables: Option<BTreeSet<String>>,
    pub masking: Masking,
    /// The columns HQ syncs per table, read from HQ's schema when publishing starts: a column
    /// HQ writes rows without (a site on a newer OpenMRS) is not published. `None`: all.
    pub published_columns: Option<BTreeMap<String, BTreeSet<String>>>,
}

impl EnvelopeSettings {
    fn publishes(&self, table: &str) -> bool {
        self.tables.as_ref().is_none_or(|t| t.contains(table))
    }
}

/// One record to send.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub topic: String,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

pub fn table_topic(settings: &EnvelopeSettings, table: &str) -> String {
    format!("{}.{}.{}", settings.topic_prefix, settings.database, table)
}

pub fn transaction_topic(settings: &EnvelopeSettings) -> String {
    format!("{}.transaction", settings.topic_prefix)
}

/// The records of one outbox entry in order: BEGIN, the change events, END. Nothing when
/// none of its tables is published.
pub fn records_for(entry: &OutboxEntry, settings: &EnvelopeSettings) -> Vec<EventRecord> {
    let published: Vec<&AppliedChange> = entry
        .changes
        .iter()
        .filter(|c| settings.publishes(&c.change.table))
        .collect();
    if published.is_empty() {
        return Vec::new();
    }
    let id = entry.transaction_id();
    let transaction_key = json!({ "id": id }).to_string().into_bytes();
    let mut records = Vec::with_capacity(published.len() + 2);
    records.push(EventRecord {
        topic: transaction_topic(settings),
        key: transaction_key.clone(),
        value: json!({
            "status": "BEGIN",
            "id": id,
            "event_count": null,
            "data_collections": null,
            "ts_ms": entry.applied_at_ms,
        })
        .to_string()
        .into_bytes(),
    });
    let mut per_collection: BTreeMap<String, u64> = BTreeMap::new();
    for (order, applied) in published.iter().enumerate() {
        let collection = format!("{}.{}", settings.database, applied.change.table);
        let collection_order = per_collection.entry(collection).or_default();
        *collection_order += 1;
        let position = Position {
            id: &id,
            total_order: order as u64 + 1,
            data_collection_order: *collection_order,
        };
        records.push(change_event(entry, applied, position, settings));
    }
    let collections: Vec<Json> = per_collection
        .into_iter()
        .map(|(name, count)| json!({ "data_collection": name, "event_count": count }))
        .collect();
    records.push(EventRecord {
        topic: transaction_topic(settings),
        key: transaction_key,
        value: json!({
            "status": "END",
            "id": id,
            "event_count": published.len(),
            "data_collections": collections,
            "ts_ms": entry.applied_at_ms,
        })
        .to_string()
        .into_bytes(),
    });
    records
}

/// Where an event stands in its transaction.
struct Position<'a> {
    id: &'a str,
    total_order: u64,
    data_collection_order: u64,
}

fn change_event(
    entry: &OutboxEntry,
    applied: &AppliedChange,
    position: Position<'_>,
    settings: &EnvelopeSettings,
) -> EventRecord {
    let change = &applied.change;
    let row = || row_json(&change.table, &change.columns, settings);
    let (op, before, after) = match change.op {
        Op::Insert if applied.snapshot => ("r", Json::Null, row()),
        Op::Insert => ("c", Json::Null, row()),
        Op::Update => ("u", Json::Null, row()),
        Op::Delete => ("d", row(), Json::Null),
    };
    let source = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "connector": "tributary",
        "name": settings.topic_prefix,
        "ts_ms": applied.committed_at.map_or(entry.applied_at_ms, |s| s.saturating_mul(1000)),
        "snapshot": if applied.snapshot { "true" } else { "false" },
        "db": settings.database,
        "table": change.table,
        "site": applied.site_id,
        "epoch": applied.epoch,
        "sequence": applied.sequence,
        "gtid": applied.gtid,
    });
    let value = json!({
        "before": before,
        "after": after,
        "source": source,
        "op": op,
        "ts_ms": entry.applied_at_ms,
        "transaction": {
            "id": position.id,
            "total_order": position.total_order,
            "data_collection_order": position.data_collection_order,
        },
    });
    EventRecord {
        topic: table_topic(settings, &change.table),
        key: json!({ "identity": change.identity.as_str() })
            .to_string()
            .into_bytes(),
        value: value.to_string().into_bytes(),
    }
}

/// A row as a JSON object: references as the referenced row's identity, bytes as hex,
/// masked columns hashed or left out.
fn row_json(table: &str, columns: &Columns, settings: &EnvelopeSettings) -> Json {
    let masking = &settings.masking;
    let hq_columns = settings
        .published_columns
        .as_ref()
        .and_then(|tables| tables.get(table));
    let mut object = Map::with_capacity(columns.len());
    for (column, value) in columns {
        if hq_columns.is_some_and(|names| !names.contains(&**column)) {
            continue;
        }
        let json = match masking.action(table, column) {
            Some(MaskAction::Drop) => continue,
            Some(MaskAction::Hash) => masking.hash(value).map_or(Json::Null, Json::String),
            None => value_json(value),
        };
        object.insert(column.to_string(), json);
    }
    Json::Object(object)
}

fn value_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Int(v) => json!(v),
        Value::UInt(v) => json!(v),
        Value::Float(v) => json!(v),
        Value::Text(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::String(hex::encode(b)),
        Value::Ref(r) => Json::String(r.identity.as_str().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_model::{Identity, RowChange, RowRef};

    fn settings(masking: Masking) -> EnvelopeSettings {
        EnvelopeSettings {
            topic_prefix: "hq".into(),
            database: "openmrs".into(),
            tables: None,
            masking,
            published_columns: None,
        }
    }

    fn name_change(op: Op, snapshot: bool) -> AppliedChange {
        let mut columns = Columns::new();
        columns.insert("uuid".into(), Value::Text("n-1".into()));
        columns.insert("given_name".into(), Value::Text("Amina".into()));
        columns.insert("family_name".into(), Value::Text("Okafor".into()));
        columns.insert(
            "person_id".into(),
            Value::Ref(RowRef::new("person", Identity::from_uuid("P-1"))),
        );
        columns.insert("voided".into(), Value::Int(0));
        AppliedChange {
            site_id: "clinic-a".into(),
            epoch: 3,
            sequence: 17,
            gtid: Some("0-1-42".into()),
            committed_at: Some(1_700_000_000),
            snapshot,
            change: RowChange {
                table: "person_name".into(),
                op,
                identity: Identity::from_uuid("n-1"),
                columns,
            },
        }
    }

    fn entry(changes: Vec<AppliedChange>) -> OutboxEntry {
        OutboxEntry {
            id: 9,
            label: "clinic-a:3:17".into(),
            applied_at_ms: 1_700_000_005_000,
            changes,
        }
    }

    fn parse(bytes: &[u8]) -> Json {
        serde_json::from_slice(bytes).expect("JSON")
    }

    #[test]
    fn an_insert_is_a_create_event_between_begin_and_end() {
        let records = records_for(
            &entry(vec![name_change(Op::Insert, false)]),
            &settings(Masking::default()),
        );
        let topics: Vec<&str> = records.iter().map(|r| r.topic.as_str()).collect();
        assert_eq!(
            topics,
            ["hq.transaction", "hq.openmrs.person_name", "hq.transaction"]
        );
        assert_eq!(parse(&records[1].key), json!({ "identity": "n-1" }));
        let event = parse(&records[1].value);
        assert_eq!(event["op"], "c");
        assert_eq!(event["before"], Json::Null);
        assert_eq!(
            event["after"]["person_id"], "p-1",
            "a reference is an identity"
        );
        assert_eq!(event["after"]["given_name"], "Amina");
        assert_eq!(event["source"]["gtid"], "0-1-42");
        assert_eq!(event["source"]["ts_ms"], 1_700_000_000_000u64);
        assert_eq!(event["source"]["snapshot"], "false");
        assert_eq!(event["ts_ms"], 1_700_000_005_000u64);
        assert_eq!(
            event["transaction"],
            json!({ "id": "clinic-a:3:17", "total_order": 1, "data_collection_order": 1 })
        );
        let begin = parse(&records[0].value);
        assert_eq!(begin["status"], "BEGIN");
        let end = parse(&records[2].value);
        assert_eq!(end["status"], "END");
        assert_eq!(end["event_count"], 1);
        assert_eq!(
            end["data_collections"],
            json!([{ "data_collection": "openmrs.person_name", "event_count": 1 }])
        );
    }

    #[test]
    fn ops_map_to_debezium_codes_and_a_delete_carries_the_before_image() {
        let s = settings(Masking::default());
        let op_of = |change| parse(&records_for(&entry(vec![change]), &s)[1].value);
        assert_eq!(op_of(name_change(Op::Insert, true))["op"], "r");
        assert_eq!(op_of(name_change(Op::Update, false))["op"], "u");
        let delete = op_of(name_change(Op::Delete, false));
        assert_eq!(delete["op"], "d");
        assert_eq!(delete["after"], Json::Null);
        assert_eq!(delete["before"]["uuid"], "n-1");
    }

    #[test]
    fn masked_columns_are_hashed_or_left_out() {
        let mut rules = BTreeMap::new();
        rules.insert(
            ("person_name".into(), "given_name".into()),
            MaskAction::Hash,
        );
        rules.insert(
            ("person_name".into(), "family_name".into()),
            MaskAction::Drop,
        );
        let masking = Masking::new(rules, b"0123456789abcdef".to_vec());
        let expected = masking.hash(&Value::Text("Amina".into()));
        let records = records_for(
            &entry(vec![name_change(Op::Insert, false)]),
            &settings(masking),
        );
        let after = &parse(&records[1].value)["after"];
        assert_eq!(after["given_name"].as_str(), expected.as_deref());
        assert!(after.get("family_name").is_none());
        assert!(!String::from_utf8_lossy(&records[1].value).contains("Okafor"));
        assert!(!String::from_utf8_lossy(&records[1].value).contains("Amina"));
    }

    #[test]
    fn only_the_columns_hq_syncs_are_published() {
        let mut s = settings(Masking::default());
        s.published_columns = Some(BTreeMap::from([(
            "person_name".to_owned(),
            BTreeSet::from(["uuid".to_owned(), "person_id".to_owned()]),
        )]));
        let records = records_for(&entry(vec![name_change(Op::Insert, false)]), &s);
        let after = &parse(&records[1].value)["after"];
        assert_eq!(
            after.as_object().map(|o| o.len()),
            Some(2),
            "a column HQ writes rows without is not published: {after}"
        );
    }

    #[test]
    fn unpublished_tables_are_left_out_and_counted_out() {
        let mut s = settings(Masking::default());
        s.tables = Some(BTreeSet::from(["person".to_owned()]));
        assert!(records_for(&entry(vec![name_change(Op::Insert, false)]), &s).is_empty());
    }

    #[test]
    fn an_entry_without_a_label_is_named_after_its_id() {
        let mut e = entry(vec![name_change(Op::Update, false)]);
        e.label.clear();
        let records = records_for(&e, &settings(Masking::default()));
        assert_eq!(parse(&records[0].key), json!({ "id": "hq:9" }));
    }
}
