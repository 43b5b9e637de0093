//! Applying one opened batch in one HQ transaction: rows, parking, releases and progress
//! commit together or not at all (invariants 2, 3 and 4).

use crate::bookkeeping::{self, Progress};
use crate::error::ApplyError;
use crate::parking;
use crate::resolver::Resolver;
use crate::writer::{Resolution, resolve_row, write_row};
use mysql_async::{Conn, Transaction, TxOpts};
use tributary_batch::BatchHeader;
use tributary_model::{BatchPayload, RowChange, RowRef};
use tributary_schema::SchemaMap;

/// What applying a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub applied: u64,
    pub parked: u64,
    pub released: u64,
}

/// How a batch fits the site's progress, checked under the progress row lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    Next,
    AlreadyApplied,
    Gap { expected: u64 },
}

pub fn fit(progress: Option<Progress>, epoch: u64, sequence: u64) -> Fit {
    match progress {
        Some(p) if p.covers(epoch, sequence) => Fit::AlreadyApplied,
        Some(p) if p.expects(epoch, sequence) => Fit::Next,
        Some(p) if epoch == p.epoch => Fit::Gap {
            expected: p.last_sequence + 1,
        },
        Some(_) => Fit::Gap { expected: 1 },
        None if sequence == 1 => Fit::Next,
        None => Fit::Gap { expected: 1 },
    }
}

pub async fn apply_batch(
    conn: &mut Conn,
    schema: &SchemaMap,
    resolver: &mut Resolver,
    header: &BatchHeader,
    payload: &BatchPayload,
) -> Result<(Fit, BatchOutcome), ApplyError> {
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    let result = apply_in(&mut tx, schema, resolver, header, payload).await;
    match result {
        Ok((Fit::Next, outcome)) => {
            tx.commit().await?;
            Ok((Fit::Next, outcome))
        }
        Ok(other) => {
            tx.rollback().await?;
            Ok(other)
        }
        Err(e) => {
            // Ids learned inside the rolled-back transaction were never committed.
            resolver.clear();
            drop(tx);
            Err(e)
        }
    }
}

async fn apply_in(
    tx: &mut Transaction<'_>,
    schema: &SchemaMap,
    resolver: &mut Resolver,
    header: &BatchHeader,
    payload: &BatchPayload,
) -> Result<(Fit, BatchOutcome), ApplyError> {
    let progress = bookkeeping::lock_progress(tx, &header.site_id).await?;
    let fit = fit(progress, header.epoch, header.sequence);
    if fit != Fit::Next {
        return Ok((fit, BatchOutcome::default()));
    }
    let mut outcome = BatchOutcome::default();
    let mut arrivals = Vec::new();
    for change in payload.transactions.iter().flat_map(|t| t.rows.iter()) {
        let placed = place(tx, schema, resolver, header, change).await?;
        match placed {
            Placed::Written => {
                outcome.applied += 1;
                arrivals.push(change.row_ref());
            }
            Placed::Parked => outcome.parked += 1,
        }
    }
    outcome.released = release(tx, schema, resolver, arrivals).await?;
    let last_committed_at = payload.transactions.iter().map(|t| t.committed_at).max();
    bookkeeping::record_applied(
        tx,
        &header.site_id,
        header.epoch,
        header.sequence,
        outcome.applied + outcome.released,
        outcome.parked,
        last_committed_at,
    )
    .await?;
    Ok((Fit::Next, outcome))
}

enum Placed {
    Written,
    Parked,
}

