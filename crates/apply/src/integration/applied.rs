//! The changes one HQ transaction wrote, collected while it runs and recorded in the outbox
//! just before it commits.

use crate::conflicts::Origin;
use mysql_async::Transaction;
use serde::{Deserialize, Serialize};
use tributary_model::{BatchPayload, Origin as PayloadOrigin, RowChange};

/// One change HQ wrote, with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedChange {
    pub site_id: String,
    pub epoch: u64,
    pub sequence: u64,
    /// The source transaction's GTID, when the change is written with its batch and the source
    /// has one (a released parked row no longer knows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<String>,
    /// The source's commit time, Unix seconds, when known (as `gtid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_at: Option<u64>,
    /// Part of a seed (a snapshot row) rather than a change streamed from the binlog.
    #[serde(default)]
    pub snapshot: bool,
    pub change: RowChange,
}

/// The changes of one HQ transaction, when the integration topics are on; nothing otherwise.
#[derive(Debug, Default)]
pub struct AppliedChanges {
    recording: bool,
    changes: Vec<AppliedChange>,
    /// Where each change of the current batch lives in its payload (to find its source
    /// transaction afterwards); `0` for changes from elsewhere (parked rows).
    addresses: Vec<usize>,
}

impl AppliedChanges {
    /// Collects when `recording`; otherwise every call is a no-op.
    pub fn new(recording: bool) -> AppliedChanges {
        AppliedChanges {
            recording,
            ..AppliedChanges::default()
        }
    }

    /// Notes a change HQ just wrote.
    pub fn note(&mut self, origin: Origin<'_>, change: &RowChange) {
        if !self.recording {
            return;
        }
        self.addresses.push(std::ptr::from_ref(change) as usize);
        self.changes.push(AppliedChange {
            site_id: origin.site_id.to_owned(),
            epoch: origin.epoch,
            sequence: origin.sequence,
            gtid: None,
            committed_at: None,
            snapshot: false,
            change: change.clone(),
        });
    }

    /// Fills in the source transaction (GTID, commit time) and the snapshot flag of the changes
    /// that came from `payload`'s rows, found by where they live in it.
    pub fn attach_sources(&mut self, payload: &BatchPayload) {
        if !self.recording || self.changes.is_empty() {
            return;
        }
        let mut transaction_of = std::collections::HashMap::new();
        for (index, transaction) in payload.transactions.iter().enumerate() {
            for row in &transaction.rows {
                transaction_of.insert(std::ptr::from_ref(row) as usize, index);
            }
        }
        let snapshot = payload.origin == PayloadOrigin::Snapshot;
        for (change, address) in self.changes.iter_mut().zip(&self.addresses) {
            if let Some(&index) = transaction_of.get(address) {
                let transaction = &payload.transactions[index];
                change.gtid.clone_from(&transaction.gtid);
                change.committed_at = Some(transaction.committed_at);
                change.snapshot = snapshot;
            }
        }
    }

    /// Records the collected changes as one outbox entry, inside the HQ transaction that wrote
    /// them; `label` names the transaction for consumers (`site:epoch:sequence` for a batch).
    pub async fn record(
        &mut self,
        tx: &mut Transaction<'_>,
        label: &str,
    ) -> mysql_async::Result<()> {
        if !self.recording || self.changes.is_empty() {
            return Ok(());
        }
        let changes = std::mem::take(&mut self.changes);
        self.addresses.clear();
        super::outbox::insert(tx, label, &changes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_model::{Columns, Identity, Op, SourceTransaction};

    fn row(uuid: &str) -> RowChange {
        RowChange {
            table: "person".into(),
            op: Op::Insert,
            identity: Identity::from_uuid(uuid),
            columns: Columns::new(),
        }
    }

    #[test]
    fn changes_find_their_source_transaction_and_others_keep_none() {
        let payload = BatchPayload {
            origin: PayloadOrigin::Snapshot,
            transactions: vec![
                SourceTransaction {
                    gtid: Some("0-1-5".into()),
                    committed_at: 10,
                    rows: vec![row("a")],
                    part: None,
                },
                SourceTransaction {
                    gtid: Some("0-1-6".into()),
                    committed_at: 11,
                    rows: vec![row("b"), row("c")],
                    part: None,
                },
            ],
            health: None,
        };
        let origin = Origin {
            site_id: "clinic-a",
            epoch: 1,
            sequence: 2,
        };
        let mut applied = AppliedChanges::new(true);
        let parked = row("p");
        applied.note(origin, &payload.transactions[1].rows[1]);
        applied.note(origin, &parked);
        applied.note(origin, &payload.transactions[0].rows[0]);
        applied.attach_sources(&payload);
        let sources: Vec<_> = applied
            .changes
            .iter()
            .map(|c| (c.gtid.as_deref(), c.committed_at, c.snapshot))
            .collect();
        assert_eq!(
            sources,
            [
                (Some("0-1-6"), Some(11), true),
                (None, None, false),
                (Some("0-1-5"), Some(10), true)
            ]
        );
    }

    #[test]
    fn nothing_is_kept_when_the_integration_is_off() {
        let mut applied = AppliedChanges::new(false);
        let origin = Origin {
            site_id: "clinic-a",
            epoch: 1,
            sequence: 1,
        };
        applied.note(origin, &row("a"));
        assert!(applied.changes.is_empty());
    }
}
