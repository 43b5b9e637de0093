//! MySQL transactions as capture assembles them: compressed TRANSACTION_PAYLOAD events expanded
//! through mysql_common and the payload guard, then whole transactions (with and without GTIDs,
//! across rotates, cut into parts) through capture's own assembler and positions.

use super::*;

/// The TRANSACTION_PAYLOAD (40) body: `{type, length, value}` fields
/// (MySQL `libbinlogevents/src/codecs/binary.cpp`), end mark, payload.
fn payload_event_body(compression: u8, uncompressed: u64, payload: &[u8]) -> Vec<u8> {
    let packed = |v: u64| -> Vec<u8> {
        if v < 251 {
            vec![v as u8]
        } else if v < 1 << 16 {
            let mut b = vec![252];
            b.extend(&v.to_le_bytes()[..2]);
            b
        } else {
            let mut b = vec![254];
            b.extend(v.to_le_bytes());
            b
        }
    };
    let mut body = Vec::new();
    for (field, value) in [
        (1u64, payload.len() as u64),
        (2, u64::from(compression)),
        (3, uncompressed),
    ] {
        let value = packed(value);
        body.extend(packed(field));
        body.extend(packed(value.len() as u64));
        body.extend(value);
    }
    body.push(0);
    body.extend(payload);
    body
}

/// The recorded payload's table, `compression_test.large_data`: three columns, named by
/// position (its table map carries no names, MINIMAL metadata).
fn large_data_columns() -> Vec<tributary_schema::CatalogColumn> {
    (0..3)
        .map(|i| tributary_schema::CatalogColumn {
            name: format!("c{i}"),
            kind: tributary_schema::ColumnKind::Other,
            nullable: true,
            auto_increment: false,
            unsigned: false,
        })
        .collect()
}

/// The schema map of the recorded payload's database, `compression_test`: its one table,
/// `large_data`, identified by a natural key (its first column, the primary key).
fn large_data_schema() -> tributary_schema::SchemaMap {
    let catalog = tributary_schema::Catalog {
        database: "compression_test".into(),
        tables: [(
            "large_data".to_owned(),
            tributary_schema::CatalogTable {
                name: "large_data".into(),
                columns: large_data_columns(),
                primary_key: vec!["c0".into()],
                foreign_keys: Vec::new(),
                unique_columns: Vec::new(),
            },
        )]
        .into(),
    };
    tributary_schema::SchemaMap::build(&catalog, &tributary_schema::Policy::openmrs_core()).unwrap()
}

/// The recorded 8.0.27 compressed transaction as a TRANSACTION_PAYLOAD event (40) at log
/// position 5,000: its body, and the event read with the stream's FORMAT_DESCRIPTION.
fn recorded_payload(fde: &FormatDescriptionEvent<'static>) -> (Vec<u8>, Event) {
    let body = payload_event_body(
        0,
        MYSQL_80_PAYLOAD_UNCOMPRESSED_BYTES,
        MYSQL_80_PAYLOAD_ZSTD,
    );
    let event = read(fde, &frame(40, 5_000, &body, true));
    (body, event)
}

