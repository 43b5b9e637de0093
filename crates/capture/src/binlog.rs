//! Reading the binlog: events in, whole source transactions of raw rows out.
//!
//! Framing on MariaDB with `@mariadb_slave_capability=4`: GTID (162) opens a group; rows
//! follow their TABLE_MAP; XID (InnoDB) or a `COMMIT` query closes it; a GTID flagged
//! standalone is followed by one query (DDL) and nothing else. The capability-0 shape
//! (`BEGIN` query instead of GTID) is accepted too. Every event's CRC32 is verified before it
//! is used (mysql_common strips the checksum without checking it). MariaDB-only events other
//! than GTID are skipped.

use crate::error::CaptureError;
use crate::gtid::{Gtid, GtidEventBody};
use crate::mysql_gtid::read_gtid_event;
use crate::position::SourceGtid;
use crate::table_layout::{ColumnInfo, ColumnRole, Layouts, TableLayout};
use crate::transaction_payload::{DEFAULT_PAYLOAD_LIMIT_BYTES, PayloadGuard};
use mysql_async::binlog::BinlogChecksumAlg;
use mysql_async::binlog::events::{Event, EventData, RowsEventData, TableMapEvent};
use mysql_async::{BinlogStream, Value as Sql};
use std::borrow::Cow;
use std::sync::Arc;
use tributary_model::{ColumnName, ColumnNames, Op, Part};
use tributary_schema::SchemaMap;

const GTID_EVENT: u8 = 162;
const TABLE_MAP_EVENT: u8 = 19;

/// One row image as the binlog (or a snapshot query) gave it: the values of the columns
/// present, named and typed as the row's own TABLE_MAP (or the query) describes them, so a row
/// is decoded with the schema valid at its position. Columns are sorted by name; the column
/// list is shared by every image of a rows event or snapshot chunk.
#[derive(Debug, Clone)]
pub struct RawImage {
    columns: Arc<[ColumnInfo]>,
    /// The names of the columns that travel (all but local ones), shared by every image of
    /// the same shape, when `columns` is sorted by name (always, from the binlog).
    travelling: Option<ColumnNames>,
    values: Vec<Sql>,
}

impl RawImage {
    /// An image whose travelling column names were worked out once for its shape
    /// ([`travelling_names`]).
    pub fn shaped(
        columns: Arc<[ColumnInfo]>,
        travelling: Option<ColumnNames>,
        mut values: Vec<Sql>,
    ) -> RawImage {
        values.truncate(columns.len());
        let travelling = travelling.filter(|_| values.len() == columns.len());
        RawImage {
            columns,
            travelling,
            values,
        }
    }

    /// The names of the columns that travel, in order, when known for this image's shape.
    pub fn travelling(&self) -> Option<&ColumnNames> {
        self.travelling.as_ref()
    }

    pub fn get(&self, name: &str) -> Option<&Sql> {
        self.column(name).map(|(_, value)| value)
    }

    /// Column `name` and its value.
    pub fn column(&self, name: &str) -> Option<(&ColumnInfo, &Sql)> {
        self.iter().find(|(c, _)| &*c.name == name)
    }

    /// Where column `name` sits in this image (and in every image of the same columns).
    pub fn position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| &*c.name == name)
    }

    /// The column at `position`, and its value.
    pub fn at(&self, position: usize) -> Option<(&ColumnInfo, &Sql)> {
        Some((self.columns.get(position)?, self.values.get(position)?))
    }

    /// Whether `other` has this image's very column list (images of one shape share it), so
    /// a column sits at the same position in both.
    pub fn same_columns(&self, other: &RawImage) -> bool {
        Arc::ptr_eq(&self.columns, &other.columns)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ColumnInfo, &Sql)> {
        self.columns.iter().zip(&self.values)
    }

    /// The same image, as if its columns were not known to be in name order.
    #[cfg(test)]
    pub fn without_travelling_names(self) -> RawImage {
        RawImage {
            travelling: None,
            ..self
        }
    }

    /// The columns and their values.
    #[cfg(test)]
    pub fn into_parts(self) -> (Arc<[ColumnInfo]>, Vec<Sql>) {
        (self.columns, self.values)
    }
}

