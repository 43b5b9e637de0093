//! Tributary's own tables at HQ: per-site progress, parked rows and what they wait for, parked
//! rows an operator dropped, row states and conflicts (invariant 5), and rejected batches. Progress and parking are written in the
//! same HQ transaction as the rows they describe (invariants 2 and 3), so HQ's data and HQ's
//! knowledge of it never disagree.

use crate::rejection::Rejection;
use mysql_async::Transaction;
use mysql_async::prelude::*;

/// Idempotent DDL run at applier start.
pub const CREATE_TABLES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS tributary_site_progress (
        site_id VARCHAR(64) NOT NULL PRIMARY KEY,
        epoch BIGINT UNSIGNED NOT NULL,
        last_sequence BIGINT UNSIGNED NOT NULL,
        rows_applied BIGINT UNSIGNED NOT NULL DEFAULT 0,
        rows_parked_total BIGINT UNSIGNED NOT NULL DEFAULT 0,
        last_committed_at BIGINT UNSIGNED NULL COMMENT 'source commit time of the last applied transaction, unix s',
        applied_at DATETIME(3) NULL,
        waiting_for_sequence BIGINT UNSIGNED NULL COMMENT 'set while a gap holds the site'
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS tributary_parked_row (
        parked_id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
        site_id VARCHAR(64) NOT NULL,
        epoch BIGINT UNSIGNED NOT NULL,
        sequence BIGINT UNSIGNED NOT NULL,
        table_name VARCHAR(64) NOT NULL,
        identity VARCHAR(512) NOT NULL,
        row_change LONGTEXT NOT NULL COMMENT 'the row change as it travelled (JSON)',
        reason VARCHAR(2048) NOT NULL,
        parked_at DATETIME(3) NOT NULL,
        KEY entity (table_name, identity(191)),
        KEY site (site_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS tributary_parked_wait (
        parked_id BIGINT UNSIGNED NOT NULL,
        table_name VARCHAR(64) NOT NULL,
        identity VARCHAR(512) NOT NULL,
        KEY awaited (table_name, identity(191)),
        KEY parked (parked_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    // Parked rows an operator dropped (`tributary parked drop`): kept with the row change, the
    // operator's reason and the time, so nothing leaves parking silently.
    "CREATE TABLE IF NOT EXISTS tributary_dropped_row (
        parked_id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
        site_id VARCHAR(64) NOT NULL,
        epoch BIGINT UNSIGNED NOT NULL,
        sequence BIGINT UNSIGNED NOT NULL,
        table_name VARCHAR(64) NOT NULL,
        identity VARCHAR(512) NOT NULL,
        row_change LONGTEXT NOT NULL COMMENT 'the row change as it travelled (JSON)',
        parked_reason VARCHAR(2048) NOT NULL,
        parked_at DATETIME(3) NOT NULL,
        drop_reason VARCHAR(2048) NOT NULL,
        dropped_at DATETIME(3) NOT NULL,
        KEY site (site_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS tributary_rejected_batch (
        rejected_id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
        site_id VARCHAR(64) NOT NULL,
        epoch BIGINT UNSIGNED NOT NULL,
        sequence BIGINT UNSIGNED NOT NULL,
        file_name VARCHAR(255) NOT NULL,
        reason_code VARCHAR(32) NOT NULL DEFAULT '',
        reason VARCHAR(2048) NOT NULL,
        rejected_at DATETIME(3) NOT NULL,
        KEY site (site_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    // Per synced row and site: a hash of the row as the applier last wrote it from that site
    // (invariant 5; see row_state.rs), for rows not kept by their HQ id
    // (tributary_row_state_by_id, created by row_state_upgrade.rs).
    "CREATE TABLE IF NOT EXISTS tributary_row_state (
        entity_key BINARY(20) NOT NULL COMMENT 'SHA1(table : identity)',
        site_id VARCHAR(64) NOT NULL,
        state_hash BINARY(20) NOT NULL,
        written_at DATETIME(3) NOT NULL,
        PRIMARY KEY (entity_key, site_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    // Conflicts: a site's change to a row that changed at HQ since that site last wrote it.
    // Open ones hold the change (and later changes to the row queue behind them) until an
    // operator resolves them; those a table's policy decided are recorded resolved.
    "CREATE TABLE IF NOT EXISTS tributary_conflict (
        conflict_id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
        site_id VARCHAR(64) NOT NULL,
        epoch BIGINT UNSIGNED NOT NULL,
        sequence BIGINT UNSIGNED NOT NULL,
        table_name VARCHAR(64) NOT NULL,
        identity VARCHAR(512) NOT NULL,
        op VARCHAR(8) NOT NULL,
        policy VARCHAR(32) NOT NULL,
        reason VARCHAR(2048) NOT NULL,
        differing_columns TEXT NOT NULL COMMENT 'comma-separated column names',
        hq_row LONGTEXT NULL COMMENT 'HQ row when detected, column -> text (JSON)',
        site_row LONGTEXT NULL COMMENT 'the site version as HQ would hold it (JSON); NULL for a delete',
        row_change LONGTEXT NOT NULL COMMENT 'the row change as it travelled (JSON)',
        detected_at DATETIME(3) NOT NULL,
        status VARCHAR(8) NOT NULL COMMENT 'open or resolved',
        resolution VARCHAR(16) NULL COMMENT 'keep-hq, take-site, merge, site-wins, hq-wins',
        merged_columns TEXT NULL COMMENT 'merge: the columns taken from the site',
        resolved_by VARCHAR(128) NULL,
        resolved_at DATETIME(3) NULL,
        note VARCHAR(2048) NULL,
        KEY entity (table_name, identity(191), status),
        KEY open_by_site (status, site_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    // Columns a site sends that HQ's table lacks, dropped by the schema map's rule.
    "CREATE TABLE IF NOT EXISTS tributary_dropped_column (
        site_id VARCHAR(64) NOT NULL,
        table_name VARCHAR(64) NOT NULL,
        column_name VARCHAR(64) NOT NULL,
        rows_written BIGINT UNSIGNED NOT NULL,
        first_seen DATETIME(3) NOT NULL,
        last_seen DATETIME(3) NOT NULL,
        PRIMARY KEY (site_id, table_name, column_name)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    // HQs created before rejection reasons had names.
    "ALTER TABLE tributary_rejected_batch
        ADD COLUMN IF NOT EXISTS reason_code VARCHAR(32) NOT NULL DEFAULT '' AFTER file_name",
    // HQs created before epochs were checked for a seed.
    "ALTER TABLE tributary_site_progress
        ADD COLUMN IF NOT EXISTS unseeded_after_epoch BIGINT UNSIGNED NULL
        COMMENT 'set while the current epoch began without a seed after this one was applied'",
    // A rejection is recorded once per batch and reason (record_rejected looks it up).
    "ALTER TABLE tributary_rejected_batch ADD INDEX IF NOT EXISTS batch (site_id, epoch, sequence)",
    // What HQ applied, waiting to be published on the integration topics.
    crate::integration::outbox::CREATE_OUTBOX,
    crate::integration::outbox::CREATE_SET_ASIDE,
    // Each site's latest health report (issue 9), as the site sent it.
    "CREATE TABLE IF NOT EXISTS tributary_site_health (
        site_id VARCHAR(64) NOT NULL PRIMARY KEY,
        received_at DATETIME(3) NOT NULL,
        report TEXT NOT NULL COMMENT 'the SiteHealth JSON the site sent: no row values'
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    // When a batch with rows (not a keepalive) of the site was last applied.
    "ALTER TABLE tributary_site_progress
        ADD COLUMN IF NOT EXISTS last_data_at DATETIME(3) NULL
        COMMENT 'when HQ last applied a batch of this site that carried rows'",
];

/// Connects to HQ for an operator command (UTC session), creates Tributary's tables if needed,
/// and reads HQ's schema.
pub async fn open_hq(
    hq: mysql_async::Opts,
    database: &str,
    policy: &tributary_schema::Policy,
) -> Result<(mysql_async::Conn, tributary_schema::SchemaMap), crate::error::ApplyError> {
    let opts = mysql_async::OptsBuilder::from_opts(hq).init(vec!["SET time_zone = '+00:00'"]);
    let mut conn = mysql_async::Conn::new(opts).await?;
    for ddl in CREATE_TABLES {
        conn.query_drop(*ddl).await?;
    }
    let catalog = tributary_schema::Catalog::introspect(&mut conn, database).await?;
    let schema = tributary_schema::SchemaMap::build(&catalog, policy)?;
    crate::row_state_upgrade::prepare(&mut conn, &schema).await?;
    Ok((conn, schema))
}

/// Where a site's stream stands at HQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub epoch: u64,
    pub last_sequence: u64,
}

impl Progress {
    /// Whether `(epoch, sequence)` is already applied.
    pub fn covers(&self, epoch: u64, sequence: u64) -> bool {
        epoch == self.epoch && sequence <= self.last_sequence
    }

    /// Whether `(epoch, sequence)` is the batch that must come next: the following sequence
    /// of this epoch, or the first of a later epoch.
    pub fn expects(&self, epoch: u64, sequence: u64) -> bool {
        (epoch == self.epoch && sequence == self.last_sequence + 1)
            || (epoch > self.epoch && sequence == 1)
    }
}

/// Reads and locks the site's progress row inside the batch's transaction.
pub async fn lock_progress(
    tx: &mut Transaction<'_>,
    site_id: &str,
) -> mysql_async::Result<Option<Progress>> {
    let row: Option<(u64, u64)> = tx
        .exec_first(
            "SELECT epoch, last_sequence FROM tributary_site_progress WHERE site_id = ? FOR UPDATE",
            (site_id,),
        )
        .await?;
    Ok(row.map(|(epoch, last_sequence)| Progress {
        epoch,
        last_sequence,
    }))
}

pub async fn read_progress(
    conn: &mut mysql_async::Conn,
    site_id: &str,
) -> mysql_async::Result<Option<Progress>> {
    let row: Option<(u64, u64)> = conn
        .exec_first(
            "SELECT epoch, last_sequence FROM tributary_site_progress WHERE site_id = ?",
            (site_id,),
        )
        .await?;
    Ok(row.map(|(epoch, last_sequence)| Progress {
        epoch,
        last_sequence,
    }))
}

/// Records a batch as applied, in the batch's transaction.
pub async fn record_applied(
    tx: &mut Transaction<'_>,
    site_id: &str,
    epoch: u64,
    sequence: u64,
    rows_applied: u64,
    rows_parked: u64,
    last_committed_at: Option<u64>,
) -> mysql_async::Result<()> {
    tx.exec_drop(
        "INSERT INTO tributary_site_progress
            (site_id, epoch, last_sequence, rows_applied, rows_parked_total, last_committed_at, applied_at, waiting_for_sequence)
         VALUES (?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(3), NULL)
         ON DUPLICATE KEY UPDATE epoch = VALUES(epoch), last_sequence = VALUES(last_sequence),
            rows_applied = rows_applied + VALUES(rows_applied),
            rows_parked_total = rows_parked_total + VALUES(rows_parked_total),
            last_committed_at = COALESCE(VALUES(last_committed_at), last_committed_at),
            applied_at = VALUES(applied_at), waiting_for_sequence = NULL",
        (site_id, epoch, sequence, rows_applied, rows_parked, last_committed_at),
    )
    .await
}

/// Notes that the site's batch carried rows (not only a keepalive).
pub async fn record_data(tx: &mut Transaction<'_>, site_id: &str) -> mysql_async::Result<()> {
    tx.exec_drop(
        "UPDATE tributary_site_progress SET last_data_at = UTC_TIMESTAMP(3) WHERE site_id = ?",
        (site_id,),
    )
    .await
}

/// Keeps the site's latest health report.
pub async fn record_health(
    tx: &mut Transaction<'_>,
    site_id: &str,
    health: &tributary_model::SiteHealth,
) -> mysql_async::Result<()> {
    let report = serde_json::to_string(health).map_err(|e| {
        mysql_async::Error::Other(format!("cannot serialise a health report: {e}").into())
    })?;
    tx.exec_drop(
        "INSERT INTO tributary_site_health (site_id, received_at, report)
         VALUES (?, UTC_TIMESTAMP(3), ?)
         ON DUPLICATE KEY UPDATE received_at = VALUES(received_at), report = VALUES(report)",
        (site_id, report),
    )
    .await
}

/// How a batch that starts a later epoch began, recorded in its transaction: after a seed (the
/// whole site sent again), or without one (a capture state reset or lost: what changed at the
/// site between the two epochs may be missing at HQ until the site is seeded again).
pub async fn record_epoch_start(
    tx: &mut Transaction<'_>,
    site_id: &str,
    unseeded_after_epoch: Option<u64>,
) -> mysql_async::Result<()> {
    tx.exec_drop(
        "UPDATE tributary_site_progress SET unseeded_after_epoch = ? WHERE site_id = ?",
        (unseeded_after_epoch, site_id),
    )
    .await
}

/// Counts parked rows of `site_id` released into HQ, in the releasing transaction.
pub async fn record_released(
    tx: &mut Transaction<'_>,
    site_id: &str,
    rows: u64,
) -> mysql_async::Result<()> {
    tx.exec_drop(
        "UPDATE tributary_site_progress SET rows_applied = rows_applied + ? WHERE site_id = ?",
        (rows, site_id),
    )
    .await
}

/// Records that a gap holds the site (visible in status until the batch arrives).
pub async fn record_gap(
    conn: &mut mysql_async::Conn,
    site_id: &str,
    progress: Option<Progress>,
    waiting_for: u64,
) -> mysql_async::Result<()> {
    let (epoch, last) = progress.map_or((0, 0), |p| (p.epoch, p.last_sequence));
    conn.exec_drop(
        "INSERT INTO tributary_site_progress (site_id, epoch, last_sequence, waiting_for_sequence)
         VALUES (?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE waiting_for_sequence = VALUES(waiting_for_sequence)",
        (site_id, epoch, last, waiting_for),
    )
    .await
}

/// Records a rejection once: the same batch (site, epoch, sequence) refused for the same reason
/// again (a stream read again after a restart) adds nothing. Records that are not batches
/// (no site) are told apart by where they came from (`file_name`). Returns whether it was new.
pub async fn record_rejected(
    conn: &mut mysql_async::Conn,
    site_id: &str,
    epoch: u64,
    sequence: u64,
    file_name: &str,
    rejection: &Rejection,
) -> mysql_async::Result<bool> {
    let reason_code = rejection.reason.as_str();
    conn.exec_drop(
        "INSERT INTO tributary_rejected_batch (site_id, epoch, sequence, file_name, reason_code, reason, rejected_at)
         SELECT ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(3) FROM DUAL
         WHERE NOT EXISTS (
             SELECT 1 FROM tributary_rejected_batch
             WHERE site_id = ? AND epoch = ? AND sequence = ? AND reason_code = ?
               AND (site_id <> '' OR file_name = ?))",
        (
            site_id,
            epoch,
            sequence,
            file_name,
            reason_code,
            &rejection.detail,
            site_id,
            epoch,
            sequence,
            reason_code,
            file_name,
        ),
    )
    .await?;
    Ok(conn.affected_rows() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_expects_the_next_sequence_or_a_new_epoch() {
        let p = Progress {
            epoch: 1,
            last_sequence: 4,
        };
        assert!(p.covers(1, 4) && p.covers(1, 1) && !p.covers(1, 5));
        assert!(
            !p.covers(0, 1),
            "an older lineage is not a duplicate of this one"
        );
        assert!(p.expects(1, 5));
        assert!(!p.expects(1, 6), "a gap is not the next batch");
        assert!(p.expects(2, 1));
        assert!(!p.expects(2, 2));
    }
}