#[test]
fn a_recorded_compressed_transaction_expands_through_mysql_common_and_the_guard() {
    let fde = mysql_80();
    let (_, payload_event) = recorded_payload(&fde);
    assert!(stored_checksum_matches(&payload_event));

    // mysql_common's path: the payload event, its decompressing reader, and inner events read
    // with checksums off (what `EventStreamReader::read_decompressed` does for the stream).
    let tpe = payload_event
        .read_event::<TransactionPayloadEvent<'_>>()
        .unwrap();
    assert_eq!(tpe.uncompressed_size(), MYSQL_80_PAYLOAD_UNCOMPRESSED_BYTES);
    let inner = inner_events(&fde);
    let types: Vec<u8> = inner.iter().map(|e| e.header().event_type_raw()).collect();
    assert_eq!(types, vec![2, 19, 30, 19, 31, 19, 32, 16]);
    assert!(
        inner.iter().all(|e| e.header().log_pos() == 0),
        "events inside a payload carry no position of their own"
    );
    // Inner events carry no checksum, yet `Event::checksum()` still answers (zeros) when the
    // stream's FORMAT_DESCRIPTION says CRC32: a verifier must also look at
    // `footer().get_checksum_enabled()`, or it refuses every expanded event.
    assert!(!inner[7].footer().get_checksum_enabled());
    assert!(inner[7].checksum().is_some() && !stored_checksum_matches(&inner[7]));
    // Capture's checksum check accepts them: their footer says they carry none.
    for event in &inner {
        crate::binlog::verify_checksum(event).expect("inner events carry no checksum");
    }

    // Every rows event decodes against the TABLE_MAP before it.
    let mut rows_seen = 0;
    for pair in inner
        .windows(2)
        .filter(|w| w[0].header().event_type_raw() == 19)
    {
        let tme = pair[0].read_event::<TableMapEvent<'_>>().unwrap();
        assert_eq!(&*tme.table_name(), "large_data");
        let Ok(Some(EventData::RowsEvent(rows))) = pair[1].read_data() else {
            panic!("a rows event follows each table map");
        };
        assert!(matches!(
            rows,
            RowsEventData::WriteRowsEvent(_)
                | RowsEventData::UpdateRowsEvent(_)
                | RowsEventData::DeleteRowsEvent(_)
        ));
        for row in rows.rows(&tme) {
            let (before, after) = row.unwrap();
            for image in [before, after].into_iter().flatten() {
                assert_eq!(image.columns_ref().len(), 3);
            }
            rows_seen += 1;
        }
        // Capture's prepared codecs read these recorded MySQL 8.0 rows exactly as the generic
        // decoder does.
        let tme = tme.into_owned();
        // The recorded table map carries no column names (MINIMAL metadata): they come from
        // the schema history, by position.
        let ordinal = large_data_columns();
        let layout = crate::table_layout::Layouts::default()
            .layout(&tme, &ordinal, None)
            .unwrap();
        assert!(layout.is_prepared());
        let decode = |decoder| {
            let mut images = Vec::new();
            crate::binlog::decode_rows_event(&rows, &tme, &layout, decoder, |row| {
                for image in [row.before, row.after].into_iter().flatten() {
                    images.push(format!("{:?}", image.iter().collect::<Vec<_>>()));
                }
            })
            .unwrap();
            images
        };
        let prepared = decode(crate::binlog::Decoder::Prepared);
        assert!(!prepared.is_empty());
        assert_eq!(prepared, decode(crate::binlog::Decoder::Generic));
    }
    assert!(rows_seen >= 3);

    // What mysql_async's stream calls gives the same bytes as the bounded walk.
    let (_, walked) = PayloadEvents::new(payload_event.data(), 5_000, 1 << 20).unwrap();
    let walked: Vec<u8> = walked.flat_map(Result::unwrap).collect();
    assert_eq!(walked.len() as u64, MYSQL_80_PAYLOAD_UNCOMPRESSED_BYTES);
    assert_eq!(tpe.clone().danger_decompress(), walked);

    // The guard: inner events are recognised, and their commit position is the payload's end.
    let mut guard = PayloadGuard::new(1 << 20);
    let mut positions = CommitPositions::new(Some("binlog.000002".into()));
    assert!(!guard.observe(&payload_event).unwrap());
    positions.observe(&payload_event, false).unwrap();
    for event in &inner {
        assert!(guard.observe(event).unwrap());
        positions.observe(event, true).unwrap();
    }
    assert_eq!(
        positions.at_commit(&inner[7], true).unwrap(),
        Some(BinlogFilePosition {
            file: "binlog.000002".into(),
            offset: 5_000
        })
    );
    let next = read(&fde, &frame(33, 5_100, GTID_80, true));
    assert!(!guard.observe(&next).unwrap());
}

