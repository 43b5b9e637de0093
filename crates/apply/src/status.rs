//! Per-site status at HQ, read from the bookkeeping tables: how far each site's stream is
//! applied, what is parked and why, which conflicts wait for a person, what was rejected.

use mysql_async::Conn;
use mysql_async::prelude::*;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteStatus {
    pub site_id: String,
    pub epoch: u64,
    pub last_sequence: u64,
    pub rows_applied: u64,
    pub rows_parked_now: u64,
    /// Changes of this site set aside for good, kept in `tributary_dropped_row` with the
    /// reason: dropped by an operator, superseded by the site's delete of the row, or deletes
    /// the site could no longer identify (done by the delete of the row they extend).
    pub rows_dropped: u64,
    /// Conflicts of this site waiting for a person.
    pub conflicts_open: u64,
    pub rejected_batches: u64,
    /// Source commit time of the newest applied transaction (unix s).
    pub last_committed_at: Option<u64>,
    /// Seconds between that source commit and the moment HQ committed it.
    pub lag_seconds: Option<i64>,
    /// Set while a gap holds the site.
    pub waiting_for_sequence: Option<u64>,
    /// Seconds since HQ last applied a batch of this site (an idle capture still sends one
    /// every keepalive interval, so a large value means the site or its link is down).
    pub silent_seconds: Option<i64>,
    /// Set while the current epoch began without a seed after this earlier epoch: changes
    /// made at the site between the two may be missing at HQ.
    pub unseeded_after_epoch: Option<u64>,
    /// Seconds since HQ last applied a batch of this site that carried rows.
    pub data_silent_seconds: Option<i64>,
    /// The site's latest health report (versions, source lag, outbox, last error).
    pub health: Option<tributary_model::SiteHealth>,
    /// Seconds since HQ received it.
    pub health_age_seconds: Option<i64>,
    /// When HQ last applied a batch of this site, `YYYY-MM-DD HH:MM` UTC.
    pub last_heard_at: Option<String>,
}

pub async fn site_statuses(conn: &mut Conn) -> mysql_async::Result<Vec<SiteStatus>> {
    let rows: Vec<mysql_async::Row> = conn
        .query(
            "SELECT p.site_id, p.epoch, p.last_sequence, p.rows_applied, p.last_committed_at,
                    CAST(UNIX_TIMESTAMP(p.applied_at) AS SIGNED) - CAST(p.last_committed_at AS SIGNED),
                    p.waiting_for_sequence,
                    (SELECT COUNT(*) FROM tributary_parked_row r WHERE r.site_id = p.site_id),
                    (SELECT COUNT(*) FROM tributary_rejected_batch b WHERE b.site_id = p.site_id),
                    CAST(TIMESTAMPDIFF(SECOND, p.applied_at, UTC_TIMESTAMP(3)) AS SIGNED),
                    (SELECT COUNT(*) FROM tributary_conflict c
                      WHERE c.status = 'open' AND c.site_id = p.site_id),
                    p.unseeded_after_epoch,
                    CAST(TIMESTAMPDIFF(SECOND, p.last_data_at, UTC_TIMESTAMP(3)) AS SIGNED),
                    h.report,
                    CAST(TIMESTAMPDIFF(SECOND, h.received_at, UTC_TIMESTAMP(3)) AS SIGNED),
                    DATE_FORMAT(p.applied_at, '%Y-%m-%d %H:%i'),
                    (SELECT COUNT(*) FROM tributary_dropped_row d WHERE d.site_id = p.site_id)
             FROM tributary_site_progress p
             LEFT JOIN tributary_site_health h ON h.site_id = p.site_id
             ORDER BY p.site_id",
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| SiteStatus {
            site_id: row.get(0).unwrap_or_default(),
            epoch: row.get(1).unwrap_or_default(),
            last_sequence: row.get(2).unwrap_or_default(),
            rows_applied: row.get(3).unwrap_or_default(),
            last_committed_at: row.get(4).flatten(),
            lag_seconds: row.get::<Option<i64>, _>(5).flatten().map(|l| l.max(0)),
            waiting_for_sequence: row.get(6).flatten(),
            rows_parked_now: row.get(7).unwrap_or_default(),
            rejected_batches: row.get(8).unwrap_or_default(),
            silent_seconds: row.get::<Option<i64>, _>(9).flatten(),
            conflicts_open: row.get(10).unwrap_or_default(),
            unseeded_after_epoch: row.get(11).flatten(),
            data_silent_seconds: row.get::<Option<i64>, _>(12).flatten(),
            // A report this version cannot read is shown as none rather than failing status.
            health: row
                .get::<Option<String>, _>(13)
                .flatten()
                .and_then(|report| serde_json::from_str(&report).ok()),
            health_age_seconds: row.get::<Option<i64>, _>(14).flatten(),
            last_heard_at: row.get::<Option<String>, _>(15).flatten(),
            rows_dropped: row.get(16).unwrap_or_default(),
        })
        .collect())
}