/// The names of `columns` that travel (all but local ones), when they are in name order
/// without repeats: then a row's values, taken in column order, line up with them.
pub fn travelling_names(columns: &[ColumnInfo]) -> Option<ColumnNames> {
    let names: Vec<ColumnName> = columns
        .iter()
        .filter(|c| c.role != ColumnRole::Local)
        .map(|c| Arc::clone(&c.name))
        .collect();
    names
        .windows(2)
        .all(|w| w[0] < w[1])
        .then(|| ColumnNames::new(names))
}

#[derive(Debug, Clone)]
pub struct RawRow {
    pub table: Arc<str>,
    pub op: Op,
    /// Before image (update, delete).
    pub before: Option<RawImage>,
    /// After image (insert, update).
    pub after: Option<RawImage>,
}

impl RawRow {
    /// The image that identifies the row: the before image of an update or delete (an
    /// update may change the uuid), the inserted one otherwise.
    pub fn identifying_image(&self) -> Option<&RawImage> {
        match self.op {
            Op::Insert => self.after.as_ref(),
            Op::Update | Op::Delete => self.before.as_ref(),
        }
    }

    /// The image whose columns travel: what the row is after the change, or what a delete
    /// removed.
    pub fn changed_image(&self) -> Option<&RawImage> {
        match self.op {
            Op::Insert | Op::Update => self.after.as_ref(),
            Op::Delete => self.before.as_ref(),
        }
    }
}

#[derive(Debug, Default)]
pub struct RawTransaction {
    pub gtid: Option<SourceGtid>,
    pub committed_at: u64,
    pub rows: Vec<RawRow>,
    /// Set on the parts of a transaction cut into chunks.
    pub part: Option<Part>,
}

/// What one event meant for the transaction being assembled.
pub enum Step {
    /// Nothing to do yet.
    Continue,
    /// A transaction committed (possibly with no rows of interest).
    Committed(RawTransaction),
    /// A standalone DDL statement on the captured database committed; the schema map must be
    /// re-read before more rows are decoded.
    SchemaChanged(RawTransaction),
    /// The open transaction reached the chunk bound: these rows are a non-final part of it;
    /// `rows_so_far` of its synced rows are now handed over, including these.
    Chunk {
        part: RawTransaction,
        rows_so_far: u64,
    },
}

/// Where a restarted capture resumes inside a chunked transaction.
#[derive(Debug, Clone)]
pub struct ResumeInside {
    /// The transaction's GTID; `None` (a source without GTIDs, resumed by file/position right
    /// before it) means the first transaction the stream opens.
    pub gtid: Option<SourceGtid>,
    /// Synced rows already published: decoded again and dropped.
    pub rows: u64,
    pub parts: u32,
}

/// Assembles transactions for one database from the event stream.
///
/// Memory is bounded by `chunk_rows` (invariant 8): a transaction with more synced rows is
/// handed over in parts at rows-event boundaries. The boundaries depend only on the events,
/// so a capture restarted inside such a transaction (see [`ResumeInside`]) drops exactly the
/// rows already published and cuts the rest where it cut them before.
pub struct TransactionAssembler {
    database: String,
    current: Option<RawTransaction>,
    standalone: bool,
    /// A statement inside the open transaction may have changed the schema.
    schema_touched: bool,
    chunk_rows: usize,
    /// Synced rows of the open transaction handed over in earlier parts.
    rows_handed_over: u64,
    parts_handed_over: u32,
    /// Rows of the open transaction still to drop after a restart inside it.
    skip_rows: u64,
    resume: Option<ResumeInside>,
    layouts: Layouts,
    /// Checks that MySQL 8 compressed transactions arrive whole (mysql_async expands them).
    payloads: PayloadGuard,
    /// The last event fed was expanded from a compressed transaction.
    inside_payload: bool,
}

/// Where rows events find their table maps (the binlog stream keeps the latest per table id).
pub trait TableMaps {
    fn table_map(&self, table_id: u64) -> Option<&TableMapEvent<'static>>;
}

impl TableMaps for BinlogStream {
    fn table_map(&self, table_id: u64) -> Option<&TableMapEvent<'static>> {
        self.get_tme(table_id)
    }
}

/// MySQL's TRANSACTION_PAYLOAD event: its inner events follow it in the stream.
const TRANSACTION_PAYLOAD_EVENT: u8 = 40;

