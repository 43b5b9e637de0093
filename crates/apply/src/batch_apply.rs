//! Applying one opened batch in one HQ transaction: rows, parking, releases and progress
//! commit together or not at all (invariants 2, 3 and 4).

use crate::bookkeeping::{self, Progress};
use crate::conflict_policy::ConflictPolicies;
use crate::conflicts::Origin;
use crate::error::ApplyError;
use crate::new_rows::{IdNumbering, NewRows};
use crate::parking::{self, Hold};
use crate::resolver::Resolver;
use crate::writer::{
    Check, Resolution, ResolvedRow, Scope, Written, resolve_row, resolve_row_deferring, write_row,
};
use mysql_async::{Conn, Transaction, TxOpts};
use std::collections::BTreeMap;
use tributary_batch::BatchHeader;
use tributary_model::{BatchPayload, Op, RowChange, RowRef};
use tributary_schema::SchemaMap;

/// What applying a batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub applied: u64,
    pub parked: u64,
    pub released: u64,
    /// Conflicts met (queued for a person or decided by policy).
    pub conflicts: u64,
}

/// How a batch fits the site's progress, checked under the progress row lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    Next,
    AlreadyApplied,
    Gap {
        expected: u64,
    },
    /// From an epoch older than the one HQ applies: a capture state reset on a machine whose
    /// clock is behind, or a restored old state directory. Rejected, never taken for a
    /// duplicate.
    Stale {
        current_epoch: u64,
    },
}

pub fn fit(progress: Option<Progress>, epoch: u64, sequence: u64) -> Fit {
    match progress {
        Some(p) if epoch < p.epoch => Fit::Stale {
            current_epoch: p.epoch,
        },
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

/// How a batch's rows are written beyond the conflict policies.
#[derive(Debug, Clone, Copy)]
pub struct BatchWriting {
    /// How HQ numbers a multi-row INSERT (`None`: new rows are inserted one by one).
    pub numbering: Option<IdNumbering>,
    /// Record what is written in the integration outbox (`[hq.integration]`).
    pub record_applied: bool,
}

pub async fn apply_batch(
    conn: &mut Conn,
    schema: &SchemaMap,
    policies: &ConflictPolicies,
    writing: BatchWriting,
    resolver: &mut Resolver,
    header: &BatchHeader,
    payload: &BatchPayload,
) -> Result<(Fit, BatchOutcome), ApplyError> {
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    let mut scope = Scope::new(schema, resolver, policies, writing.record_applied);
    let result = apply_in(&mut tx, &mut scope, writing.numbering, header, payload).await;
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
            scope.resolver.clear();
            drop(tx);
            Err(e)
        }
    }
}

async fn apply_in(
    tx: &mut Transaction<'_>,
    scope: &mut Scope<'_>,
    numbering: Option<IdNumbering>,
    header: &BatchHeader,
    payload: &BatchPayload,
) -> Result<(Fit, BatchOutcome), ApplyError> {
    let progress = bookkeeping::lock_progress(tx, &header.site_id).await?;
    let fit = fit(progress, header.epoch, header.sequence);
    if fit != Fit::Next {
        return Ok((fit, BatchOutcome::default()));
    }
    // With nothing parked anywhere (the common case), no row needs the queue-behind check.
    let mut tally = Tally {
        anything_parked: parking::any(tx).await?,
        ..Tally::default()
    };
    let origin = Origin {
        site_id: &header.site_id,
        epoch: header.epoch,
        sequence: header.sequence,
    };
    let mut new_rows = NewRows::new(numbering);
    for change in payload.transactions.iter().flat_map(|t| t.rows.iter()) {
        if new_rows.must_write_before(scope.schema.table(&change.table), change) {
            write_new_rows(tx, scope, origin, &mut new_rows, &mut tally).await?;
        }
        let held = tally.anything_parked;
        let mut placed = place(tx, scope, origin, change, held, Some(&mut new_rows)).await?;
        if let Placed::AfterQueue = placed {
            write_new_rows(tx, scope, origin, &mut new_rows, &mut tally).await?;
            placed = place(tx, scope, origin, change, held, None).await?;
        }
        tally.add(scope, origin, change, placed);
    }
    write_new_rows(tx, scope, origin, &mut new_rows, &mut tally).await?;
    let Tally {
        mut outcome,
        arrivals,
        anything_parked,
    } = tally;
    let released = if anything_parked {
        release(tx, scope, arrivals).await?
    } else {
        Released::new()
    };
    outcome.released = released.values().sum();
    scope.states.flush(tx, scope.schema).await?;
    scope.dropped.record(tx).await?;
    scope.applied.attach_sources(payload);
    let label = format!("{}:{}:{}", header.site_id, header.epoch, header.sequence);
    scope.applied.record(tx, &label).await?;
    let last_committed_at = payload.transactions.iter().map(|t| t.committed_at).max();
    bookkeeping::record_applied(
        tx,
        &header.site_id,
        header.epoch,
        header.sequence,
        outcome.applied,
        outcome.parked,
        last_committed_at,
    )
    .await?;
    for (site, rows) in &released {
        bookkeeping::record_released(tx, site, *rows).await?;
    }
    if payload.row_count() > 0 {
        bookkeeping::record_data(tx, &header.site_id).await?;
    }
    if let Some(health) = &payload.health {
        bookkeeping::record_health(tx, &header.site_id, health).await?;
    }
    if let Some(earlier) = progress.filter(|p| header.epoch > p.epoch) {
        let unseeded_after =
            (payload.origin != tributary_model::Origin::Snapshot).then_some(earlier.epoch);
        if unseeded_after.is_some() {
            tracing::warn!(
                site = %header.site_id,
                epoch = header.epoch,
                earlier_epoch = earlier.epoch,
                earlier_last_sequence = earlier.last_sequence,
                "the site began a new epoch without a seed (its capture state was reset or \
                 lost): what changed at the site meanwhile may be missing at HQ; run \
                 'tributary seed --restart-stream' at the site"
            );
        }
        bookkeeping::record_epoch_start(tx, &header.site_id, unseeded_after).await?;
    }
    Ok((Fit::Next, outcome))
}