/// One parked row as operators see it: where it is and why, never its values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParkedSummary {
    pub site_id: String,
    pub table: String,
    pub identity: String,
    pub reason: String,
    pub sequence: u64,
}

pub async fn parked_rows(conn: &mut Conn, limit: u32) -> mysql_async::Result<Vec<ParkedSummary>> {
    let rows: Vec<(String, String, String, String, u64)> = conn
        .exec(
            "SELECT site_id, table_name, identity, reason, sequence FROM tributary_parked_row
             ORDER BY parked_id LIMIT ?",
            (limit,),
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(site_id, table, identity, reason, sequence)| ParkedSummary {
                site_id,
                table,
                identity,
                reason,
                sequence,
            },
        )
        .collect())
}

/// A site's parked rows by age.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParkedAge {
    pub site_id: String,
    pub rows: u64,
    /// Rows parked at least the report age ago (`[hq] parked_report_age_s`).
    pub older: u64,
    /// Seconds the oldest of them has waited.
    pub oldest_age_seconds: u64,
}

/// Parked rows per site that has any, with how many are at least `report_age_s` old.
pub async fn parked_ages(
    conn: &mut Conn,
    report_age_s: u64,
) -> mysql_async::Result<Vec<ParkedAge>> {
    let rows: Vec<(String, u64, u64, u64)> = conn
        .exec(
            "SELECT site_id, COUNT(*),
                    CAST(SUM(parked_at <= UTC_TIMESTAMP(3) - INTERVAL ? SECOND) AS UNSIGNED),
                    CAST(GREATEST(TIMESTAMPDIFF(SECOND, MIN(parked_at), UTC_TIMESTAMP(3)), 0) AS UNSIGNED)
             FROM tributary_parked_row GROUP BY site_id ORDER BY site_id",
            (report_age_s,),
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(site_id, rows, older, oldest_age_seconds)| ParkedAge {
            site_id,
            rows,
            older,
            oldest_age_seconds,
        })
        .collect())
}

/// One rejected batch: where it came from, the reason's stable name and the detail.
#[derive(Debug, Clone, Serialize)]
pub struct RejectedBatch {
    pub site_id: String,
    pub epoch: u64,
    pub sequence: u64,
    pub reason_code: String,
    pub detail: String,
}

/// Rejected batches, newest first.
pub async fn rejected_batches(
    conn: &mut Conn,
    limit: u32,
) -> mysql_async::Result<Vec<RejectedBatch>> {
    let rows: Vec<(String, u64, u64, String, String)> = conn
        .exec(
            "SELECT site_id, epoch, sequence, reason_code, reason FROM tributary_rejected_batch
             ORDER BY rejected_id DESC LIMIT ?",
            (limit,),
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(site_id, epoch, sequence, reason_code, detail)| RejectedBatch {
                site_id,
                epoch,
                sequence,
                reason_code,
                detail,
            },
        )
        .collect())
}

/// How many batches were rejected, per site and reason (reason names as in
/// `tributary_batch::RejectReason`; an empty name for rejections recorded before names).
/// How many batches of a site were rejected for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectionCount {
    pub site_id: String,
    pub reason_code: String,
    pub batches: u64,
}

pub async fn rejection_counts(conn: &mut Conn) -> mysql_async::Result<Vec<RejectionCount>> {
    let rows: Vec<(String, String, u64)> = conn
        .query(
            "SELECT site_id, reason_code, COUNT(*) FROM tributary_rejected_batch
             GROUP BY site_id, reason_code ORDER BY site_id, reason_code",
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(site_id, reason_code, batches)| RejectionCount {
            site_id,
            reason_code,
            batches,
        })
        .collect())
}

/// Open conflicts per site.
pub async fn open_conflicts(conn: &mut Conn) -> mysql_async::Result<Vec<(String, u64)>> {
    conn.query(
        "SELECT site_id, COUNT(*) FROM tributary_conflict WHERE status = 'open' GROUP BY site_id",
    )
    .await
}

/// Columns rows were written without (a site on a newer OpenMRS than HQ): site, table, column,
/// rows. Empty when the table does not exist yet.
pub async fn dropped_columns(conn: &mut Conn) -> mysql_async::Result<Vec<DroppedColumn>> {
    let rows: Vec<(String, String, String, u64)> = conn
        .query(
            "SELECT site_id, table_name, column_name, rows_written FROM tributary_dropped_column
             ORDER BY site_id, table_name, column_name",
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(site_id, table, column, rows_written)| DroppedColumn {
            site_id,
            table,
            column,
            rows_written,
        })
        .collect())
}

/// A column a site sends that HQ's table lacks, and how many rows were written without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DroppedColumn {
    pub site_id: String,
    pub table: String,
    pub column: String,
    pub rows_written: u64,
}
