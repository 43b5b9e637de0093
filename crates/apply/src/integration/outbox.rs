//! HQ's integration outbox: one entry per HQ transaction that wrote site rows, written in that
//! transaction, read and removed by the publisher once the broker has its events.
//!
//! An entry's changes are a zstd-compressed JSON array of [`AppliedChange`]s. Entries are read
//! in id order and removed by id, never by a high-water mark: an entry whose transaction
//! commits after a later id was published is still found on the next read.

use super::applied::AppliedChange;
use crate::error::ApplyError;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts, OptsBuilder, Transaction};

/// The table, created with Tributary's other tables at HQ (empty while the integration
/// topics are off).
pub(crate) const CREATE_OUTBOX: &str = "CREATE TABLE IF NOT EXISTS tributary_integration_outbox (
        id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
        label VARCHAR(200) NOT NULL,
        applied_at_ms BIGINT UNSIGNED NOT NULL,
        change_count INT UNSIGNED NOT NULL,
        changes LONGBLOB NOT NULL
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

/// Entries the publisher could not read, set aside with the reason (a person looks at them;
/// the entries behind them are published meanwhile).
pub(crate) const CREATE_SET_ASIDE: &str =
    "CREATE TABLE IF NOT EXISTS tributary_integration_outbox_failed (
        id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
        label VARCHAR(200) NOT NULL,
        applied_at_ms BIGINT UNSIGNED NOT NULL,
        change_count INT UNSIGNED NOT NULL,
        changes LONGBLOB NOT NULL,
        reason VARCHAR(1024) NOT NULL,
        failed_at DATETIME(3) NOT NULL
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

/// The named lock the publishing applier holds: one publisher per HQ, whatever the number
/// of appliers, so a row's events keep HQ's order.
const PUBLISHER_LOCK: &str = "tributary_integration_publisher";

/// zstd level of an entry: fast, and JSON compresses well at it.
const COMPRESSION_LEVEL: i32 = 3;

pub(super) async fn insert(
    tx: &mut Transaction<'_>,
    label: &str,
    changes: &[AppliedChange],
) -> mysql_async::Result<()> {
    let json = serde_json::to_vec(changes).map_err(|e| {
        mysql_async::Error::Other(format!("cannot serialise applied changes: {e}").into())
    })?;
    let compressed = zstd::bulk::compress(&json, COMPRESSION_LEVEL).map_err(|e| {
        mysql_async::Error::Other(format!("cannot compress applied changes: {e}").into())
    })?;
    let label: String = label.chars().take(200).collect();
    tx.exec_drop(
        "INSERT INTO tributary_integration_outbox (label, applied_at_ms, change_count, changes)
         VALUES (?, CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS UNSIGNED), ?, ?)",
        (label, changes.len() as u64, compressed),
    )
    .await
}

/// One outbox entry: the changes one HQ transaction wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub id: u64,
    /// `site:epoch:sequence` for a batch; empty for a release or a resolved conflict.
    pub label: String,
    /// When HQ committed it, Unix milliseconds.
    pub applied_at_ms: u64,
    pub changes: Vec<AppliedChange>,
}

impl OutboxEntry {
    /// The transaction id consumers see: the batch's `site:epoch:sequence`, or `hq:<id>`.
    pub fn transaction_id(&self) -> String {
        if self.label.is_empty() {
            format!("hq:{}", self.id)
        } else {
            self.label.clone()
        }
    }
}

/// The publisher's side of the outbox: its own HQ connection.
pub struct OutboxReader {
    conn: Conn,
    /// Whether this connection holds the publisher lock.
    publishing: bool,
}

impl OutboxReader {
    /// Connects to HQ and creates the outbox when it is missing.
    pub async fn connect(hq: Opts) -> Result<OutboxReader, ApplyError> {
        let opts = OptsBuilder::from_opts(hq).init(vec!["SET time_zone = '+00:00'"]);
        let mut conn = Conn::new(opts).await?;
        conn.query_drop(CREATE_OUTBOX).await?;
        conn.query_drop(CREATE_SET_ASIDE).await?;
        Ok(OutboxReader {
            conn,
            publishing: false,
        })
    }