/// What a batch's rows came to so far.
#[derive(Default)]
struct Tally {
    outcome: BatchOutcome,
    /// Rows written: parked rows waiting for them are released after the batch's rows.
    arrivals: Vec<RowRef>,
    /// Whether anything is parked or held (then each row checks for a queue to join).
    anything_parked: bool,
}

impl Tally {
    fn add(
        &mut self,
        scope: &mut Scope<'_>,
        origin: Origin<'_>,
        change: &RowChange,
        placed: Placed,
    ) {
        match placed {
            Placed::Written => {
                scope.applied.note(origin, change);
                self.outcome.applied += 1;
                self.arrivals.push(change.row_ref());
            }
            Placed::Parked => {
                self.outcome.parked += 1;
                self.anything_parked = true;
            }
            Placed::KeptHq => self.outcome.conflicts += 1,
            Placed::Queued => {
                self.outcome.conflicts += 1;
                self.anything_parked = true;
            }
            Placed::Deferred | Placed::AfterQueue | Placed::SetAside => {}
        }
    }
}

/// Writes the queued new rows; rows a group statement could not take are written alone.
async fn write_new_rows<'c>(
    tx: &mut Transaction<'_>,
    scope: &mut Scope<'_>,
    origin: Origin<'_>,
    new_rows: &mut NewRows<'c>,
    tally: &mut Tally,
) -> Result<(), ApplyError> {
    if new_rows.is_empty() {
        return Ok(());
    }
    let written = new_rows.write(tx, scope, origin.site_id).await?;
    for change in written.rows {
        tally.add(scope, origin, change, Placed::Written);
    }
    for change in written.refused {
        let placed = place(tx, scope, origin, change, tally.anything_parked, None).await?;
        tally.add(scope, origin, change, placed);
    }
    Ok(())
}

enum Placed {
    Written,
    Parked,
    /// A new row queued to be inserted with others of its table (counted when written).
    Deferred,
    /// Refers to queued rows but cannot join them: to be placed again once they are written.
    AfterQueue,
    /// A conflict the table's policy decided for HQ.
    KeptHq,
    /// A conflict left open for a person.
    Queued,
    /// A delete the site could not identify, recorded in `tributary_dropped_row`: another
    /// delete of the same batch or a later one does its work (see `Resolution::Unidentifiable`).
    SetAside,
}