impl TransactionAssembler {
    pub fn new(database: &str, chunk_rows: usize) -> TransactionAssembler {
        TransactionAssembler {
            database: database.to_owned(),
            current: None,
            standalone: false,
            schema_touched: false,
            chunk_rows: chunk_rows.max(1),
            rows_handed_over: 0,
            parts_handed_over: 0,
            skip_rows: 0,
            resume: None,
            layouts: Layouts::default(),
            payloads: PayloadGuard::new(DEFAULT_PAYLOAD_LIMIT_BYTES),
            inside_payload: false,
        }
    }

    /// Whether the last event fed was expanded from a MySQL 8 compressed transaction (its
    /// position is the payload event's; see `position::CommitPositions`).
    pub fn inside_payload(&self) -> bool {
        self.inside_payload
    }

    /// Resumes inside a chunked transaction whose first parts are already published.
    pub fn resume_inside(&mut self, resume: Option<ResumeInside>) {
        self.resume = resume;
    }

    /// Feeds one event. Row events are decoded with the stream's table map and `schema`
    /// (rows of other databases and of unsynced tables are dropped here).
    pub fn feed(
        &mut self,
        event: &Event,
        tables: &impl TableMaps,
        schema: &SchemaMap,
    ) -> Result<Step, CaptureError> {
        verify_checksum(event)?;
        self.inside_payload = self.payloads.observe(event)?;
        let header = event.header();
        if header.event_type_raw() == TRANSACTION_PAYLOAD_EVENT {
            return Ok(Step::Continue);
        }
        if let Some(info) = read_gtid_event(event)? {
            // MySQL: a GTID event opens every transaction; a DML transaction continues with
            // BEGIN, a DDL statement follows the GTID directly (standalone until BEGIN).
            let gtid = info.gtid.map(SourceGtid::MySql);
            self.open(gtid, header.timestamp())?;
            self.standalone = true;
            return Ok(Step::Continue);
        }
        if header.event_type_raw() == GTID_EVENT {
            let body = GtidEventBody::parse(event.data())?;
            if body.xa {
                return Err(CaptureError::MalformedEvent {
                    event: "GTID (162)",
                    detail: format!(
                        "transaction {}-{}-{} is an XA transaction, which capture does not support",
                        body.domain,
                        header.server_id(),
                        body.sequence
                    ),
                });
            }
            let gtid = Gtid {
                domain: body.domain,
                server: header.server_id(),
                sequence: body.sequence,
            };
            self.open(Some(SourceGtid::MariaDb(gtid)), header.timestamp())?;
            self.standalone = body.standalone;
            return Ok(Step::Continue);
        }
        if header.event_type_raw() == TABLE_MAP_EVENT {
            // The stream's reader has already read it and keeps it for the rows events that
            // follow (`TableMaps`); reading it again here would only be thrown away.
            return Ok(Step::Continue);
        }
        let data = match event.read_data() {
            Ok(Some(data)) => data,
            // MariaDB-specific events (160 annotate, 161 checkpoint, 163 GTID list, ...).
            Ok(None) => return Ok(Step::Continue),
            Err(e) => {
                return Err(CaptureError::MalformedEvent {
                    event: "event body",
                    detail: e.to_string(),
                });
            }
        };
        match data {
            EventData::QueryEvent(query) => {
                let text = query.query();
                let statement = text.trim();
                if statement.eq_ignore_ascii_case("BEGIN") {
                    self.standalone = false;
                    if self.current.is_none() {
                        self.current = Some(RawTransaction {
                            committed_at: u64::from(header.timestamp()),
                            ..RawTransaction::default()
                        });
                    }
                    return Ok(Step::Continue);
                }
                if statement.eq_ignore_ascii_case("COMMIT") {
                    return Ok(self.commit(header.timestamp()));
                }
                if self.current.is_some() && !self.standalone {
                    // Inside an open transaction a query is not a boundary. Savepoints are
                    // harmless; anything else (CREATE TABLE ... SELECT) may change the schema,
                    // which is re-read when the transaction commits.
                    if !is_savepoint(statement) {
                        self.schema_touched |=
                            query.schema() == self.database || mentions(statement, &self.database);
                    }
                    return Ok(Step::Continue);
                }
                let mut txn = self.current.take().unwrap_or_default();
                txn.committed_at = u64::from(header.timestamp());
                // Any other query is DDL (statement-format DML is refused at preflight).
                self.standalone = false;
                let schema_name = query.schema();
                if schema_name == self.database || mentions(statement, &self.database) {
                    Ok(Step::SchemaChanged(txn))
                } else {
                    Ok(Step::Committed(txn))
                }
            }
            EventData::XidEvent(_) => Ok(self.commit(header.timestamp())),
            EventData::RowsEvent(rows) => {
                self.decode_rows(&rows, tables, schema)?;
                Ok(self.chunk_if_full())
            }
            _ => Ok(Step::Continue),
        }
    }

