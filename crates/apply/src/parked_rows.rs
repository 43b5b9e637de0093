//! Parked rows as operators see and act on them (`tributary parked list|show|retry|drop`):
//! each row with where it came from, how long it has waited and, for every row it waits for,
//! whether HQ has that row now, received it parked, or is still waiting for the site.
//!
//! Invariants: a row leaves parking only by release (written at HQ, the same code as the
//! applier's retry) or by an operator's drop, which copies it into `tributary_dropped_row`
//! with the operator's reason and the time in the transaction that removes it, and is logged
//! (site, table, parked id and reason; never the identity or values). Row values are returned
//! only to a caller that asks for the row change (`show --values`); nothing here logs them.

use crate::batch_apply;
use crate::bookkeeping;
use crate::conflict_policy::ConflictPolicies;
use crate::error::ApplyError;
use crate::parked_reason::{self, AwaitedRow, AwaitedState};
use crate::parking;
use crate::resolver::Resolver;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, Transaction, TxOpts};
use serde::Serialize;
use std::collections::BTreeMap;
use tributary_model::{Identity, RowChange, RowRef};
use tributary_schema::{Policy, SchemaMap};

/// Parked ids per query when reading what rows wait for.
const IDS_PER_QUERY: usize = 500;
/// Parked rows one `retry --all` transaction looks at (as the applier's periodic retry).
const RETRY_PAGE: u32 = 5_000;
/// Cache entries of the HQ id resolver for one command.
const RESOLVER_ENTRIES: usize = 10_000;

/// Which parked rows to list.
#[derive(Debug, Clone, Default)]
pub struct ParkedFilter {
    pub site: Option<String>,
    pub table: Option<String>,
    /// Only rows parked at least this long ago.
    pub older_than_s: u64,
    pub limit: u32,
}

/// One parked row as an operator sees it: where it is, how long it has waited and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParkedEntry {
    pub parked_id: u64,
    pub site_id: String,
    pub epoch: u64,
    pub sequence: u64,
    pub table: String,
    pub identity: String,
    /// UTC, `YYYY-MM-DD HH:MM:SS`.
    pub parked_at: String,
    pub age_seconds: u64,
    /// The operator's reason ("waiting for encounter 5a1c..., not yet received from site x").
    pub reason: String,
    /// The reason recorded with the row (full identities).
    pub recorded_reason: String,
    pub waits: Vec<AwaitedRow>,
}

/// A parked row with its row change (whose values only `show --values` prints).
pub struct ParkedDetail {
    pub entry: ParkedEntry,
    /// `None` when the stored change cannot be read back.
    pub change: Option<RowChange>,
}

/// What `retry` did to one parked row.
#[derive(Debug)]
pub enum RetryOutcome {
    /// Written at HQ; `released` counts it and the rows its arrival released in turn.
    Released { released: u64 },
    /// Still parked, with why.
    StillParked(Box<ParkedEntry>),
    /// Not written: HQ's row changed since the site last wrote it, so it became a conflict
    /// (`tributary conflicts list`), settled by the table's policy or waiting for a person.
    Conflict,
    /// No such parked row.
    Unknown,
}

/// A row an operator dropped from parking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DroppedRow {
    pub parked_id: u64,
    pub site_id: String,
    pub table: String,
    /// UTC, `YYYY-MM-DD HH:MM:SS`.
    pub dropped_at: String,
    pub drop_reason: String,
}

/// HQ's parked rows, for one operator command.
pub struct ParkedRows {
    conn: Conn,
    schema: SchemaMap,
    conflicts: ConflictPolicies,
    resolver: Resolver,
    /// Record what a retry writes for the integration topics (`[hq.integration]` on).
    record_applied: bool,
}

type EntryRow = (u64, String, u64, u64, String, String, String, String, u64);

const ENTRY_COLUMNS: &str = "parked_id, site_id, epoch, sequence, table_name, identity, reason,
    DATE_FORMAT(parked_at, '%Y-%m-%d %H:%i:%s'),
    CAST(GREATEST(TIMESTAMPDIFF(SECOND, parked_at, UTC_TIMESTAMP(3)), 0) AS UNSIGNED)";

impl ParkedRows {
    /// Connects to HQ, creates Tributary's tables if needed, and reads HQ's schema (to tell
    /// whether an awaited row is at HQ, and to retry).
    pub async fn connect(
        hq: Opts,
        database: &str,
        policy: &Policy,
        conflicts: ConflictPolicies,
    ) -> Result<ParkedRows, ApplyError> {
        let (conn, schema) = bookkeeping::open_hq(hq, database, policy).await?;
        Ok(ParkedRows {
            conn,
            schema,
            conflicts,
            resolver: Resolver::new(RESOLVER_ENTRIES),
            record_applied: false,
        })
    }

