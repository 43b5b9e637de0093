//! The batch payload's JSON, written directly: byte for byte what `serde_json::to_vec` makes
//! of a [`BatchPayload`], at a fraction of the cost.
//!
//! Sealing a batch used to spend most of its time in serde_json's generic string escaping;
//! payload strings (uuids, dates, names, codes) almost never need escaping, so each string is
//! first checked in one pass the compiler vectorises and then copied whole. Numbers are
//! formatted by the same crates serde_json uses (`itoa`, `zmij`), so the output is identical,
//! which `tests` checks against serde_json on random payloads.
//!
//! The pieces are public so that capture can write a row's JSON while its values are at hand
//! (see `tributary_capture::captured`) and wrap the rows in the same envelope with
//! [`PayloadWriter`].

use crate::{BatchPayload, Columns, Op, Origin, Part, RowChange, SiteHealth, Value};

/// `payload` as JSON, identical to `serde_json::to_vec(payload)`.
pub fn payload_to_json(payload: &BatchPayload) -> Vec<u8> {
    let mut writer = PayloadWriter::new(payload.origin, payload.row_count() * 512);
    for transaction in &payload.transactions {
        writer.transaction(
            transaction.gtid.as_deref(),
            transaction.committed_at,
            transaction.part,
            |out| {
                for (i, row) in transaction.rows.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_row(out, row);
                }
            },
        );
    }
    writer.finish(payload.health.as_ref())
}

/// Writes a payload's envelope (origin, transactions, health) around rows written by the
/// caller: the same bytes [`payload_to_json`] gives for the same payload.
pub struct PayloadWriter {
    out: Vec<u8>,
    transactions: usize,
}

impl PayloadWriter {
    /// Starts a payload; `capacity` is a guess at the rows' size in bytes.
    pub fn new(origin: Origin, capacity: usize) -> PayloadWriter {
        let mut out = Vec::with_capacity(64 + capacity);
        out.extend_from_slice(b"{\"origin\":");
        out.extend_from_slice(match origin {
            Origin::Binlog => b"\"binlog\"",
            Origin::Snapshot => b"\"snapshot\"",
        });
        out.extend_from_slice(b",\"transactions\":[");
        PayloadWriter {
            out,
            transactions: 0,
        }
    }

    /// Adds one transaction; `rows` writes its rows (comma-separated row objects).
    pub fn transaction(
        &mut self,
        gtid: Option<&str>,
        committed_at: u64,
        part: Option<Part>,
        rows: impl FnOnce(&mut Vec<u8>),
    ) {
        let out = &mut self.out;
        if self.transactions > 0 {
            out.push(b',');
        }
        self.transactions += 1;
        out.push(b'{');
        if let Some(gtid) = gtid {
            out.extend_from_slice(b"\"gtid\":");
            write_str(out, gtid);
            out.push(b',');
        }
        out.extend_from_slice(b"\"committed_at\":");
        out.extend_from_slice(itoa::Buffer::new().format(committed_at).as_bytes());
        out.extend_from_slice(b",\"rows\":[");
        rows(out);
        out.push(b']');
        if let Some(part) = part {
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

    /// Ends the payload, with the site's health report when one is due.
    pub fn finish(mut self, health: Option<&SiteHealth>) -> Vec<u8> {
        let out = &mut self.out;
        out.push(b']');
        if let Some(health) = health {
            // At most one batch a minute carries it: serde_json's own writer is fast enough.
            out.extend_from_slice(b",\"health\":");
            if serde_json::to_writer(&mut *out, health).is_err() {
                out.extend_from_slice(b"null");
            }
        }
        out.push(b'}');
        self.out
    }
}

fn write_row(out: &mut Vec<u8>, row: &RowChange) {
    write_row_head(out, &row.table, row.op, row.identity.as_str());
    write_columns(out, &row.columns);
    out.push(b'}');
}

/// Opens a row object up to its columns: `{"table":..,"op":..,"identity":..,"columns":`.
/// The caller writes the columns object, then closes the row with `}`.
pub fn write_row_head(out: &mut Vec<u8>, table: &str, op: Op, identity: &str) {
    out.extend_from_slice(b"{\"table\":");
    write_str(out, table);
    out.extend_from_slice(match op {
        Op::Insert => b",\"op\":\"insert\",\"identity\":",
        Op::Update => b",\"op\":\"update\",\"identity\":",
        Op::Delete => b",\"op\":\"delete\",\"identity\":",
    });
    write_str(out, identity);
    out.extend_from_slice(b",\"columns\":");
}

/// A columns object: `{"name":value,...}`.
pub fn write_columns(out: &mut Vec<u8>, columns: &Columns) {
    out.push(b'{');
    // The keys (and the commas between members) are written once per shared set of names.
    let keys = columns.names().json_keys();
    for (i, value) in columns.values().enumerate() {
        out.extend_from_slice(keys.key(i));
        write_value(out, value);
    }
    out.push(b'}');
}

/// One value, as [`Value`]'s `Serialize` writes it.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Int(v) => out.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes()),
        Value::UInt(v) => out.extend_from_slice(itoa::Buffer::new().format(*v).as_bytes()),
        Value::Float(v) => write_f64(out, *v),
        Value::Text(s) => write_str(out, s),
        Value::Bytes(b) => write_hex(out, b),
        Value::Ref(r) => write_ref(out, &r.table, r.identity.as_str()),
    }
}