    /// Opens the transaction a GTID event announces.
    fn open(&mut self, gtid: Option<SourceGtid>, timestamp: u32) -> Result<(), CaptureError> {
        if let Some(open) = self
            .current
            .as_ref()
            .filter(|t| !t.rows.is_empty() || self.parts_handed_over > 0)
        {
            // Rows must never be dropped silently: a group that never committed (XA PREPARE,
            // which OpenMRS does not use) stops capture with a clear error.
            return Err(CaptureError::MalformedEvent {
                event: "GTID",
                detail: format!(
                    "transaction {} has rows but ended without COMMIT or XID (XA transactions are not supported)",
                    open.gtid
                        .as_ref()
                        .map(|g| g.to_string())
                        .unwrap_or_default()
                ),
            });
        }
        self.schema_touched = false;
        (
            self.rows_handed_over,
            self.parts_handed_over,
            self.skip_rows,
        ) = (0, 0, 0);
        if let Some(resume) = self.resume.take() {
            if resume.gtid.is_none() || resume.gtid.as_ref() == gtid.as_ref() {
                (
                    self.rows_handed_over,
                    self.parts_handed_over,
                    self.skip_rows,
                ) = (resume.rows, resume.parts, resume.rows);
            } else {
                // The stream starts before the partial transaction; keep waiting for it.
                self.resume = Some(resume);
            }
        }
        self.current = Some(RawTransaction {
            gtid,
            committed_at: u64::from(timestamp),
            ..RawTransaction::default()
        });
        Ok(())
    }

    /// Hands over the open transaction's rows as a part when they reach the chunk bound.
    fn chunk_if_full(&mut self) -> Step {
        let Some(current) = self.current.as_mut() else {
            return Step::Continue;
        };
        if current.rows.len() < self.chunk_rows {
            return Step::Continue;
        }
        let rows = std::mem::take(&mut current.rows);
        self.rows_handed_over += rows.len() as u64;
        let part = RawTransaction {
            gtid: current.gtid.clone(),
            committed_at: current.committed_at,
            rows,
            part: Some(Part {
                index: self.parts_handed_over,
                last: false,
            }),
        };
        self.parts_handed_over += 1;
        Step::Chunk {
            part,
            rows_so_far: self.rows_handed_over,
        }
    }

    fn commit(&mut self, timestamp: u32) -> Step {
        let mut txn = self.current.take().unwrap_or_default();
        txn.committed_at = u64::from(timestamp);
        if self.parts_handed_over > 0 {
            txn.part = Some(Part {
                index: self.parts_handed_over,
                last: true,
            });
        }
        (
            self.rows_handed_over,
            self.parts_handed_over,
            self.skip_rows,
        ) = (0, 0, 0);
        if std::mem::take(&mut self.schema_touched) {
            Step::SchemaChanged(txn)
        } else {
            Step::Committed(txn)
        }
    }

    fn decode_rows(
        &mut self,
        rows: &RowsEventData<'_>,
        tables: &impl TableMaps,
        schema: &SchemaMap,
    ) -> Result<(), CaptureError> {
        let tme = tables
            .table_map(rows.table_id())
            .ok_or(CaptureError::MissingTableMap(rows.table_id()))?;
        let database = self.database.as_bytes();
        let layout = self.layouts.synced_layout(tme, || {
            if tme.database_name_raw() != database {
                return None;
            }
            Some((schema, schema.table(&tme.table_name())?))
        })?;
        let Some(layout) = layout else {
            return Ok(());
        };
        let txn = self.current.get_or_insert_with(RawTransaction::default);
        let skip_rows = &mut self.skip_rows;
        let mode = if layout.is_prepared() {
            Decoder::Prepared
        } else {
            Decoder::Generic
        };
        decode_rows_event(rows, tme, &layout, mode, |row| {
            if *skip_rows > 0 {
                // Published before a restart inside this transaction.
                *skip_rows -= 1;
            } else {
                txn.rows.push(row);
            }
        })
    }

