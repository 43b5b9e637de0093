//! Hostile binlog events: the event decoder fuzzed from recorded events, a fixed number of
//! cases on every `cargo test`, so CI fuzzes the same amount every run, and [`check_binlog`]
//! for the cargo-fuzz target `binlog_events` (`fuzz/`, seeded with the same recording).
//! Compiled only for those two: it is not part of the crate's API.
//!
//! The seed is a real binlog recorded from MariaDB 10.11 (`fixtures/`, FULL row metadata,
//! annotations on): DDL creating two module tables of many column types, then transactions
//! inserting, updating and deleting rows (text in several scripts, decimals, times, bits, sets,
//! JSON, a self-reference), a column added mid-stream, and more rows. Each case replays the
//! whole recording through what a capture session runs, in its order: mysql_common's event
//! reader (as the binlog stream calls it), the transaction assembler, annotation (with every
//! reference left unresolved: there is no source to ask) and the payload's JSON. Between the
//! recorded events it makes one to four changes: bits flipped, bytes overwritten, events cut
//! short or lengthened (with the length field kept true), dropped, repeated or swapped; most
//! changed events get a fresh checksum so the decoder behind the check is reached.
//!
//! The contract:
//! - nothing in Tributary's code panics (mysql_common's reader does on some truncated bodies;
//!   a capture session catches that and ends with "malformed event", so those are allowed, and
//!   only those: the panic's location must be inside mysql_common);
//! - a changed event whose checksum no longer matches is never decoded into rows, while the
//!   format description in effect announces CRC32 checksums (a format description says itself
//!   whether events carry them, as binlogs written before `binlog_checksum=CRC32` do not, so a
//!   changed one may switch verification off: that is the binlog format);
//! - whatever is decoded annotates and serialises without failing.

use crate::annotate::{Annotator, images};
use crate::attribute_formats::AttributeFormats;
use crate::binlog::{Step, TableMaps, TransactionAssembler};
use crate::captured::payload_json;
use crate::identities::IdentityCache;
use mysql_async::binlog::events::{Event, FormatDescriptionEvent, TableMapEvent};
use mysql_async::binlog::{BinlogChecksumAlg, BinlogVersion};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Once, OnceLock};
use tributary_model::{BatchPayload, Origin};
use tributary_schema::{
    Catalog, CatalogColumn, CatalogTable, ColumnKind, ForeignKey, Policy, SchemaMap,
};

/// The recording: `mariadb-binlog` shows its events (see the module documentation).
#[cfg(test)]
const RECORDED: &[u8] = include_bytes!("fixtures/mariadb-10.11-module-tables.binlog");
#[cfg(test)]
const CASES: u64 = 2_000;
const FORMAT_DESCRIPTION: u8 = 15;
const TABLE_MAP: u8 = 19;
const HEADER: usize = 19;

#[cfg(test)]
use crate::decoder_equivalence_tests::Random;

/// The recorded events, split by their length fields (after the 4-byte file magic).
#[cfg(test)]
fn recorded_events() -> Vec<Vec<u8>> {
    let mut events = Vec::new();
    let mut rest = &RECORDED[4..];
    while rest.len() >= HEADER {
        let size = u32::from_le_bytes([rest[9], rest[10], rest[11], rest[12]]) as usize;
        assert!(
            size >= HEADER && size <= rest.len(),
            "the recording is whole"
        );
        events.push(rest[..size].to_vec());
        rest = &rest[size..];
    }
    events
}

/// The recording's transactions (and DDL), decoded as a capture session decodes them.
#[cfg(test)]
pub(crate) fn recorded_transactions() -> Vec<crate::binlog::RawTransaction> {
    let mut reader = StreamReader::default();
    let mut assembler = TransactionAssembler::new("openmrs", 1_000);
    let mut transactions = Vec::new();
    for bytes in recorded_events() {
        let event = reader.read(&bytes).expect("a recorded event reads");
        match assembler
            .feed(&event, &reader, schema())
            .expect("a recorded event decodes")
        {
            Step::Committed(raw) | Step::SchemaChanged(raw) => transactions.push(raw),
            Step::Chunk { part, .. } => transactions.push(part),
            Step::Continue => {}
        }
    }
    transactions
}

