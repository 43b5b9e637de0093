//! What capture hands the publisher: source transactions whose rows are already written as
//! their payload JSON.
//!
//! A row's JSON is written by annotation while its decoded values are at hand, straight from
//! the binlog's values (no travelling [`tributary_model::Value`]s are built, kept for a whole
//! batch and walked again when the batch is sealed). The publisher wraps the transactions in
//! the payload envelope with [`tributary_model::json::PayloadWriter`]: the payload is byte for
//! byte what `serde_json` makes of the equivalent `BatchPayload`.

use crate::binlog::RawTransaction;
use tributary_model::json::PayloadWriter;
use tributary_model::{Identity, Origin, Part, SiteHealth};

/// Room reserved per row (most OpenMRS rows write less; room not written to costs only
/// address space).
const ROW_JSON_BYTES: usize = 1024;

/// A source transaction (or a part of one, or a snapshot chunk) with its rows in JSON.
#[derive(Debug, Default)]
pub struct CapturedTransaction {
    pub gtid: Option<String>,
    pub committed_at: u64,
    /// Set on the parts of a transaction cut into chunks.
    pub part: Option<Part>,
    /// The row objects, comma-separated.
    json: Vec<u8>,
    /// Each row's identity and where its object ends in `json`.
    rows: Vec<(Identity, usize)>,
}

impl CapturedTransaction {
    pub fn new(gtid: Option<String>, committed_at: u64, part: Option<Part>) -> Self {
        CapturedTransaction::with_capacity(gtid, committed_at, part, 0)
    }

    /// A transaction with room for about `rows` rows, so writing them does not grow (and
    /// copy) the JSON again and again. Room not written to costs no memory.
    pub fn with_capacity(
        gtid: Option<String>,
        committed_at: u64,
        part: Option<Part>,
        rows: usize,
    ) -> Self {
        CapturedTransaction {
            gtid,
            committed_at,
            part,
            json: Vec::with_capacity(rows.saturating_mul(ROW_JSON_BYTES)),
            rows: Vec::with_capacity(rows),
        }
    }

    /// An empty captured form of `raw`, with room for its rows.
    pub fn for_rows_of(raw: &RawTransaction) -> Self {
        CapturedTransaction::with_capacity(
            raw.gtid.as_ref().map(|g| g.to_string()),
            raw.committed_at,
            raw.part,
            raw.rows.len(),
        )
    }

    pub fn row_count(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds a row: `write` writes its whole JSON object.
    pub fn push_row(&mut self, identity: Identity, write: impl FnOnce(&mut Vec<u8>)) {
        if !self.rows.is_empty() {
            self.json.push(b',');
        }
        write(&mut self.json);
        self.rows.push((identity, self.json.len()));
    }

    /// Keeps the first `count` rows only.
    pub fn truncate_rows(&mut self, count: usize) {
        if count >= self.rows.len() {
            return;
        }
        self.rows.truncate(count);
        // The JSON ends where the last kept row does (before the comma of the next one).
        let end = self.rows.last().map_or(0, |(_, end)| *end);
        self.json.truncate(end);
    }

    /// Keeps only the rows `keep` says yes to, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&Identity) -> bool) {
        let json = std::mem::take(&mut self.json);
        let rows = std::mem::take(&mut self.rows);
        let mut start = 0;
        for (identity, end) in rows {
            let object = json.get(start..end).unwrap_or_default();
            // Every row but the first begins after its separating comma.
            let object = object.strip_prefix(b",").unwrap_or(object);
            start = end;
            if keep(&identity) {
                self.push_row(identity, |out| out.extend_from_slice(object));
            }
        }
    }

    fn write_into(&self, writer: &mut PayloadWriter) {
        writer.transaction(self.gtid.as_deref(), self.committed_at, self.part, |out| {
            out.extend_from_slice(&self.json)
        });
    }
}