    /// Forgets the prepared table layouts: call when the schema version that names columns
    /// by position changes.
    pub fn schema_changed(&mut self) {
        self.layouts.clear();
    }
}

/// The indexes of the columns a rows event's column bitmap marks present.
fn present<B: std::ops::Deref<Target = bool>>(
    bits: Option<impl IntoIterator<Item = B>>,
) -> Vec<usize> {
    bits.map(|bits| {
        bits.into_iter()
            .enumerate()
            .filter(|(_, bit)| **bit)
            .map(|(i, _)| i)
            .collect()
    })
    .unwrap_or_default()
}

/// Which decoder reads a rows event's images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoder {
    /// The table's prepared codecs, straight from the event bytes.
    Prepared,
    /// mysql_common's generic row decoder.
    Generic,
}

/// Decodes every row of a rows event into a [`RawRow`], in order.
pub(crate) fn decode_rows_event(
    rows: &RowsEventData<'_>,
    tme: &mysql_async::binlog::events::TableMapEvent<'_>,
    layout: &TableLayout,
    decoder: Decoder,
    mut each: impl FnMut(RawRow),
) -> Result<(), CaptureError> {
    let op = match rows {
        RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => Op::Insert,
        RowsEventData::UpdateRowsEventV1(_)
        | RowsEventData::UpdateRowsEvent(_)
        | RowsEventData::PartialUpdateRowsEvent(_) => Op::Update,
        RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => Op::Delete,
    };
    let (has_before, has_after) = match op {
        Op::Insert => (false, true),
        Op::Update => (true, true),
        Op::Delete => (true, false),
    };
    // Shapes only for the images the event holds (an insert's empty before shape cost two
    // allocations per event).
    // A full image (every column, what `binlog_row_image=FULL` writes) lists the layout's
    // own indexes; only a partial one is read bit by bit.
    let before_present = match rows.columns_before_image().filter(|_| has_before) {
        Some(bits) if bits.len() == layout.all_columns().len() && bits.all() => {
            Cow::Borrowed(layout.all_columns())
        }
        bits => Cow::Owned(present(bits)),
    };
    let after_present = match rows.columns_after_image().filter(|_| has_after) {
        Some(bits) if bits.len() == layout.all_columns().len() && bits.all() => {
            Cow::Borrowed(layout.all_columns())
        }
        bits => Cow::Owned(present(bits)),
    };
    if before_present.is_empty() && after_present.is_empty() && !rows.rows_data().is_empty() {
        // Images of no column take no bytes: the rows would never end.
        return Err(CaptureError::MalformedEvent {
            event: "rows",
            detail: format!(
                "table {}: the event marks no column present but carries row data",
                layout.table
            ),
        });
    }
    let before_shape = has_before.then(|| layout.image_shape(&before_present));
    let after_shape = has_after.then(|| layout.image_shape(&after_present));
    let partial = matches!(rows, RowsEventData::PartialUpdateRowsEvent(_));
    if decoder == Decoder::Prepared && layout.is_prepared() && !partial {
        let mut input = rows.rows_data();
        while !input.is_empty() {
            let before = before_shape
                .as_ref()
                .map(|shape| layout.read_image(&mut input, &before_present, shape))
                .transpose()?;
            let after = after_shape
                .as_ref()
                .map(|shape| layout.read_image(&mut input, &after_present, shape))
                .transpose()?;
            each(RawRow {
                table: Arc::clone(&layout.table),
                op,
                before,
                after,
            });
        }
        return Ok(());
    }
    for row in rows.rows(tme) {
        let (before, after) = row.map_err(|e| CaptureError::MalformedEvent {
            event: "rows",
            detail: format!("table {}: {e}", layout.table),
        })?;
        each(RawRow {
            table: Arc::clone(&layout.table),
            op,
            before: before
                .zip(before_shape.as_ref())
                .map(|(r, shape)| layout.generic_image(r, &before_present, shape))
                .transpose()?,
            after: after
                .zip(after_shape.as_ref())
                .map(|(r, shape)| layout.generic_image(r, &after_present, shape))
                .transpose()?,
        });
    }
    Ok(())
}

fn is_savepoint(statement: &str) -> bool {
    let upper = statement
        .get(..20)
        .unwrap_or(statement)
        .to_ascii_uppercase();
    upper.starts_with("SAVEPOINT")
        || upper.starts_with("ROLLBACK TO")
        || upper.starts_with("RELEASE SAVEPOINT")
}

