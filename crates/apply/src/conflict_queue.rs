//! Conflicts as operators see and settle them (`tributary conflicts list|show|resolve`):
//! both versions of the row, the columns that differ, and the choice a person makes: keep
//! HQ's row, take the site's, or take chosen columns from the site (a merge).
//!
//! A resolution runs in one HQ transaction: the row is written as chosen, the conflict is
//! marked resolved with who, when and how, and the changes that queued behind it are released
//! (each checked again: a later change from a site whose version was not taken is a conflict
//! of its own, since it still carries what HQ declined). Row values are returned only to a
//! caller that asks (`show --values`); nothing here logs them.

use crate::batch_apply::{self, Released};
use crate::bookkeeping;
use crate::conflict_policy::ConflictPolicies;
use crate::conflicts::{OPEN, Origin};
use crate::error::ApplyError;
use crate::locator::locate;
use crate::resolver::Resolver;
use crate::row_state::RowSnapshot;
use crate::writer::{self, Check, Resolution, Scope, Written, resolve_row, write_row};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, Row, Transaction, TxOpts};
use serde::Serialize;
use tributary_model::{Op, RowChange};
use tributary_schema::{Policy, SchemaMap};

/// Cache entries of the HQ id resolver for one command.
const RESOLVER_ENTRIES: usize = 10_000;

/// Which conflicts to list.
#[derive(Debug, Clone, Default)]
pub struct ConflictFilter {
    pub site: Option<String>,
    pub table: Option<String>,
    /// Resolved ones too (open ones only otherwise).
    pub include_resolved: bool,
    pub limit: u32,
}

/// One conflict as an operator sees it (no values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConflictEntry {
    pub conflict_id: u64,
    pub site_id: String,
    pub epoch: u64,
    pub sequence: u64,
    pub table: String,
    pub identity: String,
    pub op: String,
    pub policy: String,
    pub reason: String,
    pub differing_columns: Vec<String>,
    /// UTC, `YYYY-MM-DD HH:MM:SS`.
    pub detected_at: String,
    pub age_seconds: u64,
    /// `open` or `resolved`.
    pub status: String,
    pub resolution: Option<String>,
    pub merged_columns: Vec<String>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<String>,
    pub note: Option<String>,
}

/// A conflict with both versions of its row (values: only `show --values` prints them).
pub struct ConflictDetail {
    pub entry: ConflictEntry,
    /// HQ's row when the conflict was met.
    pub hq_row: Option<RowSnapshot>,
    /// The site's version as HQ would hold it; `None` for a delete.
    pub site_row: Option<RowSnapshot>,
}

/// What a person chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    KeepHq,
    TakeSite,
    /// Take these columns from the site, keep the rest as HQ has them.
    Merge(Vec<String>),
}

impl Choice {
    fn resolution(&self) -> &'static str {
        match self {
            Choice::KeepHq => "keep-hq",
            Choice::TakeSite => "take-site",
            Choice::Merge(_) => "merge",
        }
    }
}

/// What `resolve` did.
#[derive(Debug, PartialEq, Eq)]
pub enum ResolveOutcome {
    /// Resolved; `released` changes that queued behind it were written.
    Resolved { released: u64 },
    /// No such conflict.
    Unknown,
    /// Resolved before, by `by`.
    AlreadyResolved { by: String },
    /// The choice cannot be carried out as it stands (nothing changed): why, and what to do.
    Refused(String),
}

/// HQ's conflicts, for one operator command.
pub struct ConflictQueue {
    conn: Conn,
    schema: SchemaMap,
    policies: ConflictPolicies,
    resolver: Resolver,
    /// Record what resolving writes for the integration topics (`[hq.integration]` on).
    record_applied: bool,
}

const ENTRY_COLUMNS: &str = "conflict_id, site_id, epoch, sequence, table_name, identity, op,
    policy, reason, differing_columns, DATE_FORMAT(detected_at, '%Y-%m-%d %H:%i:%s'),
    CAST(GREATEST(TIMESTAMPDIFF(SECOND, detected_at, UTC_TIMESTAMP(3)), 0) AS UNSIGNED),
    status, resolution, merged_columns, resolved_by,
    DATE_FORMAT(resolved_at, '%Y-%m-%d %H:%i:%s'), note";

