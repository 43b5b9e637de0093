//! The conflict record at HQ (`tributary_conflict`): every conflict the applier meets is
//! written there in the transaction that meets it, with both versions of the row: open when it
//! waits for a person, resolved when the table's policy decided (invariants 5 and 9).
//!
//! An open conflict holds its row: later changes to the same row, from any site, queue behind
//! it (as behind a parked change) until it is resolved.

use crate::conflict_policy::ConflictPolicy;
use crate::row_state::RowSnapshot;
use mysql_async::prelude::*;
use mysql_async::{Transaction, Value as Sql};
use tributary_model::{Op, RowChange, RowRef};

pub const OPEN: &str = "open";
pub const RESOLVED: &str = "resolved";
/// `resolved_by` of conflicts a table's policy decided.
pub const BY_POLICY: &str = "policy";

/// Where a conflicting change came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub site_id: &'a str,
    pub epoch: u64,
    pub sequence: u64,
}

/// How a detected conflict ended, when it did at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Waits for a person.
    Open,
    /// The site's version was written (policy).
    SiteWon,
    /// HQ's version stays (policy).
    HqWon,
}

impl Decision {
    pub fn resolution(self) -> Option<&'static str> {
        match self {
            Decision::Open => None,
            Decision::SiteWon => Some("site-wins"),
            Decision::HqWon => Some("hq-wins"),
        }
    }

    /// The `outcome` label of the conflicts counter.
    pub fn label(self) -> &'static str {
        match self {
            Decision::Open => "queued",
            Decision::SiteWon => "site-wins",
            Decision::HqWon => "hq-wins",
        }
    }
}

/// A conflict as detected.
pub struct Detected<'a> {
    pub change: &'a RowChange,
    pub policy: ConflictPolicy,
    pub reason: String,
    pub differing: Vec<String>,
    pub hq_row: &'a RowSnapshot,
    /// `None` for a delete.
    pub site_row: Option<&'a RowSnapshot>,
}

pub fn op_name(op: Op) -> &'static str {
    match op {
        Op::Insert => "insert",
        Op::Update => "update",
        Op::Delete => "delete",
    }
}

/// Records a conflict in the current transaction; returns its id.
pub async fn record(
    tx: &mut Transaction<'_>,
    origin: Origin<'_>,
    detected: &Detected<'_>,
    decision: Decision,
) -> mysql_async::Result<u64> {
    let to_json = |row: &RowSnapshot| serde_json::to_string(row).unwrap_or_default();
    let status = if decision == Decision::Open {
        OPEN
    } else {
        RESOLVED
    };
    let resolved_by = decision.resolution().map(|_| BY_POLICY);
    tx.exec_drop(
        "INSERT INTO tributary_conflict
            (site_id, epoch, sequence, table_name, identity, op, policy, reason,
             differing_columns, hq_row, site_row, row_change, detected_at, status, resolution,
             resolved_by, resolved_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(3), ?, ?, ?,
                 IF(? IS NULL, NULL, UTC_TIMESTAMP(3)))",
        vec![
            Sql::from(origin.site_id),
            origin.epoch.into(),
            origin.sequence.into(),
            detected.change.table.as_str().into(),
            detected.change.identity.as_str().into(),
            op_name(detected.change.op).into(),
            detected.policy.name().into(),
            detected.reason.as_str().into(),
            detected.differing.join(",").into(),
            to_json(detected.hq_row).into(),
            detected.site_row.map(to_json).into(),
            serde_json::to_string(detected.change)
                .unwrap_or_default()
                .into(),
            status.into(),
            decision.resolution().into(),
            resolved_by.into(),
            resolved_by.into(),
        ],
    )
    .await?;
    Ok(tx.last_insert_id().unwrap_or(0))
}

/// Whether any conflict is open.
pub async fn any_open(tx: &mut Transaction<'_>) -> mysql_async::Result<bool> {
    let found: Option<u8> = tx
        .query_first("SELECT 1 FROM tributary_conflict WHERE status = 'open' LIMIT 1")
        .await?;
    Ok(found.is_some())
}

/// The open conflict holding `entity`, if any.
pub async fn open_on(
    tx: &mut Transaction<'_>,
    entity: &RowRef,
) -> mysql_async::Result<Option<u64>> {
    tx.exec_first(
        "SELECT conflict_id FROM tributary_conflict
         WHERE table_name = ? AND identity = ? AND status = 'open' LIMIT 1",
        (&*entity.table, entity.identity.as_str()),
    )
    .await
}