/// The payload JSON of a batch of captured transactions.
pub fn payload_json(
    origin: Origin,
    transactions: &[CapturedTransaction],
    health: Option<&SiteHealth>,
) -> Vec<u8> {
    let size = transactions.iter().map(|t| t.json.len() + 64).sum();
    let mut writer = PayloadWriter::new(origin, size);
    for transaction in transactions {
        transaction.write_into(&mut writer);
    }
    writer.finish(health)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_model::json::{write_columns, write_row_head};
    use tributary_model::{BatchPayload, Columns, Op, RowChange, SourceTransaction, Value};

    fn row(uuid: &str, voided: i64) -> RowChange {
        let mut columns = Columns::new();
        columns.insert("uuid".into(), Value::Text(uuid.into()));
        columns.insert("voided".into(), Value::Int(voided));
        RowChange {
            table: "obs".into(),
            op: Op::Insert,
            identity: Identity::from_uuid(uuid),
            columns,
        }
    }

    fn captured(rows: &[RowChange], part: Option<Part>) -> CapturedTransaction {
        let mut transaction = CapturedTransaction::new(Some("0-1-7".into()), 1_700_000_000, part);
        for row in rows {
            transaction.push_row(row.identity.clone(), |out| {
                write_row_head(out, &row.table, row.op, row.identity.as_str());
                write_columns(out, &row.columns);
                out.push(b'}');
            });
        }
        transaction
    }

    fn parsed(json: &[u8]) -> BatchPayload {
        serde_json::from_slice(json).expect("the payload is JSON of a batch payload")
    }

    #[test]
    fn the_payload_is_the_batch_payloads_json() {
        let rows = vec![row("a-1", 0), row("a-2", 1), row("a-3", 0)];
        let part = Some(Part {
            index: 2,
            last: true,
        });
        let health = SiteHealth {
            agent_version: "1".into(),
            reported_at: 9,
            ..SiteHealth::default()
        };
        let transactions = [captured(&rows, part), captured(&[], None)];
        let json = payload_json(Origin::Snapshot, &transactions, Some(&health));
        let expected = BatchPayload {
            origin: Origin::Snapshot,
            transactions: vec![
                SourceTransaction {
                    gtid: Some("0-1-7".into()),
                    committed_at: 1_700_000_000,
                    rows,
                    part,
                },
                SourceTransaction {
                    gtid: Some("0-1-7".into()),
                    committed_at: 1_700_000_000,
                    rows: Vec::new(),
                    part: None,
                },
            ],
            health: Some(health),
        };
        assert_eq!(json, serde_json::to_vec(&expected).unwrap());
        assert_eq!(parsed(&json), expected);
    }

    #[test]
    fn truncated_transactions_keep_their_first_rows_json() {
        let rows = vec![row("a-1", 0), row("a-2", 1), row("a-3", 0)];
        let mut transaction = captured(&rows, None);
        transaction.truncate_rows(5);
        assert_eq!(transaction.row_count(), 3, "nothing to cut");
        transaction.truncate_rows(1);
        let json = payload_json(Origin::Binlog, &[transaction], None);
        assert_eq!(parsed(&json).transactions[0].rows, vec![rows[0].clone()]);
        let mut transaction = captured(&rows, None);
        transaction.truncate_rows(0);
        assert!(transaction.is_empty());
        let json = payload_json(Origin::Binlog, &[transaction], None);
        assert!(parsed(&json).transactions[0].rows.is_empty());
    }

    #[test]
    fn retained_rows_keep_their_order_and_json() {
        let rows = vec![row("a-1", 0), row("a-2", 1), row("a-3", 0), row("a-4", 1)];
        let mut transaction = captured(&rows, None);
        transaction.retain(|identity| identity.as_str() != "a-1" && identity.as_str() != "a-3");
        assert_eq!(transaction.row_count(), 2);
        let json = payload_json(Origin::Binlog, &[transaction], None);
        let kept = &parsed(&json).transactions[0].rows;
        assert_eq!(kept, &vec![rows[1].clone(), rows[3].clone()]);
    }
}
