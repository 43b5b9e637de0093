//! The batch payload's JSON, written directly: byte for byte what `serde_json::to_vec` makes
//! of a [`BatchPayload`], at a fraction of the cost.
//!
//! Sealing a batch used to spend most of its time in serde_json's generic string escaping;
//! payload strings (uuids, dates, names, codes) almost never need escaping, so each string is
//! first checked in one pass the compiler vectorises and then copied whole. Numbers are
//! formatted by the same crates serde_json uses (`itoa`, `zmij`), so the output is identical,
//! which `tests` checks against serde_json on random payloads.

use crate::{BatchPayload, Columns, Op, Origin, RowChange, SourceTransaction, Value};

/// `payload` as JSON, identical to `serde_json::to_vec(payload)`.
pub fn payload_to_json(payload: &BatchPayload) -> Vec<u8> {
    let rows = payload.row_count();
    let mut out = Vec::with_capacity(64 + rows * 512);
    out.extend_from_slice(b"{\"origin\":");
    out.extend_from_slice(match payload.origin {
        Origin::Binlog => b"\"binlog\"",
        Origin::Snapshot => b"\"snapshot\"",
    });
    out.extend_from_slice(b",\"transactions\":[");
    for (i, transaction) in payload.transactions.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_transaction(&mut out, transaction);
    }
    out.push(b']');
    if let Some(health) = &payload.health {
        // At most one batch a minute carries it: serde_json's own writer is fast enough.
        out.extend_from_slice(b",\"health\":");
        if serde_json::to_writer(&mut out, health).is_err() {
            out.extend_from_slice(b"null");
        }
    }
    out.push(b'}');
    out
}

fn write_transaction(out: &mut Vec<u8>, transaction: &SourceTransaction) {
    out.push(b'{');
    if let Some(gtid) = &transaction.gtid {
        out.extend_from_slice(b"\"gtid\":");
        write_str(out, gtid);
        out.push(b',');
    }
    out.extend_from_slice(b"\"committed_at\":");
    out.extend_from_slice(
        itoa::Buffer::new()
            .format(transaction.committed_at)
            .as_bytes(),
    );
    out.extend_from_slice(b",\"rows\":[");
    for (i, row) in transaction.rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_row(out, row);
    }
    out.push(b']');
    if let Some(part) = &transaction.part {
        out.extend_from_slice(b",\"part\":{\"index\":");
        out.extend_from_slice(itoa::Buffer::new().format(part.index).as_bytes());
        out.extend_from_slice(if part.last {
            b",\"last\":true}"
        } else {
            b",\"last\":false}"
        });
    }
    out.push(b'}');
}

fn write_row(out: &mut Vec<u8>, row: &RowChange) {
    out.extend_from_slice(b"{\"table\":");
    write_str(out, &row.table);
    out.extend_from_slice(match row.op {
        Op::Insert => b",\"op\":\"insert\",\"identity\":",
        Op::Update => b",\"op\":\"update\",\"identity\":",
        Op::Delete => b",\"op\":\"delete\",\"identity\":",
    });
    write_str(out, row.identity.as_str());
    out.extend_from_slice(b",\"columns\":");
    write_columns(out, &row.columns);
    out.push(b'}');
}

fn write_columns(out: &mut Vec<u8>, columns: &Columns) {
    out.push(b'{');
    // The keys (and the commas between members) are written once per shared set of names.
    let keys = columns.names().json_keys();
    for (i, value) in columns.values().enumerate() {
        out.extend_from_slice(keys.key(i));
        write_value(out, value);
    }
    out.push(b'}');
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Int(v) => out.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes()),
        Value::UInt(v) => out.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes()),
        Value::Float(v) if v.is_finite() => {
            out.extend_from_slice(zmij::Buffer::new().format_finite(*v).as_bytes())
        }
        Value::Float(_) => out.extend_from_slice(b"null"),
        Value::Text(s) => write_str(out, s),
        Value::Bytes(b) => {
            out.extend_from_slice(b"{\"hex\":\"");
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            out.reserve(b.len() * 2 + 2);
            for byte in b {
                out.push(DIGITS[usize::from(byte >> 4)]);
                out.push(DIGITS[usize::from(byte & 0x0f)]);
            }
            out.extend_from_slice(b"\"}");
        }
        Value::Ref(r) => {
            out.extend_from_slice(b"{\"ref\":");
            write_str(out, &r.table);
            out.extend_from_slice(b",\"id\":");
            write_str(out, r.identity.as_str());
            out.push(b'}');
        }
    }
}