/// Writes a change (or queues a new row to be written with others), or parks it with what it
/// waits for.
async fn place<'c>(
    tx: &mut Transaction<'_>,
    scope: &mut Scope<'_>,
    origin: Origin<'_>,
    change: &'c RowChange,
    anything_parked: bool,
    new_rows: Option<&mut NewRows<'c>>,
) -> Result<Placed, ApplyError> {
    let mut hold = if anything_parked {
        parking::hold(tx, &change.row_ref()).await?
    } else {
        None
    };
    if hold == Some(Hold::Parked) {
        let (site, epoch, sequence) = (origin.site_id, origin.epoch, origin.sequence);
        let superseded = if change.op == Op::Delete {
            parking::supersede_by_delete(tx, site, epoch, sequence, change).await?
        } else {
            parking::supersede_unwritable(tx, site, epoch, sequence, change).await?
        };
        if superseded > 0 {
            // An open conflict may still hold the row.
            hold = parking::hold(tx, &change.row_ref()).await?;
        }
    }
    let (waits, reason) = if let Some(hold) = hold {
        (vec![parking::behind(change)], hold.reason())
    } else {
        let resolution = match &new_rows {
            Some(queue) if !queue.is_empty() => {
                resolve_row_deferring(tx, scope.schema, scope.resolver, change, queue.queued())
                    .await?
            }
            _ => resolve_row(tx, scope.schema, scope.resolver, change).await?,
        };
        match resolution {
            Resolution::Ready(row) => {
                scope
                    .dropped
                    .note(origin.site_id, &change.table, &row.dropped_columns);
                let row = match (new_rows, scope.schema.table(&change.table)) {
                    (Some(queue), Some(map)) => queue.offer(map, change, row),
                    _ => Some(row),
                };
                return match row {
                    None => Ok(Placed::Deferred),
                    Some(row) if !row.deferred.is_empty() => Ok(Placed::AfterQueue),
                    Some(row) => write_or_park(tx, scope, origin, change, row).await,
                };
            }
            Resolution::Waiting(waits) => {
                let reason = parking::waiting_reason(&waits);
                (waits, reason)
            }
            Resolution::Blocked(reason) => (Vec::new(), reason),
            Resolution::Unidentifiable(reason) => {
                parking::set_aside(
                    tx,
                    origin.site_id,
                    origin.epoch,
                    origin.sequence,
                    change,
                    &reason,
                )
                .await?;
                return Ok(Placed::SetAside);
            }
        }
    };
    park(tx, origin, change, &waits, &reason).await?;
    Ok(Placed::Parked)
}

/// Writes a resolved row; a row HQ refuses (a unique key, a constraint) is parked with the
/// reason.
async fn write_or_park(
    tx: &mut Transaction<'_>,
    scope: &mut Scope<'_>,
    origin: Origin<'_>,
    change: &RowChange,
    row: ResolvedRow,
) -> Result<Placed, ApplyError> {
    match write_row(tx, scope, origin, change, row, Check::Conflicts).await {
        Ok(Written::Done) => Ok(Placed::Written),
        Ok(Written::KeptHq) => Ok(Placed::KeptHq),
        Ok(Written::Queued) => Ok(Placed::Queued),
        Ok(Written::Refused(reason)) => {
            park(tx, origin, change, &[], &reason).await?;
            Ok(Placed::Parked)
        }
        Err(mysql_async::Error::Server(e)) if is_row_refusal(e.code) => {
            park(tx, origin, change, &[], &refusal_reason(&change.table, &e)).await?;
            Ok(Placed::Parked)
        }
        Err(e) => Err(e.into()),
    }
}

async fn park(
    tx: &mut Transaction<'_>,
    origin: Origin<'_>,
    change: &RowChange,
    waits: &[RowRef],
    reason: &str,
) -> Result<(), ApplyError> {
    parking::park(
        tx,
        origin.site_id,
        origin.epoch,
        origin.sequence,
        change,
        waits,
        reason,
    )
    .await?;
    Ok(())
}

/// Rows released, per site they came from (a site's row may wait for another site's).
pub type Released = BTreeMap<String, u64>;

/// Releases parked rows whose waits are satisfied by `arrivals`, and then those satisfied by
/// what they release, until nothing more moves.
pub(crate) async fn release(
    tx: &mut Transaction<'_>,
    scope: &mut Scope<'_>,
    arrivals: Vec<RowRef>,
) -> Result<Released, ApplyError> {
    let candidates = parking::candidates(tx, &arrivals).await?;
    release_candidates(tx, scope, candidates).await
}