    /// Records what a retry writes for the integration topics (`[hq.integration]` on).
    pub fn recording_applied_changes(mut self, on: bool) -> ParkedRows {
        self.record_applied = on;
        self
    }

    /// Parked rows matching `filter`, oldest first, each with what it waits for.
    pub async fn list(&mut self, filter: &ParkedFilter) -> Result<Vec<ParkedEntry>, ApplyError> {
        let rows: Vec<EntryRow> = self
            .conn
            .exec(
                format!(
                    "SELECT {ENTRY_COLUMNS} FROM tributary_parked_row
                     WHERE (? IS NULL OR site_id = ?) AND (? IS NULL OR table_name = ?)
                       AND parked_at <= UTC_TIMESTAMP(3) - INTERVAL ? SECOND
                     ORDER BY parked_id LIMIT ?"
                ),
                (
                    &filter.site,
                    &filter.site,
                    &filter.table,
                    &filter.table,
                    filter.older_than_s,
                    filter.limit,
                ),
            )
            .await?;
        self.entries(rows).await
    }

    /// One parked row, or `None` when there is no such parked row.
    pub async fn show(&mut self, parked_id: u64) -> Result<Option<ParkedDetail>, ApplyError> {
        let Some(entry) = self.entry(parked_id).await? else {
            return Ok(None);
        };
        let json: Option<String> = self
            .conn
            .exec_first(
                "SELECT row_change FROM tributary_parked_row WHERE parked_id = ?",
                (parked_id,),
            )
            .await?;
        let change = json.and_then(|json| serde_json::from_str(&json).ok());
        Ok(Some(ParkedDetail { entry, change }))
    }

    /// Tries to write one parked row now (and what its arrival releases in turn).
    pub async fn retry(&mut self, parked_id: u64) -> Result<RetryOutcome, ApplyError> {
        if self.entry(parked_id).await?.is_none() {
            return Ok(RetryOutcome::Unknown);
        }
        let released = batch_apply::retry_rows(
            &mut self.conn,
            &self.schema,
            &self.conflicts,
            &mut self.resolver,
            vec![parked_id],
            self.record_applied,
        )
        .await?;
        let released: u64 = released.values().sum();
        Ok(match self.entry(parked_id).await? {
            Some(entry) => RetryOutcome::StillParked(Box::new(entry)),
            // Left parking without being written: its row changed at HQ since the site last
            // wrote it, and the conflict record holds it now.
            None if released == 0 => RetryOutcome::Conflict,
            None => RetryOutcome::Released { released },
        })
    }

    /// Tries every parked row once, page by page in parking order; returns how many were
    /// released and how many are still parked.
    pub async fn retry_all(&mut self) -> Result<(u64, u64), ApplyError> {
        let mut released = 0;
        let mut after = 0;
        loop {
            let (page, next) = batch_apply::retry_parked(
                &mut self.conn,
                &self.schema,
                &self.conflicts,
                &mut self.resolver,
                after,
                RETRY_PAGE,
                self.record_applied,
            )
            .await?;
            released += page.values().sum::<u64>();
            if next == 0 {
                break;
            }
            after = next;
        }
        let left: Option<u64> = self
            .conn
            .query_first("SELECT COUNT(*) FROM tributary_parked_row")
            .await?;
        Ok((released, left.unwrap_or(0)))
    }

    /// Removes a parked row for good, recording it (row change included), the operator's
    /// reason and the time in `tributary_dropped_row` in the same transaction. `None` when
    /// there is no such parked row.
    pub async fn drop_row(
        &mut self,
        parked_id: u64,
        reason: &str,
    ) -> Result<Option<DroppedRow>, ApplyError> {
        let mut tx = self.conn.start_transaction(TxOpts::default()).await?;
        let found: Option<(String, String)> = tx
            .exec_first(
                "SELECT site_id, table_name FROM tributary_parked_row WHERE parked_id = ? FOR UPDATE",
                (parked_id,),
            )
            .await?;
        let Some((site_id, table)) = found else {
            tx.rollback().await?;
            return Ok(None);
        };
        parking::drop_parked(&mut tx, parked_id, reason).await?;
        tx.commit().await?;
        tracing::warn!(
            parked_id,
            site = %site_id,
            table = %table,
            reason,
            "an operator dropped a parked row; it is kept in tributary_dropped_row"
        );
        self.dropped(parked_id).await
    }

