//! Parking: rows whose referenced rows HQ does not have yet wait in HQ, durably, with the
//! identities they wait for, and are released when those arrive (invariant 3).
//!
//! Every write here happens in the transaction of the batch that parks or releases, so a row
//! is either written or parked, never both or neither. A later change to an entity that has a
//! parked change queues behind it (it waits on the entity itself), so releases replay each
//! entity's changes in their original order.

use crate::conflicts;
use mysql_async::Transaction;
use mysql_async::prelude::*;
use tributary_model::{Identity, RowChange, RowRef};

/// Arrivals matched per candidate query.
const ARRIVALS_PER_QUERY: usize = 200;

pub struct ParkedRow {
    pub parked_id: u64,
    pub site_id: String,
    pub epoch: u64,
    pub sequence: u64,
    pub change: RowChange,
    /// The recorded reason; a retry that reaches the same verdict rewrites nothing.
    pub reason: String,
}

/// Whether any row is parked, or held by an open conflict, at all.
pub async fn any(tx: &mut Transaction<'_>) -> mysql_async::Result<bool> {
    let found: Option<u8> = tx
        .query_first("SELECT 1 FROM tributary_parked_row LIMIT 1")
        .await?;
    Ok(found.is_some() || conflicts::any_open(tx).await?)
}

/// Why a new change to an entity must queue behind what is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// An earlier change to it is parked.
    Parked,
    /// An open conflict holds it.
    Conflict(u64),
}

impl Hold {
    pub fn reason(self) -> String {
        match self {
            Hold::Parked => "queued behind an earlier parked change to the same row".to_owned(),
            Hold::Conflict(id) => {
                format!(
                    "queued behind open conflict {id} on the same row (`tributary conflicts show {id}`)"
                )
            }
        }
    }
}

/// What holds the entity, if anything (a new change to it must queue behind).
pub async fn hold(tx: &mut Transaction<'_>, entity: &RowRef) -> mysql_async::Result<Option<Hold>> {
    let found: Option<u8> = tx
        .exec_first(
            "SELECT 1 FROM tributary_parked_row WHERE table_name = ? AND identity = ? LIMIT 1",
            (&*entity.table, entity.identity.as_str()),
        )
        .await?;
    if found.is_some() {
        return Ok(Some(Hold::Parked));
    }
    Ok(conflicts::open_on(tx, entity).await?.map(Hold::Conflict))
}

pub async fn park(
    tx: &mut Transaction<'_>,
    site_id: &str,
    epoch: u64,
    sequence: u64,
    change: &RowChange,
    waits: &[RowRef],
    reason: &str,
) -> mysql_async::Result<Option<u64>> {
    let json = serde_json::to_string(change).unwrap_or_default();
    tx.exec_drop(
        "INSERT INTO tributary_parked_row
            (site_id, epoch, sequence, table_name, identity, row_change, reason, parked_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(3))",
        (
            site_id,
            epoch,
            sequence,
            change.table.as_str(),
            change.identity.as_str(),
            json,
            reason,
        ),
    )
    .await?;
    let Some(parked_id) = tx.last_insert_id() else {
        return Ok(None);
    };
    insert_waits(tx, parked_id, waits).await?;
    Ok(Some(parked_id))
}

/// Records a change that can never be written, and needs nobody to write it, straight into
/// `tributary_dropped_row` with `reason` (parked and dropped at once, so it is listed like
/// every dropped row).
pub async fn set_aside(
    tx: &mut Transaction<'_>,
    site_id: &str,
    epoch: u64,
    sequence: u64,
    change: &RowChange,
    reason: &str,
) -> mysql_async::Result<()> {
    if let Some(parked_id) = park(tx, site_id, epoch, sequence, change, &[], reason).await? {
        drop_parked(tx, parked_id, reason).await?;
    }
    tracing::info!(site = %site_id, table = %change.table, "set aside a delete the site could not identify");
    Ok(())
}

async fn insert_waits(
    tx: &mut Transaction<'_>,
    parked_id: u64,
    waits: &[RowRef],
) -> mysql_async::Result<()> {
    tx.exec_batch(
        "INSERT INTO tributary_parked_wait (parked_id, table_name, identity) VALUES (?, ?, ?)",
        waits
            .iter()
            .map(|w| (parked_id, &*w.table, w.identity.as_str())),
    )
    .await
}