#[test]
fn payloads_that_would_be_dropped_or_are_too_large_stop_capture() {
    let fde = mysql_80();
    let (body, payload_event) = recorded_payload(&fde);

    // The stream skipped the inner events (mysql_async yields nothing for a payload it
    // cannot decompress): the next real event is caught.
    let mut guard = PayloadGuard::new(1 << 20);
    guard.observe(&payload_event).unwrap();
    let next = read(&fde, &frame(33, 5_100, GTID_80, true));
    let err = guard.observe(&next).unwrap_err().to_string();
    assert!(err.contains("not expanded completely"), "{err}");

    // A declared size above the limit is refused before anything is decompressed.
    let err = PayloadGuard::new(1_000)
        .observe(&payload_event)
        .unwrap_err();
    assert!(
        matches!(
            err,
            crate::error::CaptureError::PayloadTooLarge {
                declared: 2_442,
                limit: 1_000,
                ..
            }
        ),
        "{err}"
    );

    // Declaring less than the payload holds: mysql_common's expansion returns nothing at
    // all, the bounded walk reports it.
    let lying = payload_event_body(0, 1_000, MYSQL_80_PAYLOAD_ZSTD);
    let lying_event = read(&fde, &frame(40, 5_000, &lying, true));
    let tpe = lying_event
        .read_event::<TransactionPayloadEvent<'_>>()
        .unwrap();
    assert!(
        tpe.danger_decompress().is_empty(),
        "the silent loss guarded against"
    );
    assert!(PayloadGuard::new(1 << 20).observe(&lying_event).is_err());

    // Corrupt compressed bytes, truncated bodies and unknown compression types are errors.
    let mut corrupt = MYSQL_80_PAYLOAD_ZSTD.to_vec();
    corrupt[40] ^= 0xff;
    corrupt[41] ^= 0xff;
    let corrupt = payload_event_body(0, MYSQL_80_PAYLOAD_UNCOMPRESSED_BYTES, &corrupt);
    assert!(
        PayloadGuard::new(1 << 20)
            .observe(&read(&fde, &frame(40, 5_000, &corrupt, true)))
            .is_err()
    );
    let unknown = payload_event_body(7, 10, b"0123456789");
    assert!(
        PayloadGuard::new(1 << 20)
            .observe(&read(&fde, &frame(40, 5_000, &unknown, true)))
            .is_err()
    );
    for len in 0..body.len() {
        let _ =
            PayloadGuard::new(1 << 20).observe(&read(&fde, &frame(40, 5_000, &body[..len], true)));
    }

    // An uncompressed payload (compression type 255) of one constructed XID.
    let xid = frame(16, 0, &3u64.to_le_bytes(), false);
    let plain = payload_event_body(255, xid.len() as u64, &xid);
    let mut guard = PayloadGuard::new(1 << 20);
    assert!(
        !guard
            .observe(&read(&fde, &frame(40, 6_000, &plain, true)))
            .unwrap()
    );
    let mut inner_footer = fde.footer();
    inner_footer.set_checksum_enabled(false);
    let inner = Event::read(&fde.clone().with_footer(inner_footer), &xid[..]).unwrap();
    assert!(guard.observe(&inner).unwrap());

    // zstd of our own, as MySQL writes it (one frame).
    let compressed = zstd::encode_all(&xid[..], 3).unwrap();
    let ours = payload_event_body(0, xid.len() as u64, &compressed);
    let ours_event = read(&fde, &frame(40, 7_000, &ours, true));
    let (_, events) = PayloadEvents::new(ours_event.data(), 7_000, 1 << 20).unwrap();
    let events: Vec<Vec<u8>> = events.map(Result::unwrap).collect();
    assert_eq!(events, vec![xid]);
}