/// Retries the given parked rows (oldest first), then whatever their release unblocks.
async fn release_candidates(
    tx: &mut Transaction<'_>,
    scope: &mut Scope<'_>,
    mut candidates: Vec<u64>,
) -> Result<Released, ApplyError> {
    let mut released = Released::new();
    while !candidates.is_empty() {
        let mut arrivals = Vec::new();
        for parked_id in candidates {
            let Some(parked) = parking::load(tx, parked_id).await? else {
                continue;
            };
            if parking::has_earlier(tx, &parked).await? {
                continue;
            }
            match resolve_row(tx, scope.schema, scope.resolver, &parked.change).await? {
                Resolution::Ready(row) => {
                    scope
                        .dropped
                        .note(&parked.site_id, &parked.change.table, &row.dropped_columns);
                    let origin = Origin {
                        site_id: &parked.site_id,
                        epoch: parked.epoch,
                        sequence: parked.sequence,
                    };
                    let written =
                        write_row(tx, scope, origin, &parked.change, row, Check::Conflicts).await;
                    match written {
                        Ok(Written::Done) => {}
                        Ok(Written::Refused(reason)) => {
                            if reason != parked.reason {
                                parking::rewait(tx, parked_id, &[], &reason).await?;
                            }
                            continue;
                        }
                        Ok(Written::KeptHq | Written::Queued) => {
                            // Settled as a conflict (recorded there): it leaves parking, and
                            // nothing arrived.
                            parking::unpark(tx, parked_id).await?;
                            continue;
                        }
                        Err(mysql_async::Error::Server(e)) if is_row_refusal(e.code) => {
                            let reason = refusal_reason(&parked.change.table, &e);
                            parking::rewait(tx, parked_id, &[], &reason).await?;
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    }
                    parking::unpark(tx, parked_id).await?;
                    scope.applied.note(origin, &parked.change);
                    tracing::debug!(site = %parked.site_id, table = %parked.change.table, "released a parked row");
                    arrivals.push(parked.change.row_ref());
                    *released.entry(parked.site_id).or_default() += 1;
                }
                Resolution::Waiting(waits) => {
                    let reason = parking::waiting_reason(&waits);
                    // Waits only shrink (parents arrive, they do not leave): an unchanged reason
                    // means there is nothing to rewrite.
                    if reason != parked.reason {
                        parking::rewait(tx, parked_id, &waits, &reason).await?;
                    }
                }
                Resolution::Blocked(reason) => {
                    if reason != parked.reason {
                        parking::rewait(tx, parked_id, &[], &reason).await?;
                    }
                }
                Resolution::Unidentifiable(reason) => {
                    parking::drop_parked(tx, parked_id, &reason).await?;
                }
            }
        }
        candidates = if arrivals.is_empty() {
            Vec::new()
        } else {
            parking::candidates(tx, &arrivals).await?
        };
    }
    Ok(released)
}

/// Retries a page of parked rows (those after `after`, up to `limit`, in parking order) in
/// one HQ transaction: rows whose parents were created at HQ directly, or that HQ refused
/// before an operator fixed HQ (a missing table, a colliding name), are released without
/// waiting for another arrival. Returns what was released and where the next page starts
/// (`0` after the last page: the next retry wraps around).
pub async fn retry_parked(
    conn: &mut Conn,
    schema: &SchemaMap,
    policies: &ConflictPolicies,
    resolver: &mut Resolver,
    after: u64,
    limit: u32,
    record_applied: bool,
) -> Result<(Released, u64), ApplyError> {
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    let mut scope = Scope::new(schema, resolver, policies, record_applied);
    let result = async {
        let candidates = parking::page(&mut tx, after, limit).await?;
        let next = match candidates.last() {
            Some(last) if candidates.len() >= limit as usize => *last,
            _ => 0,
        };
        let released = retry_in(&mut tx, &mut scope, candidates).await?;
        Ok::<_, ApplyError>((released, next))
    }
    .await;
    finish_retry(tx, scope.resolver, result).await
}

/// Retries the given parked rows now, and whatever their release unblocks, in one HQ
/// transaction (`tributary parked retry`).
pub async fn retry_rows(
    conn: &mut Conn,
    schema: &SchemaMap,
    policies: &ConflictPolicies,
    resolver: &mut Resolver,
    parked_ids: Vec<u64>,
    record_applied: bool,
) -> Result<Released, ApplyError> {
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    let mut scope = Scope::new(schema, resolver, policies, record_applied);
    let result = retry_in(&mut tx, &mut scope, parked_ids).await;
    finish_retry(tx, scope.resolver, result).await
}

async fn retry_in(
    tx: &mut Transaction<'_>,
    scope: &mut Scope<'_>,
    candidates: Vec<u64>,
) -> Result<Released, ApplyError> {
    let released = release_candidates(tx, scope, candidates).await?;
    record_releases(tx, scope, &released).await?;
    Ok(released)
}

/// Counts released rows per site and records the states of what was written.
pub(crate) async fn record_releases(
    tx: &mut Transaction<'_>,
    scope: &mut Scope<'_>,
    released: &Released,
) -> Result<(), ApplyError> {
    for (site, rows) in released {
        bookkeeping::record_released(tx, site, *rows).await?;
    }
    scope.states.flush(tx, scope.schema).await?;
    scope.dropped.record(tx).await?;
    // Released rows are a transaction of HQ's own, named after its outbox entry.
    scope.applied.record(tx, "").await?;
    Ok(())
}

/// Commits a retry, or (dropping the transaction rolls it back) forgets the ids learned in it.
async fn finish_retry<T>(
    tx: Transaction<'_>,
    resolver: &mut Resolver,
    result: Result<T, ApplyError>,
) -> Result<T, ApplyError> {
    match result {
        Ok(outcome) => {
            tx.commit().await?;
            Ok(outcome)
        }
        Err(e) => {
            resolver.clear();
            Err(e)
        }
    }
}

/// Server errors that mean "this row cannot be written as it is" rather than "HQ is busy or
/// down": every server error except the transient ones (deadlock, lock wait, shutdown,
/// connection limits), which roll the whole batch back to be retried.
fn is_row_refusal(code: u16) -> bool {
    !crate::error::is_transient_server_code(code)
}

/// Why HQ refused a row, for operators: what the server said, with the names of the key or
/// constraint involved (schema names, never the values the server's message quotes).
fn refusal_reason(table: &str, error: &mysql_async::ServerError) -> String {
    let named = |quoted_after: &str| quoted_name(&error.message, quoted_after);
    let what = match error.code {
        1062 => {
            let key = named("for key ").map_or_else(String::new, |k| format!(" `{k}`"));
            format!(
                "a unique key{key} of `{table}` already holds another row with the same value \
                 (error 1062: the same metadata created independently at two sites, or at a \
                 site and at HQ?); rename or retire one of them at HQ, then `tributary parked \
                 retry`"
            )
        }
        1451 => format!(
            "other HQ rows still refer to it{} (error 1451: rows another site sent, or rows \
             created at HQ); it is retried until they are gone",
            named("CONSTRAINT ").map_or_else(String::new, |c| format!(" (constraint `{c}`)"))
        ),
        1452 => format!(
            "a referenced row is missing at HQ{} (error 1452)",
            named("CONSTRAINT ").map_or_else(String::new, |c| format!(" (constraint `{c}`)"))
        ),
        1048 | 1364 => "a required column has no value".to_owned(),
        1406 => "error 1406, a value is too long for its HQ column".to_owned(),
        1264 | 1366 | 1292 => "a value does not fit its HQ column type".to_owned(),
        code => format!("a constraint rejected it (error {code})"),
    };
    format!("HQ refused the row: {what}")
}

/// The back-quoted or quoted name right after `marker` in a server message (MariaDB quotes key
/// names with `'` and constraint names with `` ` ``).
fn quoted_name(message: &str, marker: &str) -> Option<String> {
    let rest = &message[message.rfind(marker)? + marker.len()..];
    let quote = rest.chars().next().filter(|c| *c == '\'' || *c == '`')?;
    let name = &rest[1..];
    let end = name.find(quote)?;
    Some(name[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: u16, message: &str) -> mysql_async::ServerError {
        mysql_async::ServerError {
            code,
            message: message.to_owned(),
            state: "23000".to_owned(),
        }
    }

    #[test]
    fn refusals_name_the_key_but_never_the_value() {
        let reason = refusal_reason(
            "location_tag",
            &server_error(1062, "Duplicate entry 'Triage Room' for key 'name'"),
        );
        assert!(
            reason.contains("a unique key `name` of `location_tag` already holds"),
            "{reason}"
        );
        assert!(!reason.contains("Triage"), "no values: {reason}");
        let reason = refusal_reason(
            "person",
            &server_error(
                1451,
                "Cannot delete or update a parent row: a foreign key constraint fails \
                 (`openmrs`.`obs`, CONSTRAINT `person_obs` FOREIGN KEY (`person_id`) REFERENCES \
                 `person` (`person_id`))",
            ),
        );
        assert!(reason.contains("(constraint `person_obs`)"), "{reason}");
        assert!(
            refusal_reason("x", &server_error(1062, "Duplicate entry"))
                .contains("a unique key of `x`")
        );
        assert!(refusal_reason("x", &server_error(4025, "CONSTRAINT")).contains("error 4025"));
    }

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
        assert_eq!(fit(p, 0, 1), Fit::Stale { current_epoch: 1 });
    }
}
