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
use mysql_async::binlog::BinlogChecksumAlg;
use mysql_async::binlog::events::{
    Event, EventData, OptionalMetadataField, RowsEventData, TableMapEvent,
};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::{BinlogStream, Value as Sql};
use tributary_model::{Op, Part};
use tributary_schema::{CatalogColumn, ColumnKind, SchemaMap};

const GTID_EVENT: u8 = 162;

/// One column of a row image: its name and kind as the row's own TABLE_MAP describes them
/// (so a row is decoded with the schema valid at its position), and the raw value.
#[derive(Debug)]
pub struct RawColumn {
    pub name: String,
    pub kind: ColumnKind,
    pub value: Sql,
}

/// One row image as the binlog (or a snapshot query) gave it.
#[derive(Debug, Default)]
pub struct RawImage(Vec<RawColumn>);

impl RawImage {
    pub fn new(columns: Vec<RawColumn>) -> RawImage {
        RawImage(columns)
    }

    pub fn get(&self, name: &str) -> Option<&Sql> {
        self.0.iter().find(|c| c.name == name).map(|c| &c.value)
    }

    pub fn iter(&self) -> impl Iterator<Item = &RawColumn> {
        self.0.iter()
    }
}

#[derive(Debug)]
pub struct RawRow {
    pub table: String,
    pub op: Op,
    /// Before image (update, delete).
    pub before: Option<RawImage>,
    /// After image (insert, update).
    pub after: Option<RawImage>,
}

#[derive(Debug, Default)]
pub struct RawTransaction {
    pub gtid: Option<Gtid>,
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
    pub gtid: Gtid,
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
}

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
        }
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
        stream: &BinlogStream,
        schema: &SchemaMap,
    ) -> Result<Step, CaptureError> {
        verify_checksum(event)?;
        let header = event.header();
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
            if let Some(open) = self
                .current
                .as_ref()
                .filter(|t| !t.rows.is_empty() || self.parts_handed_over > 0)
            {
                // Rows must never be dropped silently: a group that never committed (XA
                // PREPARE, which OpenMRS does not use) stops capture with a clear error.
                return Err(CaptureError::MalformedEvent {
                    event: "GTID (162)",
                    detail: format!(
                        "transaction {} has rows but ended without COMMIT or XID (XA transactions are not supported)",
                        open.gtid.map(|g| g.to_string()).unwrap_or_default()
                    ),
                });
            }
            self.schema_touched = false;
            let gtid = Gtid {
                domain: body.domain,
                server: header.server_id(),
                sequence: body.sequence,
            };
            (
                self.rows_handed_over,
                self.parts_handed_over,
                self.skip_rows,
            ) = (0, 0, 0);
            if let Some(resume) = self.resume.take() {
                if resume.gtid == gtid {
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
                gtid: Some(gtid),
                committed_at: u64::from(header.timestamp()),
                ..RawTransaction::default()
            });
            self.standalone = body.standalone;
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
                self.decode_rows(&rows, stream, schema)?;
                Ok(self.chunk_if_full())
            }
            _ => Ok(Step::Continue),
        }
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
            gtid: current.gtid,
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
        stream: &BinlogStream,
        schema: &SchemaMap,
    ) -> Result<(), CaptureError> {
        let tme = stream
            .get_tme(rows.table_id())
            .ok_or(CaptureError::MissingTableMap(rows.table_id()))?;
        if tme.database_name() != self.database {
            return Ok(());
        }
        let table = tme.table_name().into_owned();
        if schema.table(&table).is_none() {
            return Ok(());
        }
        let op = match rows {
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => Op::Insert,
            RowsEventData::UpdateRowsEventV1(_)
            | RowsEventData::UpdateRowsEvent(_)
            | RowsEventData::PartialUpdateRowsEvent(_) => Op::Update,
            RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => Op::Delete,
        };
        let members = member_names(tme)?;
        let map = schema
            .table(&table)
            .ok_or(CaptureError::MissingTableMap(rows.table_id()))?;
        let ordinal = &map.ordinal_columns;
        let txn = self.current.get_or_insert_with(RawTransaction::default);
        for row in rows.rows(tme) {
            let (before, after) = row.map_err(|e| CaptureError::MalformedEvent {
                event: "rows",
                detail: format!("table {table}: {e}"),
            })?;
            if self.skip_rows > 0 {
                // Published before a restart inside this transaction.
                self.skip_rows -= 1;
                continue;
            }
            txn.rows.push(RawRow {
                table: table.clone(),
                op,
                before: before
                    .map(|r| image(r, &members, ordinal, &table))
                    .transpose()?,
                after: after
                    .map(|r| image(r, &members, ordinal, &table))
                    .transpose()?,
            });
        }
        Ok(())
    }
}