    /// Whether this reader may publish: it holds HQ's publisher lock (taken without waiting;
    /// another applier holding it publishes instead, and this one tries again later). The lock
    /// lives as long as this connection.
    pub async fn may_publish(&mut self) -> Result<bool, ApplyError> {
        if !self.publishing {
            let taken: Option<Option<i64>> = self
                .conn
                .exec_first("SELECT GET_LOCK(?, 0)", (PUBLISHER_LOCK,))
                .await?;
            self.publishing = taken.flatten() == Some(1);
        }
        Ok(self.publishing)
    }

    /// The oldest entries, at most `limit` of them and about `max_changes` changes (at least
    /// one entry, however large).
    pub async fn oldest(
        &mut self,
        limit: u32,
        max_changes: u64,
    ) -> Result<Vec<OutboxEntry>, ApplyError> {
        let heads: Vec<(u64, u64)> = self
            .conn
            .exec(
                "SELECT id, change_count FROM tributary_integration_outbox ORDER BY id LIMIT ?",
                (limit,),
            )
            .await?;
        let mut ids = Vec::new();
        let mut changes = 0;
        for (id, count) in heads {
            if !ids.is_empty() && changes + count > max_changes {
                break;
            }
            changes += count;
            ids.push(id);
        }
        let mut entries = Vec::with_capacity(ids.len());
        for id in ids {
            let row: Option<(String, u64, Vec<u8>)> = self
                .conn
                .exec_first(
                    "SELECT label, applied_at_ms, changes FROM tributary_integration_outbox \
                     WHERE id = ?",
                    (id,),
                )
                .await?;
            let Some((label, applied_at_ms, compressed)) = row else {
                continue;
            };
            match decode(id, &compressed) {
                Ok(changes) => entries.push(OutboxEntry {
                    id,
                    label,
                    applied_at_ms,
                    changes,
                }),
                Err(reason) => self.set_aside(id, &reason.to_string()).await?,
            }
        }
        Ok(entries)
    }

    /// Moves an entry that cannot be published to `tributary_integration_outbox_failed`.
    async fn set_aside(&mut self, id: u64, reason: &str) -> Result<(), ApplyError> {
        tracing::error!(
            entry = id,
            reason,
            "an integration outbox entry cannot be read; it is set aside in \
             tributary_integration_outbox_failed and the entries after it are published"
        );
        let mut tx = self.conn.start_transaction(Default::default()).await?;
        tx.exec_drop(
            "INSERT IGNORE INTO tributary_integration_outbox_failed
                 (id, label, applied_at_ms, change_count, changes, reason, failed_at)
             SELECT id, label, applied_at_ms, change_count, changes, ?, UTC_TIMESTAMP(3)
             FROM tributary_integration_outbox WHERE id = ?",
            (reason.chars().take(1024).collect::<String>(), id),
        )
        .await?;
        tx.exec_drop(
            "DELETE FROM tributary_integration_outbox WHERE id = ?",
            (id,),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes published entries.
    pub async fn remove(&mut self, ids: &[u64]) -> Result<(), ApplyError> {
        if ids.is_empty() {
            return Ok(());
        }
        let marks = vec!["?"; ids.len()].join(",");
        self.conn
            .exec_drop(
                format!("DELETE FROM tributary_integration_outbox WHERE id IN ({marks})"),
                ids.to_vec(),
            )
            .await?;
        Ok(())
    }

    /// Entries waiting, and the oldest one's HQ commit time (Unix milliseconds).
    pub async fn backlog(&mut self) -> Result<(u64, Option<u64>), ApplyError> {
        let row: Option<(u64, Option<u64>)> = self
            .conn
            .query_first("SELECT COUNT(*), MIN(applied_at_ms) FROM tributary_integration_outbox")
            .await?;
        Ok(row.unwrap_or((0, None)))
    }
}

fn decode(id: u64, compressed: &[u8]) -> Result<Vec<AppliedChange>, ApplyError> {
    let bad = |what: String| {
        ApplyError::Outbox(format!(
            "integration outbox entry {id} cannot be read ({what}); it was not written by this \
             version of Tributary"
        ))
    };
    let json = zstd::stream::decode_all(compressed).map_err(|e| bad(e.to_string()))?;
    serde_json::from_slice(&json).map_err(|e| bad(e.to_string()))
}