fn entry(row: Row) -> ConflictEntry {
    let names = |text: Option<String>| -> Vec<String> {
        text.unwrap_or_default()
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let text = |i: usize| -> String {
        row.get::<Option<String>, _>(i)
            .flatten()
            .unwrap_or_default()
    };
    let optional = |i: usize| -> Option<String> { row.get::<Option<String>, _>(i).flatten() };
    let number = |i: usize| -> u64 { row.get::<Option<u64>, _>(i).flatten().unwrap_or_default() };
    ConflictEntry {
        conflict_id: number(0),
        site_id: text(1),
        epoch: number(2),
        sequence: number(3),
        table: text(4),
        identity: text(5),
        op: text(6),
        policy: text(7),
        reason: text(8),
        differing_columns: names(optional(9)),
        detected_at: text(10),
        age_seconds: number(11),
        status: text(12),
        resolution: optional(13),
        merged_columns: names(optional(14)),
        resolved_by: optional(15),
        resolved_at: optional(16),
        note: optional(17),
    }
}

impl ConflictQueue {
    /// Connects to HQ, creates Tributary's tables if needed, and reads HQ's schema.
    pub async fn connect(
        hq: Opts,
        database: &str,
        policy: &Policy,
        policies: ConflictPolicies,
    ) -> Result<ConflictQueue, ApplyError> {
        let (conn, schema) = bookkeeping::open_hq(hq, database, policy).await?;
        Ok(ConflictQueue {
            conn,
            schema,
            policies,
            resolver: Resolver::new(RESOLVER_ENTRIES),
            record_applied: false,
        })
    }

    /// Records what resolving writes for the integration topics (`[hq.integration]` on).
    pub fn recording_applied_changes(mut self, on: bool) -> ConflictQueue {
        self.record_applied = on;
        self
    }

    /// Conflicts matching `filter`, oldest first.
    pub async fn list(
        &mut self,
        filter: &ConflictFilter,
    ) -> Result<Vec<ConflictEntry>, ApplyError> {
        let rows: Vec<Row> = self
            .conn
            .exec(
                format!(
                    "SELECT {ENTRY_COLUMNS} FROM tributary_conflict
                     WHERE (? OR status = 'open') AND (? IS NULL OR site_id = ?)
                       AND (? IS NULL OR table_name = ?)
                     ORDER BY conflict_id LIMIT ?"
                ),
                (
                    filter.include_resolved,
                    &filter.site,
                    &filter.site,
                    &filter.table,
                    &filter.table,
                    filter.limit,
                ),
            )
            .await?;
        Ok(rows.into_iter().map(entry).collect())
    }

    /// One conflict with both versions of its row.
    pub async fn show(&mut self, conflict_id: u64) -> Result<Option<ConflictDetail>, ApplyError> {
        let row: Option<Row> = self
            .conn
            .exec_first(
                format!("SELECT {ENTRY_COLUMNS} FROM tributary_conflict WHERE conflict_id = ?"),
                (conflict_id,),
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let versions: Option<(Option<String>, Option<String>)> = self
            .conn
            .exec_first(
                "SELECT hq_row, site_row FROM tributary_conflict WHERE conflict_id = ?",
                (conflict_id,),
            )
            .await?;
        let (hq_row, site_row) = versions.unwrap_or_default();
        let read = |json: Option<String>| json.and_then(|j| serde_json::from_str(&j).ok());
        Ok(Some(ConflictDetail {
            entry: entry(row),
            hq_row: read(hq_row),
            site_row: read(site_row),
        }))
    }

    /// Settles a conflict as a person chose, recorded with `by`, the time and `note`.
    pub async fn resolve(
        &mut self,
        conflict_id: u64,
        choice: &Choice,
        by: &str,
        note: Option<&str>,
    ) -> Result<ResolveOutcome, ApplyError> {
        let mut tx = self.conn.start_transaction(TxOpts::default()).await?;
        let mut scope = Scope::new(
            &self.schema,
            &mut self.resolver,
            &self.policies,
            self.record_applied,
        );
        let result = resolve_in(&mut tx, &mut scope, conflict_id, choice, by, note).await;
        match result {
            Ok(outcome @ ResolveOutcome::Resolved { .. }) => {
                tx.commit().await?;
                Ok(outcome)
            }
            Ok(other) => {
                tx.rollback().await?;
                Ok(other)
            }
            Err(e) => {
                scope.resolver.clear();
                Err(e)
            }
        }
    }
}

async fn resolve_in(
    tx: &mut Transaction<'_>,
    scope: &mut Scope<'_>,
    conflict_id: u64,
    choice: &Choice,
    by: &str,
    note: Option<&str>,
) -> Result<ResolveOutcome, ApplyError> {
    let found: Option<(String, u64, u64, String, String, Option<String>)> = tx
        .exec_first(
            "SELECT site_id, epoch, sequence, row_change, status, resolved_by
             FROM tributary_conflict WHERE conflict_id = ? FOR UPDATE",
            (conflict_id,),
        )
        .await?;
    let Some((site_id, epoch, sequence, json, status, resolved_by)) = found else {
        return Ok(ResolveOutcome::Unknown);
    };
    if status != OPEN {
        return Ok(ResolveOutcome::AlreadyResolved {
            by: resolved_by.unwrap_or_default(),
        });
    }
    let Ok(change) = serde_json::from_str::<RowChange>(&json) else {
        return Ok(ResolveOutcome::Refused(
            "the stored site change cannot be read back; resolve with --keep-hq".to_owned(),
        ));
    };
    let origin = Origin {
        site_id: &site_id,
        epoch,
        sequence,
    };
    if let Some(refusal) = carry_out(tx, scope, origin, &change, choice).await? {
        return Ok(ResolveOutcome::Refused(refusal));
    }
    let merged = match choice {
        Choice::Merge(columns) => Some(columns.join(",")),
        _ => None,
    };
    tx.exec_drop(
        "UPDATE tributary_conflict SET status = 'resolved', resolution = ?, merged_columns = ?,
            resolved_by = ?, resolved_at = UTC_TIMESTAMP(3), note = ?
         WHERE conflict_id = ?",
        (choice.resolution(), merged, by, note, conflict_id),
    )
    .await?;
    tracing::info!(
        conflict = conflict_id,
        site = %site_id,
        table = %change.table,
        resolution = choice.resolution(),
        "conflict resolved"
    );
    // What queued behind the conflict moves now (in order, each checked again).
    let released: Released = batch_apply::release(tx, scope, vec![change.row_ref()]).await?;
    batch_apply::record_releases(tx, scope, &released).await?;
    Ok(ResolveOutcome::Resolved {
        released: released.values().sum(),
    })
}

/// Writes the chosen version; `Some(reason)` when it cannot be written as it stands.
async fn carry_out(
    tx: &mut Transaction<'_>,
    scope: &mut Scope<'_>,
    origin: Origin<'_>,
    change: &RowChange,
    choice: &Choice,
) -> Result<Option<String>, ApplyError> {
    if *choice == Choice::KeepHq {
        return Ok(None);
    }
    if let Choice::Merge(columns) = choice {
        if change.op == Op::Delete {
            return Ok(Some(
                "the site deleted the row: there are no columns to merge; choose --keep-hq or \
                 --take-site"
                    .to_owned(),
            ));
        }
        if let Some(unknown) = columns
            .iter()
            .find(|c| !change.columns.keys().any(|k| **k == **c))
        {
            let known: Vec<&str> = change.columns.keys().map(|k| &**k).collect();
            return Ok(Some(format!(
                "`{unknown}` is not a column of the site's version; its columns are {}",
                known.join(", ")
            )));
        }
    }
    let row = match resolve_row(tx, scope.schema, scope.resolver, change).await? {
        Resolution::Ready(row) => row,
        Resolution::Waiting(waits) => {
            return Ok(Some(format!(
                "the site's version refers to rows HQ does not have yet ({}); keep HQ's row, \
                 or resolve again when they arrive",
                crate::parking::waiting_reason(&waits)
            )));
        }
        Resolution::Blocked(reason) | Resolution::Unidentifiable(reason) => {
            return Ok(Some(reason));
        }
    };
    match choice {
        Choice::Merge(columns) => {
            let Some(map) = scope.schema.table(&change.table) else {
                return Ok(Some(format!(
                    "table `{}` is not synced at HQ",
                    change.table
                )));
            };
            let Some(locator) = locate(tx, map, change, &row.values).await? else {
                return Ok(Some(
                    "HQ no longer has the row; choose --take-site to write the site's version"
                        .to_owned(),
                ));
            };
            let chosen = row
                .values
                .into_iter()
                .filter(|(c, _)| columns.iter().any(|chosen| **chosen == **c))
                .collect();
            writer::update(tx, map, &locator, chosen).await?;
        }
        _ => {
            if let Written::Refused(reason) =
                write_row(tx, scope, origin, change, row, Check::Override).await?
            {
                return Ok(Some(reason));
            }
            scope.applied.note(origin, change);
        }
    }
    Ok(None)
}