/// Parked rows waiting for any of `arrivals`, oldest first.
pub async fn candidates(
    tx: &mut Transaction<'_>,
    arrivals: &[RowRef],
) -> mysql_async::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for chunk in arrivals.chunks(ARRIVALS_PER_QUERY) {
        let clause = vec!["(table_name = ? AND identity = ?)"; chunk.len()].join(" OR ");
        let params: Vec<String> = chunk
            .iter()
            .flat_map(|r| [r.table.to_string(), r.identity.as_str().to_owned()])
            .collect();
        let found: Vec<u64> = tx
            .exec(
                format!("SELECT DISTINCT parked_id FROM tributary_parked_wait WHERE {clause}"),
                params,
            )
            .await?;
        ids.extend(found);
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Parked rows after `after` in parking order, for the periodic retry (which pages through
/// all of them, wrapping around, so no row is starved by older ones that cannot move).
pub async fn page(
    tx: &mut Transaction<'_>,
    after: u64,
    limit: u32,
) -> mysql_async::Result<Vec<u64>> {
    tx.exec(
        "SELECT parked_id FROM tributary_parked_row WHERE parked_id > ? ORDER BY parked_id LIMIT ?",
        (after, limit),
    )
    .await
}

pub async fn load(
    tx: &mut Transaction<'_>,
    parked_id: u64,
) -> mysql_async::Result<Option<ParkedRow>> {
    let row: Option<(String, u64, u64, String, String)> = tx
        .exec_first(
            "SELECT site_id, epoch, sequence, row_change, reason FROM tributary_parked_row
             WHERE parked_id = ?",
            (parked_id,),
        )
        .await?;
    Ok(row.and_then(|(site_id, epoch, sequence, json, reason)| {
        serde_json::from_str(&json).ok().map(|change| ParkedRow {
            parked_id,
            site_id,
            epoch,
            sequence,
            change,
            reason,
        })
    }))
}

/// Whether an older parked change to the same entity is still waiting, or an open conflict
/// holds it.
pub async fn has_earlier(
    tx: &mut Transaction<'_>,
    parked: &ParkedRow,
) -> mysql_async::Result<bool> {
    let found: Option<u8> = tx
        .exec_first(
            "SELECT 1 FROM tributary_parked_row
             WHERE table_name = ? AND identity = ? AND parked_id < ? LIMIT 1",
            (
                parked.change.table.as_str(),
                parked.change.identity.as_str(),
                parked.parked_id,
            ),
        )
        .await?;
    Ok(found.is_some()
        || conflicts::open_on(tx, &parked.change.row_ref())
            .await?
            .is_some())
}

pub async fn unpark(tx: &mut Transaction<'_>, parked_id: u64) -> mysql_async::Result<()> {
    tx.exec_drop(
        "DELETE FROM tributary_parked_wait WHERE parked_id = ?",
        (parked_id,),
    )
    .await?;
    tx.exec_drop(
        "DELETE FROM tributary_parked_row WHERE parked_id = ?",
        (parked_id,),
    )
    .await
}

/// Moves a parked row to `tributary_dropped_row` with `reason`, the row change included.
pub async fn drop_parked(
    tx: &mut Transaction<'_>,
    parked_id: u64,
    reason: &str,
) -> mysql_async::Result<()> {
    tx.exec_drop(
        "INSERT INTO tributary_dropped_row
            (parked_id, site_id, epoch, sequence, table_name, identity, row_change,
             parked_reason, parked_at, drop_reason, dropped_at)
         SELECT parked_id, site_id, epoch, sequence, table_name, identity, row_change,
             reason, parked_at, ?, UTC_TIMESTAMP(3)
         FROM tributary_parked_row WHERE parked_id = ?",
        (reason, parked_id),
    )
    .await?;
    unpark(tx, parked_id).await
}

/// A site's delete of a row settles that site's earlier parked changes to the row: the row is
/// gone at the site, so none of them can ever be written as they are. (One parked because a
/// parent had been deleted at the site before capture read it would otherwise wait for good,
/// holding the delete behind it, and the parent's delete behind that.) They move to
/// `tributary_dropped_row` with the reason, and the delete goes ahead. Only when every parked
/// change to the row is the deleting site's: another site's keeps the queue. Returns how many
/// were dropped.
pub async fn supersede_by_delete(
    tx: &mut Transaction<'_>,
    site_id: &str,
    epoch: u64,
    sequence: u64,
    delete: &RowChange,
) -> mysql_async::Result<u64> {
    let Some(parked) = parked_only_by(tx, site_id, delete).await? else {
        return Ok(0);
    };
    let reason = format!(
        "superseded: site {site_id} deleted the row (epoch {epoch}, batch {sequence}) before this change could be written"
    );
    drop_superseded(tx, site_id, delete, &parked, &reason).await
}

/// A site's later change of a row settles that site's parked changes to the row when the
/// oldest of them can never be written: it refers to a row the site no longer had when
/// capture read it (an encounter moved to another visit, its old visit deleted, all while
/// capture was stopped). Changes travel as whole row images, so the later change holds
/// everything the parked ones would have written; they move to `tributary_dropped_row` with
/// the reason, and the later change goes ahead (written, or parked for what it waits for
/// itself). Only when every parked change to the row is that site's. Returns how many were
/// dropped.
pub async fn supersede_unwritable(
    tx: &mut Transaction<'_>,
    site_id: &str,
    epoch: u64,
    sequence: u64,
    later: &RowChange,
) -> mysql_async::Result<u64> {
    let Some(parked) = parked_only_by(tx, site_id, later).await? else {
        return Ok(0);
    };
    let Some(oldest) = parked.first() else {
        return Ok(0);
    };
    let unwritable = load(tx, *oldest)
        .await?
        .is_some_and(|row| crate::writer::refers_to_rows_gone_at_source(&row.change));
    if !unwritable {
        return Ok(0);
    }
    let reason = format!(
        "superseded: site {site_id} changed the row again (epoch {epoch}, batch {sequence}); \
         the earlier change referred to a row the site no longer had when it was captured"
    );
    drop_superseded(tx, site_id, later, &parked, &reason).await
}

/// The parked changes to `change`'s row, oldest first (locked), when every one of them is
/// `site_id`'s; `None` when another site's keeps the queue.
async fn parked_only_by(
    tx: &mut Transaction<'_>,
    site_id: &str,
    change: &RowChange,
) -> mysql_async::Result<Option<Vec<u64>>> {
    let parked: Vec<(u64, String)> = tx
        .exec(
            "SELECT parked_id, site_id FROM tributary_parked_row
             WHERE table_name = ? AND identity = ? ORDER BY parked_id FOR UPDATE",
            (change.table.as_str(), change.identity.as_str()),
        )
        .await?;
    if parked.iter().any(|(_, site)| site != site_id) {
        return Ok(None);
    }
    Ok(Some(parked.into_iter().map(|(id, _)| id).collect()))
}

/// Drops `parked` (superseded by `by`) with `reason`; returns how many.
async fn drop_superseded(
    tx: &mut Transaction<'_>,
    site_id: &str,
    by: &RowChange,
    parked: &[u64],
    reason: &str,
) -> mysql_async::Result<u64> {
    for parked_id in parked {
        drop_parked(tx, *parked_id, reason).await?;
    }
    if !parked.is_empty() {
        tracing::info!(
            site = %site_id,
            table = %by.table,
            rows = parked.len(),
            "parked changes to a row were superseded by the site's later change"
        );
    }
    Ok(parked.len() as u64)
}

/// Replaces what a parked row waits for (some of its parents arrived, others not yet).
pub async fn rewait(
    tx: &mut Transaction<'_>,
    parked_id: u64,
    waits: &[RowRef],
    reason: &str,
) -> mysql_async::Result<()> {
    tx.exec_drop(
        "DELETE FROM tributary_parked_wait WHERE parked_id = ?",
        (parked_id,),
    )
    .await?;
    tx.exec_drop(
        "UPDATE tributary_parked_row SET reason = ? WHERE parked_id = ?",
        (reason, parked_id),
    )
    .await?;
    insert_waits(tx, parked_id, waits).await
}

/// The operator-facing reason for rows waiting on `waits`.
pub fn waiting_reason(waits: &[RowRef]) -> String {
    let mut shown: Vec<String> = waits.iter().take(5).map(RowRef::to_string).collect();
    if waits.len() > 5 {
        shown.push(format!("and {} more", waits.len() - 5));
    }
    format!("waiting for {}", shown.join(", "))
}

/// The wait a change queued behind an earlier parked change of the same entity records.
pub fn behind(change: &RowChange) -> RowRef {
    RowRef::new(
        change.table.clone(),
        Identity::from_raw(change.identity.as_str().to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_reason_names_identities_and_bounds_its_length() {
        let waits: Vec<RowRef> = (0..8)
            .map(|i| RowRef::new("encounter", Identity::from_uuid(&format!("e-{i}"))))
            .collect();
        let reason = waiting_reason(&waits);
        assert!(reason.starts_with("waiting for encounter[e-0]"), "{reason}");
        assert!(reason.ends_with("and 3 more"), "{reason}");
    }
}