    /// A parked row that was dropped, with when and why.
    pub async fn dropped(&mut self, parked_id: u64) -> Result<Option<DroppedRow>, ApplyError> {
        let row: Option<(String, String, String, String)> = self
            .conn
            .exec_first(
                "SELECT site_id, table_name, DATE_FORMAT(dropped_at, '%Y-%m-%d %H:%i:%s'),
                        drop_reason
                 FROM tributary_dropped_row WHERE parked_id = ?",
                (parked_id,),
            )
            .await?;
        Ok(
            row.map(|(site_id, table, dropped_at, drop_reason)| DroppedRow {
                parked_id,
                site_id,
                table,
                dropped_at,
                drop_reason,
            }),
        )
    }

    async fn entry(&mut self, parked_id: u64) -> Result<Option<ParkedEntry>, ApplyError> {
        let rows: Vec<EntryRow> = self
            .conn
            .exec(
                format!("SELECT {ENTRY_COLUMNS} FROM tributary_parked_row WHERE parked_id = ?"),
                (parked_id,),
            )
            .await?;
        Ok(self.entries(rows).await?.pop())
    }

    /// Entries for the rows read, with what each waits for and where that stands.
    async fn entries(&mut self, rows: Vec<EntryRow>) -> Result<Vec<ParkedEntry>, ApplyError> {
        let ids: Vec<u64> = rows.iter().map(|r| r.0).collect();
        let mut waits = self.awaited(&ids).await?;
        Ok(rows
            .into_iter()
            .map(
                |(parked_id, site_id, epoch, sequence, table, identity, recorded, at, age)| {
                    let waits = waits.remove(&parked_id).unwrap_or_default();
                    ParkedEntry {
                        reason: parked_reason::describe(&table, &identity, &waits, &recorded),
                        parked_id,
                        site_id,
                        epoch,
                        sequence,
                        table,
                        identity,
                        parked_at: at,
                        age_seconds: age,
                        recorded_reason: recorded,
                        waits,
                    }
                },
            )
            .collect())
    }

    /// What each of `ids` waits for: an awaited row that is parked itself names that parked
    /// row; otherwise HQ is asked whether it has the row now; otherwise it is expected from
    /// the site that referred to it (the waiting row's site).
    async fn awaited(&mut self, ids: &[u64]) -> Result<BTreeMap<u64, Vec<AwaitedRow>>, ApplyError> {
        type WaitRow = (u64, String, String, String, Option<u64>, Option<String>);
        let mut found: Vec<WaitRow> = Vec::new();
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let earliest = "FROM tributary_parked_row r WHERE r.table_name = w.table_name
                AND r.identity = w.identity AND r.parked_id <> w.parked_id
                ORDER BY r.parked_id LIMIT 1";
            let rows: Vec<WaitRow> = self
                .conn
                .exec(
                    format!(
                        "SELECT w.parked_id, w.table_name, w.identity, p.site_id,
                                (SELECT r.parked_id {earliest}), (SELECT r.site_id {earliest})
                         FROM tributary_parked_wait w
                         JOIN tributary_parked_row p ON p.parked_id = w.parked_id
                         WHERE w.parked_id IN ({marks})
                         ORDER BY w.parked_id, w.table_name, w.identity"
                    ),
                    chunk.to_vec(),
                )
                .await?;
            found.extend(rows);
        }
        let mut tx = self.conn.start_transaction(TxOpts::default()).await?;
        let mut waits: BTreeMap<u64, Vec<AwaitedRow>> = BTreeMap::new();
        for (parked_id, table, identity, waiting_site, parked, parked_site) in found {
            let state = match (parked, parked_site) {
                (Some(parked_id), Some(site_id)) => AwaitedState::Parked { parked_id, site_id },
                _ if at_hq(&mut tx, &self.schema, &mut self.resolver, &table, &identity)
                    .await? =>
                {
                    AwaitedState::AtHq
                }
                _ => AwaitedState::NotReceived {
                    site_id: waiting_site,
                },
            };
            waits.entry(parked_id).or_default().push(AwaitedRow {
                table,
                identity,
                state,
            });
        }
        tx.rollback().await?;
        Ok(waits)
    }
}

async fn at_hq(
    tx: &mut Transaction<'_>,
    schema: &SchemaMap,
    resolver: &mut Resolver,
    table: &str,
    identity: &str,
) -> mysql_async::Result<bool> {
    let target = RowRef::new(table, Identity::from_raw(identity));
    Ok(resolver.resolve(tx, schema, &target).await?.is_some())
}