/// The recorded tables as capture would introspect them before the recording.
pub(crate) fn schema() -> &'static SchemaMap {
    static SCHEMA: OnceLock<SchemaMap> = OnceLock::new();
    SCHEMA.get_or_init(build_schema)
}

fn build_schema() -> SchemaMap {
    // The first column is each table's AUTO_INCREMENT key.
    let columns = |list: &[(&str, ColumnKind)]| -> Vec<CatalogColumn> {
        list.iter()
            .enumerate()
            .map(|(i, &(name, kind))| CatalogColumn {
                name: name.into(),
                kind,
                nullable: i > 0,
                auto_increment: i == 0,
                unsigned: name == "obs_id" || name == "obs_group_id" || name == "medium",
            })
            .collect()
    };
    let person = CatalogTable {
        name: "fuzz_person".into(),
        columns: columns(&[
            ("person_id", ColumnKind::Integer),
            ("uuid", ColumnKind::Text),
            ("given_name", ColumnKind::Text),
            ("birthdate", ColumnKind::Date),
            ("birthtime", ColumnKind::Time),
            ("dead", ColumnKind::Integer),
            ("gender", ColumnKind::Text),
            ("date_created", ColumnKind::DateTime),
            ("changed", ColumnKind::Timestamp),
        ]),
        primary_key: vec!["person_id".into()],
        foreign_keys: Vec::new(),
        unique_columns: vec!["uuid".into()],
    };
    let reference = |column: &str, parent_table: &str, parent_column: &str| ForeignKey {
        column: column.into(),
        parent_table: parent_table.into(),
        parent_column: parent_column.into(),
        cascades: Vec::new(),
    };
    let obs = CatalogTable {
        name: "fuzz_obs".into(),
        columns: columns(&[
            ("obs_id", ColumnKind::Integer),
            ("uuid", ColumnKind::Text),
            ("person_id", ColumnKind::Integer),
            ("obs_group_id", ColumnKind::Integer),
            ("value_numeric", ColumnKind::Decimal),
            ("value_float", ColumnKind::Double),
            ("value_small", ColumnKind::Float),
            ("value_text", ColumnKind::Text),
            ("value_blob", ColumnKind::Binary),
            ("value_bits", ColumnKind::Binary),
            ("tags", ColumnKind::Text),
            ("year_seen", ColumnKind::Year),
            ("small", ColumnKind::Integer),
            ("medium", ColumnKind::Integer),
            ("latin", ColumnKind::Text),
            ("json_note", ColumnKind::Text),
            ("obs_datetime", ColumnKind::DateTime),
        ]),
        primary_key: vec!["obs_id".into()],
        foreign_keys: vec![
            reference("person_id", "fuzz_person", "person_id"),
            reference("obs_group_id", "fuzz_obs", "obs_id"),
        ],
        unique_columns: vec!["uuid".into()],
    };
    let catalog = Catalog {
        database: "openmrs".into(),
        tables: [person, obs].map(|t| (t.name.clone(), t)).into(),
    };
    SchemaMap::build(&catalog, &Policy::openmrs_core()).expect("the recorded tables map")
}

/// The contract over any bytes read as a binlog file (after its 4-byte magic): events are
/// taken by their length fields, each one's checksum is stale when its last four bytes are not
/// the CRC32 of the rest.
pub fn check_binlog(bytes: &[u8]) {
    record_panic_locations();
    let mut events = Vec::new();
    let mut rest = bytes.get(4..).unwrap_or_default();
    while rest.len() >= HEADER {
        let size = u32::from_le_bytes([rest[9], rest[10], rest[11], rest[12]]) as usize;
        let size = size.clamp(HEADER, rest.len());
        events.push(rest[..size].to_vec());
        rest = &rest[size..];
    }
    let stale = events
        .iter()
        .map(|event| !checksum_matches(event))
        .collect();
    check(0, &Case { events, stale }, schema());
}

fn checksum_matches(event: &[u8]) -> bool {
    let Some(end) = event.len().checked_sub(4) else {
        return false;
    };
    crate::position::crc32(&event[..end]).to_le_bytes() == event[end..]
}