/// Table maps as the binlog stream would hold them, filled in as table maps pass by.
#[derive(Default)]
struct SeenTableMaps(std::collections::HashMap<u64, TableMapEvent<'static>>);

impl SeenTableMaps {
    /// Keeps `event` when it is a TABLE_MAP, as the stream's reader does.
    fn see(&mut self, event: &Event) {
        if event.header().event_type_raw() == 19 {
            let tme = event.read_event::<TableMapEvent<'_>>().unwrap();
            self.0.insert(tme.table_id(), tme.into_owned());
        }
    }
}

impl crate::binlog::TableMaps for SeenTableMaps {
    fn table_map(&self, table_id: u64) -> Option<&TableMapEvent<'static>> {
        self.0.get(&table_id)
    }
}

/// Capture's own assembler over a recorded MySQL 8.0 transaction: the GTID event (33), then
/// the compressed payload's inner events (BEGIN, TABLE_MAP + WRITE/UPDATE/DELETE v2 rows,
/// XID) as mysql_async's stream hands them over. The transaction commits once, whole, with
/// its MySQL GTID, and the position advances to a MySQL GTID set in checkpoint form.
#[test]
fn a_recorded_mysql_transaction_assembles_with_its_gtid() {
    use crate::binlog::{Step, TransactionAssembler};
    use crate::position::{SourceGtid, StreamPosition};
    let fde = mysql_80();
    let (body, _) = recorded_payload(&fde);
    let mut events = vec![
        read(&fde, &frame(33, 4_000, GTID_80, true)),
        read(&fde, &frame(40, 5_000, &body, true)),
    ];
    events.extend(inner_events(&fde));

    let schema = large_data_schema();
    assert!(schema.table("large_data").is_some());

    let mut assembler = TransactionAssembler::new("compression_test", 1_000);
    let mut tables = SeenTableMaps::default();
    let mut committed = Vec::new();
    for event in &events {
        tables.see(event);
        match assembler.feed(event, &tables, &schema).unwrap() {
            Step::Continue => {}
            Step::Committed(txn) => committed.push(txn),
            other => panic!("unexpected step {}", matches!(other, Step::Chunk { .. })),
        }
    }
    assert_eq!(committed.len(), 1, "one transaction, committed once");
    let txn = &committed[0];
    let ops: Vec<_> = txn.rows.iter().map(|r| r.op).collect();
    assert_eq!(
        ops,
        vec![
            tributary_model::Op::Insert,
            tributary_model::Op::Update,
            tributary_model::Op::Update,
            tributary_model::Op::Delete
        ],
        "the recorded UPDATE changes two rows"
    );
    let Some(SourceGtid::MySql(gtid)) = &txn.gtid else {
        panic!("the transaction carries its MySQL GTID");
    };
    let mut position = StreamPosition::parse("").unwrap();
    assert!(matches!(position, StreamPosition::MariaDb(_)));
    position = StreamPosition::MySql(MysqlGtidSet::default());
    position.advance(txn.gtid.as_ref().unwrap());
    let checkpoint = position.to_string();
    assert_eq!(
        checkpoint,
        format!(
            "mysql-gtid:{}",
            MysqlGtidSet::parse(&gtid.to_string()).unwrap()
        )
    );
    assert_eq!(StreamPosition::parse(&checkpoint).unwrap(), position);
    assert_eq!(
        SourceGtid::parse(&gtid.to_string()).unwrap(),
        SourceGtid::MySql(gtid.clone())
    );
}

/// A QUERY event body (2), constructed from MySQL `libbinlogevents/src/statement_events.cpp`
/// (`Query_event`): thread id, execution time, schema length, error code, status-variables
/// length (13-byte post-header), then the schema, NUL, and the statement.
fn query_body(schema: &str, statement: &str) -> Vec<u8> {
    let mut body = 1u32.to_le_bytes().to_vec();
    body.extend(0u32.to_le_bytes());
    body.push(schema.len() as u8);
    body.extend(0u16.to_le_bytes());
    body.extend(0u16.to_le_bytes());
    body.extend(schema.as_bytes());
    body.push(0);
    body.extend(statement.as_bytes());
    body
}