/// The member names of every ENUM and SET column of a table map, by column index (the
/// optional metadata lists them in column order, ENUMs and SETs separately).
fn member_names(tme: &TableMapEvent<'_>) -> Result<Vec<Option<Vec<String>>>, CaptureError> {
    let malformed = |e: std::io::Error| CaptureError::MalformedEvent {
        event: "TABLE_MAP",
        detail: e.to_string(),
    };
    let names = |values: Vec<&[u8]>| -> Vec<String> {
        values
            .into_iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    };
    let (mut enums, mut sets) = (Vec::new(), Vec::new());
    for field in tme.iter_optional_meta() {
        match field.map_err(malformed)? {
            OptionalMetadataField::EnumStrValue(columns) => {
                for column in columns.iter_values() {
                    let column = column.map_err(malformed)?;
                    enums.push(names(
                        column.values().iter().map(|v| v.value_raw()).collect(),
                    ));
                }
            }
            OptionalMetadataField::SetStrValue(columns) => {
                for column in columns.iter_values() {
                    let column = column.map_err(malformed)?;
                    sets.push(names(
                        column.values().iter().map(|v| v.value_raw()).collect(),
                    ));
                }
            }
            _ => {}
        }
    }
    let (mut enums, mut sets) = (enums.into_iter(), sets.into_iter());
    Ok((0..tme.columns_count() as usize)
        .map(|i| match tme.get_column_type(i) {
            Ok(Some(ColumnType::MYSQL_TYPE_ENUM)) => enums.next(),
            Ok(Some(ColumnType::MYSQL_TYPE_SET)) => sets.next(),
            _ => None,
        })
        .collect())
}

/// Decodes one row image. Column names and signedness come from the TABLE_MAP
/// (`binlog_row_metadata=FULL`); a binlog written without them (`MINIMAL`, `NO_LOG`, older
/// servers) is read by position against the schema-history version valid here (`ordinal`).
fn image(
    row: BinlogRow,
    members: &[Option<Vec<String>>],
    ordinal: &[CatalogColumn],
    table: &str,
) -> Result<RawImage, CaptureError> {
    let mut described = Vec::with_capacity(row.columns_ref().len());
    for (i, c) in row.columns_ref().iter().enumerate() {
        let name = c.name_str();
        let (name, unsigned) = match name.strip_prefix('@') {
            None => (
                name.into_owned(),
                c.flags().contains(ColumnFlags::UNSIGNED_FLAG),
            ),
            Some(_) => {
                if row.columns_ref().len() != ordinal.len() {
                    return Err(CaptureError::MalformedEvent {
                        event: "TABLE_MAP",
                        detail: format!(
                            "table {table} has {} columns in the binlog but {} in the schema \
                             version valid here, and the binlog carries no column names \
                             (binlog_row_metadata below FULL); set binlog_row_metadata=FULL, \
                             then re-seed the site",
                            row.columns_ref().len(),
                            ordinal.len()
                        ),
                    });
                }
                let known = &ordinal[i];
                (known.name.clone(), known.unsigned)
            }
        };
        described.push((
            name,
            ColumnKind::from_column_type(c.column_type(), c.character_set()),
            BinlogColumn {
                column_type: c.column_type(),
                charset: c.character_set(),
                unsigned,
                members: members.get(i).and_then(|m| m.as_deref()),
            },
        ));
    }
    let columns = described
        .into_iter()
        .zip(row.unwrap())
        .map(|((name, kind, column), value)| {
            let value = match value {
                BinlogValue::Value(v) => v,
                // MySQL's binary JSON; MariaDB writes JSON as text.
                other => Sql::try_from(other).map_err(|e| CaptureError::MalformedEvent {
                    event: "rows",
                    detail: e.to_string(),
                })?,
            };
            Ok(RawColumn {
                name,
                kind,
                value: column.normalise(value),
            })
        })
        .collect::<Result<Vec<_>, CaptureError>>()?;
    Ok(RawImage::new(columns))
}