/// Writes a change, or parks it with what it waits for.
async fn place(
    tx: &mut Transaction<'_>,
    schema: &SchemaMap,
    resolver: &mut Resolver,
    header: &BatchHeader,
    change: &RowChange,
) -> Result<Placed, ApplyError> {
    let park = |waits: Vec<RowRef>, reason: String| (waits, reason);
    let (waits, reason) = if parking::has_parked(tx, &change.row_ref()).await? {
        park(
            vec![parking::behind(change)],
            "queued behind an earlier parked change to the same row".to_owned(),
        )
    } else {
        match resolve_row(tx, schema, resolver, change).await? {
            Resolution::Ready(values) => {
                match write_row(tx, schema, resolver, change, values).await {
                    Ok(()) => return Ok(Placed::Written),
                    Err(mysql_async::Error::Server(e)) if is_row_refusal(e.code) => park(
                        Vec::new(),
                        format!("HQ refused the row: {}", refusal_text(e.code)),
                    ),
                    Err(e) => return Err(e.into()),
                }
            }
            Resolution::Waiting(waits) => {
                let reason = parking::waiting_reason(&waits);
                park(waits, reason)
            }
            Resolution::Blocked(reason) => park(Vec::new(), reason),
        }
    };
    parking::park(
        tx,
        &header.site_id,
        header.epoch,
        header.sequence,
        change,
        &waits,
        &reason,
    )
    .await?;
    Ok(Placed::Parked)
}

/// Releases parked rows whose waits are satisfied by `arrivals`, and then those satisfied by
/// what they release, until nothing more moves. Returns how many rows were released.
async fn release(
    tx: &mut Transaction<'_>,
    schema: &SchemaMap,
    resolver: &mut Resolver,
    mut arrivals: Vec<RowRef>,
) -> Result<u64, ApplyError> {
    let mut released = 0;
    while !arrivals.is_empty() {
        let candidates = parking::candidates(tx, &arrivals).await?;
        arrivals.clear();
        for parked_id in candidates {
            let Some(parked) = parking::load(tx, parked_id).await? else {
                continue;
            };
            if parking::has_earlier(tx, &parked).await? {
                continue;
            }
            match resolve_row(tx, schema, resolver, &parked.change).await? {
                Resolution::Ready(values) => {
                    match write_row(tx, schema, resolver, &parked.change, values).await {
                        Ok(()) => {}
                        Err(mysql_async::Error::Server(e)) if is_row_refusal(e.code) => {
                            let reason = format!("HQ refused the row: {}", refusal_text(e.code));
                            parking::rewait(tx, parked_id, &[], &reason).await?;
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    }
                    parking::unpark(tx, parked_id).await?;
                    tracing::debug!(site = %parked.site_id, table = %parked.change.table, "released a parked row");
                    arrivals.push(parked.change.row_ref());
                    released += 1;
                }
                Resolution::Waiting(waits) => {
                    parking::rewait(tx, parked_id, &waits, &parking::waiting_reason(&waits))
                        .await?;
                }
                Resolution::Blocked(reason) => parking::rewait(tx, parked_id, &[], &reason).await?,
            }
        }
    }
    Ok(released)
}

/// Server errors that mean "this row cannot be written as it is" rather than "HQ is down".
fn is_row_refusal(code: u16) -> bool {
    matches!(
        code,
        1048 | 1062 | 1364 | 1366 | 1406 | 1451 | 1452 | 1264 | 1292 | 3819 | 4025
    )
}

/// A description of a refusal that carries no row values (server messages quote them).
fn refusal_text(code: u16) -> &'static str {
    match code {
        1062 => "error 1062, a unique key already holds another row with the same value",
        1451 => "error 1451, other HQ rows still refer to it",
        1452 => "error 1452, a referenced row is missing",
        1048 | 1364 => "a required column has no value",
        1406 => "error 1406, a value is too long for its HQ column",
        1264 | 1366 | 1292 => "a value does not fit its HQ column type",
        _ => "a constraint rejected it",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_orders_batches_by_epoch_and_sequence() {
        assert_eq!(fit(None, 1, 1), Fit::Next);
        assert_eq!(fit(None, 1, 2), Fit::Gap { expected: 1 });
        let p = Some(Progress {
            epoch: 1,
            last_sequence: 3,
        });
        assert_eq!(fit(p, 1, 3), Fit::AlreadyApplied);
        assert_eq!(fit(p, 1, 4), Fit::Next);
        assert_eq!(fit(p, 1, 6), Fit::Gap { expected: 4 });
        assert_eq!(fit(p, 2, 1), Fit::Next);
    }
}