/// The events a MySQL 8.0 server with `gtid_mode=OFF` sends for a dump by file/position from
/// `binlog.000001:4`: the artificial ROTATE (read before any FORMAT_DESCRIPTION, so its CRC32
/// stays on the file name, mysql_async issue #189), the file's FORMAT_DESCRIPTION, one
/// transaction (ANONYMOUS_GTID, BEGIN, the recorded JSON table map and WRITE_ROWS v2, XID
/// ending at 1,000), the ROTATE to `binlog.000002`, that file's FORMAT_DESCRIPTION, and the
/// recorded compressed transaction (GTID, payload ending at 5,000, its inner events).
fn mysql_stream_without_gtids() -> Vec<Event> {
    let fde = mysql_80();
    let before_fde = FormatDescriptionEvent::new(BinlogVersion::Version4).with_footer(
        mysql_async::binlog::events::BinlogEventFooter::new(
            BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_OFF,
        ),
    );
    let rotate_body = |name: &str| {
        let mut body = 4u64.to_le_bytes().to_vec();
        body.extend(name.as_bytes());
        body
    };
    let mut anonymous = GTID_80.to_vec();
    anonymous[1..25].fill(0);
    let format_description = format_description("8.0.27", &MYSQL_80_POST_HEADER_LENGTHS);
    let mut events = vec![
        read(
            &before_fde,
            &frame(4, 0, &rotate_body("binlog.000001"), true),
        ),
        Event::read(
            &FormatDescriptionEvent::new(BinlogVersion::Version4),
            &format_description[..],
        )
        .unwrap(),
        read(&fde, &frame(34, 300, &anonymous, true)),
        read(&fde, &frame(2, 380, &query_body("test", "BEGIN"), true)),
        read(&fde, &frame(19, 450, JSON_TABLE_MAP, true)),
        read(&fde, &frame(30, 960, JSON_ROW_OBJECT, true)),
        read(&fde, &frame(16, 1_000, &9u64.to_le_bytes(), true)),
        read(&fde, &frame(4, 1_050, &rotate_body("binlog.000002"), true)),
        Event::read(
            &FormatDescriptionEvent::new(BinlogVersion::Version4),
            &format_description[..],
        )
        .unwrap(),
        read(&fde, &frame(33, 4_000, GTID_80, true)),
    ];
    let (_, payload_event) = recorded_payload(&fde);
    events.push(payload_event);
    events.extend(inner_events(&fde));
    events
}

/// The recorded payload's inner events, as mysql_async's stream hands them over.
fn inner_events(fde: &FormatDescriptionEvent<'static>) -> Vec<Event> {
    let (_, payload_event) = recorded_payload(fde);
    let tpe = payload_event
        .read_event::<TransactionPayloadEvent<'_>>()
        .unwrap();
    let mut footer = fde.footer();
    footer.set_checksum_enabled(false);
    let inner_fde = fde.clone().with_footer(footer);
    let mut reader = tpe.decompressed().unwrap();
    let mut inner = Vec::new();
    while reader.fill_buf().map(|b| !b.is_empty()).unwrap() {
        inner.push(Event::read(&inner_fde, &mut reader).unwrap());
    }
    inner
}