fn mentions(statement: &str, database: &str) -> bool {
    statement
        .to_ascii_lowercase()
        .contains(&database.to_ascii_lowercase())
}

pub(crate) fn verify_checksum(event: &Event) -> Result<(), CaptureError> {
    // Events unpacked from a MySQL 8 compressed transaction carry no checksum of their own
    // (the payload event's was verified); their footer says so.
    if let Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32)) =
        event.footer().get_checksum_alg()
        && event.footer().get_checksum_enabled()
        && let Some(stored) = event.checksum()
    {
        let stored = u32::from_le_bytes(stored);
        let computed = event_crc32(event);
        if stored != computed {
            return Err(CaptureError::Checksum {
                log_pos: event.header().log_pos(),
                stored,
                computed,
            });
        }
    }
    Ok(())
}

/// The CRC32 of an event as the server computed it: over the header (with the "binlog in
/// use" flag cleared, as it is once the file is closed), the body, and for a format
/// description its checksum algorithm byte. What `Event::calc_checksum` computes, with the
/// header on the stack rather than in a new vector (three events per row).
pub(crate) fn event_crc32(event: &Event) -> u32 {
    const BINLOG_IN_USE: u16 = 0x1;
    const FORMAT_DESCRIPTION_EVENT: u8 = 15;
    let header = event.header();
    let mut bytes = [0u8; 19];
    bytes[0..4].copy_from_slice(&header.timestamp().to_le_bytes());
    bytes[4] = header.event_type_raw();
    bytes[5..9].copy_from_slice(&header.server_id().to_le_bytes());
    bytes[9..13].copy_from_slice(&header.event_size().to_le_bytes());
    bytes[13..17].copy_from_slice(&header.log_pos().to_le_bytes());
    bytes[17..19].copy_from_slice(&(header.flags_raw() & !BINLOG_IN_USE).to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes);
    hasher.update(event.data());
    if header.event_type_raw() == FORMAT_DESCRIPTION_EVENT {
        hasher.update(&[BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32 as u8]);
    }
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_async::binlog::BinlogVersion;
    use mysql_async::binlog::events::{BinlogEventFooter, FormatDescriptionEvent};

    /// An XID event (type 16) as a CRC32 binlog carries it, with the given trailing checksum.
    fn xid_event(xid: u64, checksum: u32) -> Vec<u8> {
        let size = 19 + 8 + 4;
        let mut bytes = Vec::with_capacity(size);
        bytes.extend(1_700_000_000u32.to_le_bytes());
        bytes.push(16);
        bytes.extend(1u32.to_le_bytes());
        bytes.extend((size as u32).to_le_bytes());
        bytes.extend(4_096u32.to_le_bytes());
        bytes.extend(0u16.to_le_bytes());
        bytes.extend(xid.to_le_bytes());
        bytes.extend(checksum.to_le_bytes());
        bytes
    }

    fn read(bytes: &[u8]) -> Event {
        let fde = FormatDescriptionEvent::new(BinlogVersion::Version4).with_footer(
            BinlogEventFooter::new(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32),
        );
        Event::read(&fde, bytes).expect("well-formed event")
    }

    #[test]
    fn events_whose_crc32_does_not_match_are_refused() {
        let computed =
            read(&xid_event(42, 0)).calc_checksum(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32);
        assert!(verify_checksum(&read(&xid_event(42, computed))).is_ok());

        let mut corrupted = xid_event(42, computed);
        corrupted[20] ^= 0x40;
        let err = verify_checksum(&read(&corrupted)).unwrap_err();
        assert!(
            matches!(err, CaptureError::Checksum { log_pos: 4_096, .. }),
            "{err}"
        );
    }

    #[test]
    fn savepoint_statements_are_recognised() {
        assert!(is_savepoint("SAVEPOINT `s1`"));
        assert!(is_savepoint("rollback to savepoint s1"));
        assert!(is_savepoint("RELEASE SAVEPOINT s1"));
        assert!(!is_savepoint("ROLLBACK"));
        assert!(!is_savepoint("CREATE TABLE t SELECT 1"));
        assert!(
            !is_savepoint("ÅÅÅÅÅÅÅÅÅÅÅÅ multibyte"),
            "no panic on a char boundary"
        );
    }
}