/// A float as serde_json writes it: shortest round-trip form, `null` when not finite.
pub fn write_f64(out: &mut Vec<u8>, value: f64) {
    if value.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(value).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Bytes that are not text: `{"hex":"..."}`.
pub fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"{\"hex\":\"");
    out.reserve(bytes.len() * 2 + 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 0x0f)]);
    }
    out.extend_from_slice(b"\"}");
}

/// A reference: `{"ref":"<table>","id":"<identity>"}`.
pub fn write_ref(out: &mut Vec<u8>, table: &str, identity: &str) {
    out.extend_from_slice(b"{\"ref\":");
    write_str(out, table);
    out.extend_from_slice(b",\"id\":");
    write_str(out, identity);
    out.push(b'}');
}

/// What every reference to `table` starts with, `{"ref":"<table>","id":`, for
/// [`write_ref_after`]: written once per column rather than once per value.
pub fn ref_prefix(table: &str) -> Vec<u8> {
    let mut prefix = b"{\"ref\":".to_vec();
    write_str(&mut prefix, table);
    prefix.extend_from_slice(b",\"id\":");
    prefix
}

/// A reference whose [`ref_prefix`] is at hand: the same bytes as [`write_ref`].
pub fn write_ref_after(out: &mut Vec<u8>, prefix: &[u8], identity: &str) {
    out.extend_from_slice(prefix);
    write_str(out, identity);
    out.push(b'}');
}

/// A JSON string, escaped exactly as serde_json escapes it.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
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
    use crate::{ColumnName, Identity, RowRef, SiteError, SourceTransaction};
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
    fn a_reference_after_its_prefix_is_the_reference() {
        for (table, identity) in [("obs", "a-1"), ("we\"ird", "[\"x\",1]")] {
            let (mut whole, mut after) = (Vec::new(), Vec::new());
            write_ref(&mut whole, table, identity);
            write_ref_after(&mut after, &ref_prefix(table), identity);
            assert_eq!(whole, after);
        }
    }

    #[test]
    fn an_escaped_byte_is_found_wherever_it_sits() {
        for length in 0..50 {
            for at in 0..length {
                for special in ['"', '\\', '\n', '\u{1}'] {
                    let mut text: Vec<char> = vec!['a'; length];
                    text[at] = special;
                    let text: String = text.into_iter().collect();
                    let mut out = Vec::new();
                    write_str(&mut out, &text);
                    assert_eq!(
                        String::from_utf8(out).unwrap(),
                        serde_json::to_string(&text).unwrap(),
                        "{special:?} at {at} of {length}"
                    );
                }
            }
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