/// File/position resume of a MySQL source without GTIDs: the session's file/position is
/// taken only where a transaction commits (the XID; for the compressed transaction, the end of
/// its payload event), follows the ROTATEs (the artificial one that opens the stream and the
/// real one between files), and never moves inside a transaction.
#[test]
fn a_mysql_stream_without_gtids_is_positioned_at_commit_ends_across_rotates() {
    use crate::binlog::{Step, TransactionAssembler};
    use crate::position::{SessionPosition, StreamPosition};
    let events = mysql_stream_without_gtids();
    let schema = tributary_schema::SchemaMap::build(
        &tributary_schema::Catalog {
            database: "openmrs".into(),
            tables: Default::default(),
        },
        &tributary_schema::Policy::openmrs_core(),
    )
    .unwrap();
    let mut assembler = TransactionAssembler::new("openmrs", 1_000);
    let mut tables = SeenTableMaps::default();
    let start = BinlogFilePosition {
        file: "binlog.000001".into(),
        offset: 4,
    };
    let mut session = SessionPosition::new(
        StreamPosition::MySql(MysqlGtidSet::default()),
        Some(start.clone()),
    );
    let mut commits = Vec::new();
    let mut last = Some(start.clone());
    for event in &events {
        tables.see(event);
        // The calls and their order are stream.rs's.
        let step = assembler.feed(event, &tables, &schema).unwrap();
        session.observe(event, assembler.inside_payload()).unwrap();
        match step {
            Step::Committed(txn) | Step::SchemaChanged(txn) => {
                session
                    .commit(event, assembler.inside_payload(), txn.gtid.as_ref())
                    .unwrap();
                last = session.binlog().cloned();
                commits.push((txn.gtid.is_some(), last.clone()));
            }
            Step::Continue => assert_eq!(
                session.binlog(),
                last.as_ref(),
                "the position moves only at a commit"
            ),
            Step::Chunk { .. } => panic!("no transaction here is large enough to be cut"),
        }
    }
    let at = |file: &str, offset| {
        Some(BinlogFilePosition {
            file: file.into(),
            offset,
        })
    };
    assert_eq!(
        commits,
        vec![
            (false, at("binlog.000001", 1_000)),
            (true, at("binlog.000002", 5_000))
        ],
        "an anonymous transaction, then the compressed one with its GTID"
    );
    assert!(
        session
            .gtid()
            .to_string()
            .starts_with("mysql-gtid:5ccc1033-44a8-11ea-bd59-0242ac190003:"),
        "{}",
        session.gtid()
    );
}

/// A source without GTIDs records no GTID for a transaction sent in parts; capture resumes by
/// file/position right before it, so the first transaction the stream opens is that one:
/// its published rows are dropped and the parts continue where they stopped.
#[test]
fn a_transaction_in_parts_resumes_without_a_gtid() {
    use crate::binlog::{ResumeInside, Step, TransactionAssembler};
    let fde = mysql_80();
    let mut anonymous = GTID_80.to_vec();
    anonymous[1..25].fill(0);
    let (_, payload_event) = recorded_payload(&fde);
    let mut events = vec![
        read(&fde, &frame(34, 4_000, &anonymous, true)),
        payload_event,
    ];
    events.extend(inner_events(&fde));
    let schema = large_data_schema();
    // Two parts (the inserted row, then the first updated row) were published before a crash.
    let mut assembler = TransactionAssembler::new("compression_test", 1);
    assembler.resume_inside(Some(ResumeInside {
        gtid: None,
        rows: 2,
        parts: 2,
    }));
    let mut tables = SeenTableMaps::default();
    let mut parts = Vec::new();
    for event in &events {
        tables.see(event);
        match assembler.feed(event, &tables, &schema).unwrap() {
            Step::Continue => {}
            Step::Chunk { part, rows_so_far } => parts.push((part, Some(rows_so_far))),
            Step::Committed(txn) => parts.push((txn, None)),
            Step::SchemaChanged(_) => panic!("no DDL here"),
        }
    }
    let seen: Vec<_> = parts
        .iter()
        .map(|(txn, so_far)| {
            let part = txn.part.as_ref().map(|p| (p.index, p.last));
            let ops: Vec<_> = txn.rows.iter().map(|r| r.op).collect();
            (part, ops, *so_far)
        })
        .collect();
    use tributary_model::Op;
    assert_eq!(
        seen,
        vec![
            (Some((2, false)), vec![Op::Update], Some(3)),
            (Some((3, false)), vec![Op::Delete], Some(4)),
            (Some((4, true)), vec![], None),
        ],
        "the remaining rows, in the parts they were cut into before"
    );
}