/// What a row value's TABLE_MAP says about its column, for the corrections below.
struct BinlogColumn<'m> {
    column_type: ColumnType,
    charset: u16,
    unsigned: bool,
    /// ENUM and SET member names, in definition order.
    members: Option<&'m [String]>,
}

impl BinlogColumn<'_> {
    /// Brings a decoded binlog value to the form a query of the same column returns:
    /// - a signed MEDIUMINT is read by mysql_common without sign extension;
    /// - an ENUM arrives as its 1-based index and a SET as its little-endian member bitmap:
    ///   both become their member names (the bitmap's number, should the names be missing);
    /// - latin1 text arrives in latin1 bytes (our connections speak utf8mb4).
    fn normalise(&self, value: Sql) -> Sql {
        match (self.column_type, value) {
            (ColumnType::MYSQL_TYPE_INT24, Sql::Int(v)) if !self.unsigned && v > 0x7f_ffff => {
                Sql::Int(v - 0x100_0000)
            }
            // Without SIGNEDNESS metadata mysql_common reads unsigned integers as signed.
            (ColumnType::MYSQL_TYPE_TINY, Sql::Int(v)) if self.unsigned && v < 0 => {
                Sql::Int(v + 0x100)
            }
            (ColumnType::MYSQL_TYPE_SHORT, Sql::Int(v)) if self.unsigned && v < 0 => {
                Sql::Int(v + 0x1_0000)
            }
            (ColumnType::MYSQL_TYPE_LONG, Sql::Int(v)) if self.unsigned && v < 0 => {
                Sql::Int(v + 0x1_0000_0000)
            }
            (ColumnType::MYSQL_TYPE_LONGLONG, Sql::Int(v)) if self.unsigned && v < 0 => {
                Sql::UInt(v as u64)
            }
            (ColumnType::MYSQL_TYPE_ENUM, Sql::Int(index)) => match (self.members, index) {
                (Some(_), 0) => Sql::Bytes(Vec::new()),
                (Some(members), i) => usize::try_from(i - 1)
                    .ok()
                    .and_then(|i| members.get(i))
                    .map_or(Sql::Int(index), |name| Sql::Bytes(name.as_bytes().to_vec())),
                (None, _) => Sql::Int(index),
            },
            (ColumnType::MYSQL_TYPE_SET, Sql::Bytes(bitmap)) => {
                let bits = bitmap
                    .iter()
                    .take(8)
                    .enumerate()
                    .fold(0u64, |acc, (i, b)| acc | (u64::from(*b) << (8 * i)));
                match self.members {
                    Some(members) => Sql::Bytes(
                        members
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| *i < 64 && bits & (1 << i) != 0)
                            .map(|(_, name)| name.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                            .into_bytes(),
                    ),
                    None => Sql::UInt(bits),
                }
            }
            (_, Sql::Bytes(bytes)) if is_latin1(self.charset) && !bytes.is_ascii() => {
                Sql::Bytes(latin1_to_utf8(&bytes).into_bytes())
            }
            (_, value) => value,
        }
    }
}

/// MariaDB's latin1 collations (`latin1` is Windows-1252 there).
fn is_latin1(charset: u16) -> bool {
    matches!(charset, 5 | 8 | 15 | 31 | 47 | 48 | 49 | 94 | 1032 | 1071)
}

