//! Columns HQ wrote rows without: a site on a newer OpenMRS sends columns HQ's tables lack, and
//! the schema map's `dropped_at_hq` says HQ may drop them. Nothing is dropped silently: each
//! (site, table, column) is counted in `tributary_dropped_column` in the transaction that wrote
//! the rows, logged once when first seen, counted on `/metrics` and listed by `status`.

use mysql_async::Transaction;
use mysql_async::prelude::*;
use std::collections::BTreeMap;

/// Rows written without a column, per (site, table, column), in one HQ transaction.
#[derive(Debug, Default)]
pub struct DroppedColumns {
    rows: BTreeMap<(String, String, String), u64>,
}

impl DroppedColumns {
    pub fn note(&mut self, site: &str, table: &str, columns: &[String]) {
        for column in columns {
            *self
                .rows
                .entry((site.to_owned(), table.to_owned(), column.clone()))
                .or_default() += 1;
        }
    }

    /// Adds what this transaction dropped to HQ's record.
    pub async fn record(&mut self, tx: &mut Transaction<'_>) -> mysql_async::Result<()> {
        for ((site, table, column), rows) in std::mem::take(&mut self.rows) {
            tx.exec_drop(
                "INSERT INTO tributary_dropped_column
                    (site_id, table_name, column_name, rows_written, first_seen, last_seen)
                 VALUES (?, ?, ?, ?, UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))
                 ON DUPLICATE KEY UPDATE rows_written = rows_written + VALUES(rows_written),
                    last_seen = VALUES(last_seen)",
                (&site, &table, &column, rows),
            )
            .await?;
            // MariaDB reports 1 for a new row, 2 for an updated one.
            if tx.affected_rows() == 1 {
                tracing::warn!(
                    site = %site,
                    table = %table,
                    column = %column,
                    "HQ's table lacks a column this site sends; rows are written without it as \
                     the schema map's dropped_at_hq says (tributary status lists it)"
                );
            }
            crate::metrics::columns_dropped(&site, &table, &column, rows);
        }
        Ok(())
    }
}