/// A JSON string, escaped exactly as serde_json escapes it.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.push(b'"');
    // One pass without early exit, so it vectorises; almost every payload string is clean.
    let needs_escape = bytes.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if needs_escape {
        write_escaped(out, bytes);
    } else {
        out.extend_from_slice(bytes);
    }
    out.push(b'"');
}

fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0x0f)]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ColumnName, Identity, Part, RowRef, SiteError, SiteHealth};
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9_-]{0,40}",
            any::<String>(),
            proptest::collection::vec(0u8..0x80, 0..20)
                .prop_map(|b| String::from_utf8(b).unwrap_or_default()),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Int),
            any::<u64>().prop_map(Value::UInt),
            any::<f64>().prop_map(Value::Float),
            Just(Value::Float(f64::NAN)),
            Just(Value::Float(3.0)),
            text().prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::Bytes),
            (text(), text()).prop_map(|(t, id)| Value::Ref(RowRef::new(t, Identity::from_raw(id)))),
        ]
    }

    fn row() -> impl Strategy<Value = RowChange> {
        (
            text(),
            prop_oneof![Just(Op::Insert), Just(Op::Update), Just(Op::Delete)],
            text(),
            proptest::collection::vec((text(), value()), 0..8),
        )
            .prop_map(|(table, op, identity, columns)| RowChange {
                table,
                op,
                identity: Identity::from_raw(identity),
                columns: columns
                    .into_iter()
                    .map(|(n, v)| (ColumnName::from(n), v))
                    .collect(),
            })
    }

    fn payload() -> impl Strategy<Value = BatchPayload> {
        let transaction = (
            proptest::option::of(text()),
            any::<u64>(),
            proptest::collection::vec(row(), 0..4),
            proptest::option::of((any::<u32>(), any::<bool>())),
        )
            .prop_map(|(gtid, committed_at, rows, part)| SourceTransaction {
                gtid,
                committed_at,
                rows,
                part: part.map(|(index, last)| Part { index, last }),
            });
        let health = (
            text(),
            proptest::option::of(text()),
            proptest::option::of(any::<u64>()),
            proptest::option::of((text(), text(), any::<u64>())),
            any::<bool>(),
            any::<u64>(),
        )
            .prop_map(
                |(agent_version, database_version, spool_bytes, error, failing, reported_at)| {
                    SiteHealth {
                        agent_version,
                        database_version,
                        spool_bytes,
                        last_error: error.map(|(class, message, at)| SiteError {
                            class,
                            message,
                            at,
                        }),
                        failing,
                        reported_at,
                        ..SiteHealth::default()
                    }
                },
            );
        (
            prop_oneof![Just(Origin::Binlog), Just(Origin::Snapshot)],
            proptest::collection::vec(transaction, 0..4),
            proptest::option::of(health),
        )
            .prop_map(|(origin, transactions, health)| BatchPayload {
                origin,
                transactions,
                health,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn identical_to_serde_json(payload in payload()) {
            prop_assert_eq!(
                String::from_utf8(payload_to_json(&payload)).unwrap(),
                serde_json::to_string(&payload).unwrap()
            );
        }
    }

    #[test]
    fn every_control_character_and_quote_is_escaped_like_serde_json() {
        let all: String = (0u8..0x80).map(char::from).collect::<String>() + "é😀\"\\/";
        let mut out = Vec::new();
        write_str(&mut out, &all);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string(&all).unwrap()
        );
    }
}
