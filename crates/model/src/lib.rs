//! The change model: what one row change looks like on its way from a site to HQ.
//!
//! No I/O lives here. Capture builds these values from binlog events and snapshots, the batch
//! format carries them as JSON, and the applier writes them into HQ.
//!
//! The one rule this model exists to enforce: **integer keys never travel**. A row's own
//! surrogate key is dropped, and every integer reference it holds is replaced by a
//! [`RowRef`], the referenced row's global [`Identity`] (its uuid, an inherited uuid, or a
//! natural key). HQ turns identities back into its own ids.

mod columns;
mod identity;
pub mod json;
mod value;

pub use columns::{ColumnNames, Columns, JsonKeys};
pub use identity::{Identity, RowRef};
pub use json::payload_to_json;
pub use value::Value;

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A column name, shared.
pub type ColumnName = Arc<str>;

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Insert,
    Update,
    Delete,
}

/// One row change, with references already turned into identities.
///
/// `columns` is the full row image after the change (insert, update) or before it (delete),
/// minus the surrogate primary key and any column the schema map excludes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowChange {
    pub table: String,
    pub op: Op,
    /// The row's identity before the change (for an insert: after it).
    pub identity: Identity,
    /// Column names are shared with the decoder's table layout (a reference count per
    /// column, not a copy).
    pub columns: Columns,
}

impl RowChange {
    /// Every reference this row holds, in column order.
    pub fn references(&self) -> impl Iterator<Item = (&str, &RowRef)> {
        self.columns
            .iter()
            .filter_map(|(column, value)| match value {
                Value::Ref(row_ref) => Some((&**column, row_ref)),
                _ => None,
            })
    }

    /// The reference this row is itself, for matching parked rows and arrivals.
    pub fn row_ref(&self) -> RowRef {
        RowRef::new(self.table.clone(), self.identity.clone())
    }
}

/// One source transaction: the unit that is applied atomically at HQ (invariant 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceTransaction {
    /// The source GTID (`domain-server-sequence` on MariaDB), when the source has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<String>,
    /// Commit time at the source, Unix seconds (binlog event timestamp).
    pub committed_at: u64,
    pub rows: Vec<RowChange>,
    /// Set when a transaction too large for one batch travels in parts, in order; each part
    /// is applied in its own HQ transaction (DESIGN.md invariant 4, documented exception).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<Part>,
}

/// Which part of a chunked source transaction a [`SourceTransaction`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// 0-based.
    pub index: u32,
    pub last: bool,
}

/// What one sealed batch carries: whole source transactions, in commit order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BatchPayload {
    /// Where this batch came from: `binlog` (streaming) or `snapshot` (seed / re-send).
    pub origin: Origin,
    pub transactions: Vec<SourceTransaction>,
    /// The site's health, carried by a batch at most every `[site] health_interval_ms` (an
    /// idle site sends it in a keepalive batch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<SiteHealth>,
}

/// How a site is doing, as its capture agent sees it: what HQ shows for a site it cannot
/// visit. Never row values or keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SiteHealth {
    /// The capture agent's version.
    pub agent_version: String,
    /// The site database's `VERSION()`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_version: Option<String>,
    /// The OpenMRS version the site's schema was last upgraded to, when the database says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openmrs_version: Option<String>,
    /// Where capture stands in the source's binlog (GTID position, or file:position).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_position: Option<String>,
    /// Seconds between the newest source commit capture read and reading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_lag_seconds: Option<u64>,
    /// Bytes waiting in the site's outbox for the transport.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_bytes: Option<u64>,
    /// How long the oldest of them has waited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_oldest_age_seconds: Option<u64>,
    /// Free bytes on the outbox's disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_free_bytes: Option<u64>,
    /// The error that ended capture's last session, if any since the agent started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<SiteError>,
    /// Whether capture is failing now: it has not published since that error.
    #[serde(default)]
    pub failing: bool,
    /// When the report was made, Unix seconds (site clock).
    pub reported_at: u64,
}

/// An error a site reports: its class and message, never row values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteError {
    /// `transient` (capture resumes by itself) or `fatal` (a person must act).
    pub class: String,
    pub message: String,
    /// When it happened, Unix seconds (site clock).
    pub at: u64,
}

impl BatchPayload {
    pub fn row_count(&self) -> usize {
        self.transactions.iter().map(|t| t.rows.len()).sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    #[default]
    Binlog,
    Snapshot,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BatchPayload {
        let mut columns = Columns::new();
        columns.insert("uuid".into(), Value::Text("a-b".into()));
        columns.insert("value_numeric".into(), Value::Float(3.0));
        columns.insert("voided".into(), Value::Int(0));
        columns.insert("comments".into(), Value::Null);
        columns.insert(
            "encounter_id".into(),
            Value::Ref(RowRef::new("encounter", Identity::from_uuid("E-1"))),
        );
        columns.insert("raw".into(), Value::Bytes(vec![0, 255]));
        BatchPayload {
            origin: Origin::Binlog,
            transactions: vec![SourceTransaction {
                gtid: Some("0-1-7".into()),
                committed_at: 1_700_000_000,
                part: None,
                rows: vec![RowChange {
                    table: "obs".into(),
                    op: Op::Insert,
                    identity: Identity::from_uuid("a-b"),
                    columns,
                }],
            }],
            health: None,
        }
    }

    #[test]
    fn payload_round_trips_through_json_keeping_value_kinds() {
        let payload = sample();
        let json = serde_json::to_vec(&payload).unwrap();
        let back: BatchPayload = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, payload);
        let row = &back.transactions[0].rows[0];
        assert_eq!(row.columns["value_numeric"], Value::Float(3.0));
        assert_eq!(row.columns["voided"], Value::Int(0));
    }

    #[test]
    fn references_lists_only_ref_columns() {
        let payload = sample();
        let refs: Vec<_> = payload.transactions[0].rows[0].references().collect();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].0, "encounter_id");
        assert_eq!(refs[0].1.identity.as_str(), "e-1");
    }
}