/// One changed recording: the events, and whether each one's checksum is stale.
struct Case {
    events: Vec<Vec<u8>>,
    stale: Vec<bool>,
}

#[cfg(test)]
fn mutate(recorded: &[Vec<u8>], random: &mut Random) -> Case {
    let mut events = recorded.to_vec();
    let mut stale = vec![false; events.len()];
    for _ in 0..=random.index(4) {
        let i = random.index(events.len());
        match random.index(7) {
            0 => {
                events.remove(i);
                stale.remove(i);
            }
            1 => {
                events.insert(i, events[i].clone());
                stale.insert(i, stale[i]);
            }
            2 if i + 1 < events.len() => {
                events.swap(i, i + 1);
                stale.swap(i, i + 1);
            }
            kind => {
                let event = &mut events[i];
                let original = event.clone();
                change_bytes(event, kind, random);
                if random.chance(85) {
                    fix_length_and_checksum(event);
                } else if *event != original {
                    stale[i] = true;
                }
            }
        }
    }
    Case { events, stale }
}

#[cfg(test)]
/// Flips a bit, overwrites bytes, cuts the event short or lengthens it.
fn change_bytes(event: &mut Vec<u8>, kind: usize, random: &mut Random) {
    let at = random.index(event.len());
    match kind {
        3 => event[at] ^= 1 << random.index(8),
        4 => {
            for byte in event.iter_mut().skip(at).take(1 + random.index(8)) {
                *byte = random.next() as u8;
            }
        }
        5 => event.truncate(HEADER.max(at)),
        _ => {
            let extra: Vec<u8> = (0..1 + random.index(64))
                .map(|_| random.next() as u8)
                .collect();
            let end = event.len().saturating_sub(4);
            event.splice(end..end, extra);
        }
    }
}

#[cfg(test)]
/// Makes the length field and the trailing CRC32 true again, as a server that wrote the
/// changed event itself would.
fn fix_length_and_checksum(event: &mut [u8]) {
    if event.len() < HEADER + 4 {
        return;
    }
    let size = (event.len() as u32).to_le_bytes();
    event[9..13].copy_from_slice(&size);
    let end = event.len() - 4;
    let crc = crate::position::crc32(&event[..end]).to_le_bytes();
    event[end..].copy_from_slice(&crc);
}

/// What the binlog stream does with each packet (mysql_common's `EventStreamReader`, which
/// mysql_async does not re-export): reads the event with the latest format description,
/// then keeps a new format description or table map.
#[derive(Default)]
struct StreamReader {
    format: Option<FormatDescriptionEvent<'static>>,
    tables: HashMap<u64, TableMapEvent<'static>>,
}

impl StreamReader {
    /// Whether the format description in effect says events end with a CRC32.
    fn checksums_announced(&self) -> bool {
        self.format.as_ref().is_some_and(|format| {
            matches!(
                format.footer().get_checksum_alg(),
                Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32))
            )
        })
    }

    fn read(&mut self, bytes: &[u8]) -> std::io::Result<Event> {
        let format = self
            .format
            .get_or_insert_with(|| FormatDescriptionEvent::new(BinlogVersion::Version4));
        let event = Event::read(format, bytes)?;
        match event.header().event_type_raw() {
            FORMAT_DESCRIPTION => {
                let format = event.read_event::<FormatDescriptionEvent<'_>>()?;
                self.format = Some(format.into_owned().with_footer(event.footer()));
            }
            TABLE_MAP => {
                let table = event.read_event::<TableMapEvent<'_>>()?;
                self.tables.insert(table.table_id(), table.into_owned());
            }
            _ => {}
        }
        Ok(event)
    }
}

impl TableMaps for StreamReader {
    fn table_map(&self, table_id: u64) -> Option<&TableMapEvent<'static>> {
        self.tables.get(&table_id)
    }
}

thread_local! {
    /// Where the last panic on this thread happened.
    static PANICKED_AT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Records each panic's location for [`panicked_inside_mysql_common`], then reports it as
/// usual.
fn record_panic_locations() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info.location().map(|l| l.file().to_owned());
            PANICKED_AT.with(|at| *at.borrow_mut() = location);
            previous(info);
        }));
    });
}