/// Windows-1252 to UTF-8; the five bytes 1252 leaves undefined map to the same code points,
/// as MariaDB does.
fn latin1_to_utf8(bytes: &[u8]) -> String {
    const HIGH: [char; 32] = [
        '\u{20AC}', '\u{81}', '\u{201A}', '\u{192}', '\u{201E}', '\u{2026}', '\u{2020}',
        '\u{2021}', '\u{2C6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8D}', '\u{17D}',
        '\u{8F}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}',
        '\u{2014}', '\u{2DC}', '\u{2122}', '\u{161}', '\u{203A}', '\u{153}', '\u{9D}', '\u{17E}',
        '\u{178}',
    ];
    bytes
        .iter()
        .map(|&b| match b {
            0x80..=0x9f => HIGH[usize::from(b - 0x80)],
            _ => char::from(b),
        })
        .collect()
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

fn verify_checksum(event: &Event) -> Result<(), CaptureError> {
    if let Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32)) =
        event.footer().get_checksum_alg()
        && let Some(stored) = event.checksum()
    {
        let stored = u32::from_le_bytes(stored);
        let computed = event.calc_checksum(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32);
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
    fn binlog_values_are_brought_to_their_query_form() {
        let column = |column_type, charset, unsigned| BinlogColumn {
            column_type,
            charset,
            unsigned,
            members: None,
        };
        let int24 = column(ColumnType::MYSQL_TYPE_INT24, 63, false);
        assert_eq!(int24.normalise(Sql::Int(0x80_0000)), Sql::Int(-8_388_608));
        assert_eq!(int24.normalise(Sql::Int(0xff_ffff)), Sql::Int(-1));
        assert_eq!(int24.normalise(Sql::Int(5)), Sql::Int(5));
        let uint24 = column(ColumnType::MYSQL_TYPE_INT24, 63, true);
        assert_eq!(uint24.normalise(Sql::Int(0xff_ffff)), Sql::Int(0xff_ffff));
        let uint32 = column(ColumnType::MYSQL_TYPE_LONG, 63, true);
        assert_eq!(uint32.normalise(Sql::Int(-1)), Sql::Int(4_294_967_295));
        let uint64 = column(ColumnType::MYSQL_TYPE_LONGLONG, 63, true);
        assert_eq!(uint64.normalise(Sql::Int(-1)), Sql::UInt(u64::MAX));
        let int32 = column(ColumnType::MYSQL_TYPE_LONG, 63, false);
        assert_eq!(int32.normalise(Sql::Int(-1)), Sql::Int(-1));
        let set = column(ColumnType::MYSQL_TYPE_SET, 45, false);
        assert_eq!(set.normalise(Sql::Bytes(vec![0x0d])), Sql::UInt(13));
        let names: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let named_set = BinlogColumn {
            members: Some(&names),
            ..column(ColumnType::MYSQL_TYPE_SET, 45, false)
        };
        assert_eq!(
            named_set.normalise(Sql::Bytes(vec![0x0d])),
            Sql::Bytes(b"a,c,d".to_vec())
        );
        assert_eq!(
            named_set.normalise(Sql::Bytes(vec![0])),
            Sql::Bytes(Vec::new())
        );
        let named_enum = BinlogColumn {
            members: Some(&names),
            ..column(ColumnType::MYSQL_TYPE_ENUM, 45, false)
        };
        assert_eq!(named_enum.normalise(Sql::Int(2)), Sql::Bytes(b"b".to_vec()));
        assert_eq!(
            named_enum.normalise(Sql::Int(0)),
            Sql::Bytes(Vec::new()),
            "the invalid-value ''"
        );
        assert_eq!(
            named_enum.normalise(Sql::Int(9)),
            Sql::Int(9),
            "out of range stays a number"
        );
        let latin1 = column(ColumnType::MYSQL_TYPE_VARCHAR, 8, false);
        assert_eq!(
            latin1.normalise(Sql::Bytes(b"M\xfcller \x80".to_vec())),
            Sql::Bytes("Müller €".as_bytes().to_vec())
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