fn panicked_inside_mysql_common() -> bool {
    PANICKED_AT.with(|at| {
        at.borrow()
            .as_deref()
            .is_some_and(|file| file.contains("mysql_common"))
    })
}

/// Replays one case as a capture session would; panics (failing the test) on a breach of the
/// contract.
fn check(case_number: u64, case: &Case, schema: &SchemaMap) {
    let mut reader = StreamReader::default();
    let mut assembler = TransactionAssembler::new("openmrs", 2);
    let mut cache = IdentityCache::new(64);
    let formats = AttributeFormats::default();
    for (i, bytes) in case.events.iter().enumerate() {
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| reader.read(bytes)));
        let event = match read {
            Err(_) => {
                assert!(
                    panicked_inside_mysql_common(),
                    "case {case_number}, event {i}: a panic outside mysql_common"
                );
                return; // a session ends here ("malformed event")
            }
            Ok(Err(_)) => return, // the stream reports an error and ends
            Ok(Ok(event)) => event,
        };
        let verified =
            reader.checksums_announced() && event.header().event_type_raw() != FORMAT_DESCRIPTION;
        let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assembler.feed(&event, &reader, schema)
        }));
        let step = match step {
            Err(_) => {
                assert!(
                    panicked_inside_mysql_common(),
                    "case {case_number}, event {i}: the assembler panicked outside mysql_common"
                );
                return;
            }
            Ok(Err(_)) => return, // refused: the session ends with this error
            Ok(Ok(step)) => step,
        };
        if case.stale[i] && verified {
            assert!(
                matches!(step, Step::Continue),
                "case {case_number}, event {i}: an event with a stale checksum was decoded"
            );
        }
        let raw = match step {
            Step::Continue => continue,
            Step::Committed(raw) | Step::SchemaChanged(raw) => raw,
            Step::Chunk { part, .. } => part,
        };
        cache.begin_transaction();
        let mut annotator = Annotator::new(schema, &mut cache, &formats);
        let identities = annotator.learn(&raw.rows);
        let _unresolved = annotator.wanted(images(&raw.rows));
        let transaction = annotator.transaction(&raw, &identities);
        let json = payload_json(Origin::Binlog, &[transaction], None);
        serde_json::from_slice::<BatchPayload>(&json)
            .unwrap_or_else(|e| panic!("case {case_number}, event {i}: unreadable payload: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recording_itself_decodes_into_the_rows_it_holds() {
        let schema = schema();
        let mut reader = StreamReader::default();
        let mut assembler = TransactionAssembler::new("openmrs", 1_000);
        let (mut rows, mut schema_changes) = (0, 0);
        for bytes in recorded_events() {
            let event = reader.read(&bytes).expect("a recorded event reads");
            match assembler
                .feed(&event, &reader, schema)
                .expect("a recorded event decodes")
            {
                Step::Committed(raw) => rows += raw.rows.len(),
                Step::SchemaChanged(_) => schema_changes += 1,
                Step::Continue | Step::Chunk { .. } => {}
            }
        }
        // 3 inserts, 1 + 1 updates, then 1 insert and 1 delete; the two CREATE TABLEs and the
        // ALTER TABLE are schema changes.
        assert_eq!(rows, 7);
        assert_eq!(schema_changes, 3);
    }

    #[test]
    fn changed_recorded_events_are_refused_or_decoded_never_a_panic_in_our_code() {
        record_panic_locations();
        let recorded = recorded_events();
        let schema = schema();
        let mut random = Random(0x7269_6275_7461_7279);
        for case_number in 0..CASES {
            let case = mutate(&recorded, &mut random);
            check(case_number, &case, schema);
        }
    }

    #[test]
    fn the_fuzz_target_accepts_the_recording_and_any_bytes() {
        check_binlog(RECORDED);
        check_binlog(&RECORDED[..RECORDED.len() / 2]);
        check_binlog(b"");
        check_binlog(&[
            0xfe, b'b', b'i', b'n', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
        ]);
    }
}
