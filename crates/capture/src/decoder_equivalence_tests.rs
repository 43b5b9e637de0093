//! The prepared row codecs against mysql_common's generic row decoder, on the same event
//! bytes: random tables of every type the codecs cover, random rows (NULLs included), insert,
//! update and delete events, with and without column names in the table map. Both must give
//! the same column names, kinds and travelling values. Malformed rows must give an error, never
//! a panic.
//!
//! The event bytes follow the binlog v4 layout (MariaDB `sql/log_event.h`): TABLE_MAP (19) and
//! the v1 rows events MariaDB writes (23 to 25).

use crate::binlog::{Decoder, RawRow, decode_rows_event};
use crate::table_layout::Layouts;
use mysql_async::binlog::BinlogChecksumAlg;
use mysql_async::binlog::BinlogVersion;
use mysql_async::binlog::events::{
    BinlogEventFooter, Event, EventData, FormatDescriptionEvent, TableMapEvent,
};
use tributary_model::Value;
use tributary_schema::{CatalogColumn, ColumnKind, to_value};

/// A small deterministic generator (xorshift64*), so failures reproduce (also the event
/// fuzzing's).
pub(crate) struct Random(pub(crate) u64);

impl Random {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// An index below `n`.
    pub(crate) fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One column: its binlog type code, TABLE_MAP metadata, whether it is numeric (signedness
/// metadata), and whether it is unsigned.
#[derive(Clone)]
struct Column {
    type_code: u8,
    meta: Vec<u8>,
    numeric: bool,
    unsigned: bool,
    /// ENUM/SET member names.
    members: Vec<String>,
    is_enum: bool,
    is_set: bool,
}

fn random_column(random: &mut Random) -> Column {
    let unsigned = random.chance(50);
    let plain = |type_code, meta: Vec<u8>, numeric| Column {
        type_code,
        meta,
        numeric,
        unsigned: numeric && unsigned,
        members: Vec::new(),
        is_enum: false,
        is_set: false,
    };
    match random.below(17) {
        0 => plain(1, vec![], true),  // TINY
        1 => plain(2, vec![], true),  // SHORT
        2 => plain(9, vec![], true),  // INT24
        3 => plain(3, vec![], true),  // LONG
        4 => plain(8, vec![], true),  // LONGLONG
        5 => plain(4, vec![4], true), // FLOAT
        6 => plain(5, vec![8], true), // DOUBLE
        7 => {
            let precision = 1 + random.below(65) as u8;
            let scale = random.below(u64::from(precision.min(30)) + 1) as u8;
            plain(246, vec![precision, scale], true) // NEWDECIMAL
        }
        8 => plain(13, vec![], true), // YEAR: counted as numeric by the SIGNEDNESS field
        9 => plain(10, vec![], false), // DATE
        10 => plain(18, vec![random.below(7) as u8], false), // DATETIME2
        11 => plain(17, vec![random.below(7) as u8], false), // TIMESTAMP2
        12 => plain(19, vec![random.below(7) as u8], false), // TIME2
        13 => plain(
            16,
            vec![random.below(8) as u8, random.below(9) as u8],
            false,
        ), // BIT
        14 => {
            let length_bytes = 1 + random.below(4) as u8;
            plain(252, vec![length_bytes], false) // BLOB / TEXT
        }
        15 => {
            let max = if random.chance(50) { 255u16 } else { 1_000 };
            plain(15, max.to_le_bytes().to_vec(), false) // VARCHAR
        }
        _ => {
            let count = 1 + random.below(10) as usize;
            let members: Vec<String> = (0..count).map(|i| format!("m{i}")).collect();
            let is_enum = random.chance(50);
            Column {
                type_code: 254, // STRING carrying ENUM (247) or SET (248)
                meta: vec![if is_enum { 247 } else { 248 }, if is_enum { 1 } else { 2 }],
                numeric: false,
                unsigned: false,
                members,
                is_enum,
                is_set: !is_enum,
            }
        }
    }
}

/// A well-formed value for `column`.
fn random_value(random: &mut Random, column: &Column) -> Vec<u8> {
    match column.type_code {
        1 => random.bytes(1),
        2 => random.bytes(2),
        9 => random.bytes(3),
        3 => random.bytes(4),
        8 => random.bytes(8),
        4 => (random.below(2_000_000) as f32 / 7.0)
            .to_le_bytes()
            .to_vec(),
        5 => (random.next() as i64 as f64 / 3.0).to_le_bytes().to_vec(),
        246 => decimal_bytes(random, column.meta[0], column.meta[1]),
        13 => vec![1 + random.below(255) as u8],
        10 => {
            let packed = (1000 + random.below(9000)) << 9 | (1 + random.below(12)) << 5 | 1;
            packed.to_le_bytes()[..3].to_vec()
        }
        18 => {
            let ym = (1000 + random.below(9000)) * 13 + 1 + random.below(12);
            let ymd = ym << 5 | (1 + random.below(28));
            let hms = random.below(24) << 12 | random.below(60) << 6 | random.below(60);
            let int_part = (ymd << 17 | hms) + 0x80_0000_0000;
            let mut bytes = int_part.to_be_bytes()[3..].to_vec();
            bytes.extend(fraction_bytes(random, column.meta[0]));
            bytes
        }
        17 => {
            let mut bytes = (random.next() as u32).to_be_bytes().to_vec();
            bytes.extend(fraction_bytes(random, column.meta[0]));
            bytes
        }
        19 => time_bytes(random, column.meta[0]),
        16 => random
            .bytes((usize::from(column.meta[1]) * 8 + usize::from(column.meta[0])).div_ceil(8)),
        252 => {
            let length = random.below(40) as usize;
            let mut bytes = length.to_le_bytes()[..usize::from(column.meta[0])].to_vec();
            bytes.extend(random.bytes(length));
            bytes
        }
        15 => {
            let length = random.below(40) as usize;
            let mut bytes = vec![length as u8];
            if u16::from_le_bytes([column.meta[0], column.meta[1]]) >= 256 {
                bytes.push(0);
            }
            bytes.extend(random.bytes(length));
            bytes
        }
        _ if column.is_enum => vec![random.below(column.members.len() as u64 + 1) as u8],
        _ => random.bytes(2),
    }
}

fn fraction_bytes(random: &mut Random, decimals: u8) -> Vec<u8> {
    match decimals {
        1 | 2 => vec![random.below(100) as u8],
        3 | 4 => (random.below(10_000) as u16).to_be_bytes().to_vec(),
        5 | 6 => (random.below(1_000_000) as u32).to_be_bytes()[1..].to_vec(),
        _ => Vec::new(),
    }
}

/// TIME2: non-negative values only where mysql_common's decoder is known to be wrong
/// (negative TIME(1)/TIME(2) with a fraction; the codec's own tests cover those).
fn time_bytes(random: &mut Random, decimals: u8) -> Vec<u8> {
    let hms = (random.below(839) << 12 | random.below(60) << 6 | random.below(60)) as i64;
    let negative = decimals > 2 && random.chance(50);
    let int_part = if negative { -hms } else { hms } + 0x80_0000;
    let mut bytes = int_part.to_be_bytes()[5..].to_vec();
    match decimals {
        1 | 2 => bytes.push(random.below(100) as u8),
        3 | 4 => {
            let fraction = random.below(10_000) as u16;
            bytes.extend(fraction.to_be_bytes());
        }
        5 | 6 => {
            let packed = ((hms << 24) + random.below(1_000_000) as i64)
                * if negative { -1 } else { 1 }
                + 0x8000_0000_0000;
            bytes = packed.to_be_bytes()[2..].to_vec();
        }
        _ => {}
    }
    bytes
}

fn decimal_bytes(random: &mut Random, precision: u8, scale: u8) -> Vec<u8> {
    const BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
    let mut groups = Vec::new();
    let integral = precision - scale;
    if !integral.is_multiple_of(9) {
        groups.push(integral % 9);
    }
    groups.extend(std::iter::repeat_n(9, usize::from(integral / 9)));
    groups.extend(std::iter::repeat_n(9, usize::from(scale / 9)));
    if !scale.is_multiple_of(9) {
        groups.push(scale % 9);
    }
    let negative = random.chance(50);
    let mut bytes: Vec<u8> = Vec::new();
    for digits in groups {
        let value = random.below(10u64.pow(u32::from(digits)));
        let width = BYTES[usize::from(digits)];
        bytes.extend(&value.to_be_bytes()[8 - width..]);
    }
    if let Some(first) = bytes.first_mut() {
        *first ^= 0x80;
    }
    if negative {
        bytes.iter_mut().for_each(|b| *b = !*b);
    }
    bytes
}

fn lenenc(n: usize) -> Vec<u8> {
    if n < 251 {
        vec![n as u8]
    } else {
        let mut bytes = vec![0xfc];
        bytes.extend((n as u16).to_le_bytes());
        bytes
    }
}

fn event(type_code: u8, body: &[u8]) -> Vec<u8> {
    let size = 19 + body.len() + 4;
    let mut bytes = Vec::with_capacity(size);
    bytes.extend(1_700_000_000u32.to_le_bytes());
    bytes.push(type_code);
    bytes.extend(1u32.to_le_bytes());
    bytes.extend((size as u32).to_le_bytes());
    bytes.extend(4_096u32.to_le_bytes());
    bytes.extend(0u16.to_le_bytes());
    bytes.extend(body);
    bytes.extend(0u32.to_le_bytes());
    bytes
}

fn table_map(columns: &[Column], names: bool, latin1: bool) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(&42u64.to_le_bytes()[..6]);
    body.extend(1u16.to_le_bytes());
    for name in [&b"site"[..], b"module_table"] {
        body.push(name.len() as u8);
        body.extend(name);
        body.push(0);
    }
    body.extend(lenenc(columns.len()));
    body.extend(columns.iter().map(|c| c.type_code));
    let meta: Vec<u8> = columns.iter().flat_map(|c| c.meta.clone()).collect();
    body.extend(lenenc(meta.len()));
    body.extend(meta);
    body.extend(vec![0xff; columns.len().div_ceil(8)]);
    let mut field = |kind: u8, value: Vec<u8>| {
        body.push(kind);
        body.extend(lenenc(value.len()));
        body.extend(value);
    };
    // SIGNEDNESS: one bit per numeric column, most significant first.
    let numeric: Vec<bool> = columns
        .iter()
        .filter(|c| c.numeric)
        .map(|c| c.unsigned)
        .collect();
    if !numeric.is_empty() {
        let mut bits = vec![0u8; numeric.len().div_ceil(8)];
        for (i, unsigned) in numeric.iter().enumerate() {
            if *unsigned {
                bits[i / 8] |= 0x80 >> (i % 8);
            }
        }
        field(1, bits);
    }
    // DEFAULT_CHARSET.
    field(2, lenenc(if latin1 { 8 } else { 45 }));
    if names {
        let mut value = Vec::new();
        for (i, _) in columns.iter().enumerate() {
            let name = format!("column_{i}");
            value.extend(lenenc(name.len()));
            value.extend(name.bytes());
        }
        field(4, value);
    }
    for (kind, wanted) in [(5u8, true), (6u8, false)] {
        let mut value = Vec::new();
        for column in columns
            .iter()
            .filter(|c| if wanted { c.is_set } else { c.is_enum })
        {
            value.extend(lenenc(column.members.len()));
            for member in &column.members {
                value.extend(lenenc(member.len()));
                value.extend(member.bytes());
            }
        }
        if !value.is_empty() {
            field(kind, value);
        }
    }
    event(19, &body)
}

/// A rows event over the columns `present` marks (every image of it holds those).
fn rows_event(type_code: u8, present: &[bool], rows: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(&42u64.to_le_bytes()[..6]);
    body.extend(1u16.to_le_bytes());
    body.extend(lenenc(present.len()));
    let mut bitmap = vec![0u8; present.len().div_ceil(8)];
    for (i, _) in present.iter().enumerate().filter(|(_, p)| **p) {
        bitmap[i / 8] |= 1 << (i % 8);
    }
    body.extend(&bitmap);
    if type_code == 24 {
        body.extend(&bitmap);
    }
    body.extend(rows);
    event(type_code, &body)
}

/// One row image of the `present` columns: a null bitmap over them, then their values.
fn image(random: &mut Random, columns: &[Column], present: &[bool]) -> Vec<u8> {
    let held: Vec<&Column> = columns
        .iter()
        .zip(present)
        .filter_map(|(column, present)| present.then_some(column))
        .collect();
    let mut nulls = vec![0u8; held.len().div_ceil(8)];
    let mut values = Vec::new();
    for (i, column) in held.into_iter().enumerate() {
        if random.chance(15) {
            nulls[i / 8] |= 1 << (i % 8);
        } else {
            values.extend(random_value(random, column));
        }
    }
    nulls.extend(values);
    nulls
}

fn read(bytes: &[u8]) -> Event {
    let fde = FormatDescriptionEvent::new(BinlogVersion::Version4).with_footer(
        BinlogEventFooter::new(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_CRC32),
    );
    Event::read(&fde, bytes).expect("well-formed event")
}

type Decoded = Vec<(
    Option<Vec<(String, ColumnKind, Value)>>,
    Option<Vec<(String, ColumnKind, Value)>>,
)>;

fn travelling(rows: Vec<RawRow>) -> Decoded {
    let convert = |image: Option<crate::binlog::RawImage>| {
        image.map(|image| {
            let (columns, values) = image.into_parts();
            columns
                .iter()
                .zip(values)
                .map(|(c, v)| (c.name.to_string(), c.kind, to_value(v, c.kind)))
                .collect::<Vec<_>>()
        })
    };
    rows.into_iter()
        .map(|r| (convert(r.before), convert(r.after)))
        .collect()
}

fn decode(
    rows_bytes: &[u8],
    tme: &TableMapEvent<'static>,
    ordinal: &[CatalogColumn],
    decoder: Decoder,
) -> Result<Decoded, String> {
    let event = read(rows_bytes);
    let Ok(Some(EventData::RowsEvent(rows))) = event.read_data() else {
        return Err("not a rows event".into());
    };
    let layout = Layouts::default()
        .layout(tme, ordinal, None)
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    decode_rows_event(&rows, tme, &layout, decoder, |row| out.push(row))
        .map_err(|e| e.to_string())?;
    Ok(travelling(out))
}

#[test]
fn a_rows_event_of_no_column_with_row_data_is_refused_rather_than_read_forever() {
    let mut random = Random(0x5eed_0000_0000_0e11);
    let columns: Vec<Column> = (0..3).map(|_| random_column(&mut random)).collect();
    let tme_event = read(&table_map(&columns, true, false));
    let Ok(Some(EventData::TableMapEvent(tme))) = tme_event.read_data() else {
        panic!("table map did not parse");
    };
    let tme = tme.into_owned();
    let none_present = [false; 3];
    for type_code in [23u8, 24, 25] {
        // Images of no column take no bytes: these two bytes would be rows without end.
        let bytes = rows_event(type_code, &none_present, &[0xab, 0xcd]);
        for decoder in [Decoder::Prepared, Decoder::Generic] {
            let refused = decode(&bytes, &tme, &[], decoder).expect_err("refused");
            assert!(refused.contains("marks no column present"), "{refused}");
        }
        // Without row data it is an event of no rows.
        let empty = rows_event(type_code, &none_present, &[]);
        assert_eq!(decode(&empty, &tme, &[], Decoder::Prepared), Ok(Vec::new()));
    }
}

#[test]
fn prepared_codecs_decode_exactly_what_the_generic_decoder_does() {
    let mut random = Random(0x5eed_cafe_f00d_0001);
    let mut compared = 0;
    for case in 0..1_500 {
        let columns: Vec<Column> = (0..1 + random.below(12))
            .map(|_| random_column(&mut random))
            .collect();
        let names = random.chance(70);
        let tme_event = read(&table_map(&columns, names, random.chance(20)));
        let Ok(Some(EventData::TableMapEvent(tme))) = tme_event.read_data() else {
            panic!("case {case}: table map did not parse");
        };
        let tme = tme.into_owned();
        let ordinal: Vec<CatalogColumn> = if names {
            Vec::new()
        } else {
            columns
                .iter()
                .enumerate()
                .map(|(i, c)| CatalogColumn {
                    name: format!("ordinal_{i}"),
                    kind: ColumnKind::Other,
                    nullable: true,
                    auto_increment: false,
                    unsigned: c.unsigned,
                })
                .collect()
        };
        let type_code = [23u8, 24, 25][random.below(3) as usize];
        // Mostly full images (what `binlog_row_image=FULL` writes), sometimes a subset.
        let partial = random.chance(30);
        let present: Vec<bool> = columns
            .iter()
            .map(|_| !partial || random.chance(60))
            .collect();
        let mut rows = Vec::new();
        for _ in 0..1 + random.below(4) {
            rows.extend(image(&mut random, &columns, &present));
            if type_code == 24 {
                rows.extend(image(&mut random, &columns, &present));
            }
        }
        let bytes = rows_event(type_code, &present, &rows);
        let generic = std::panic::catch_unwind(|| decode(&bytes, &tme, &ordinal, Decoder::Generic));
        let prepared = decode(&bytes, &tme, &ordinal, Decoder::Prepared);
        match generic {
            Ok(Ok(expected)) => {
                assert_eq!(prepared, Ok(expected), "case {case}");
                compared += 1;
            }
            Ok(Err(e)) => panic!(
                "case {case}: the generic decoder refused a well-formed row: {e} (types {:?}, names {names})",
                columns
                    .iter()
                    .map(|c| (c.type_code, c.meta.clone()))
                    .collect::<Vec<_>>()
            ),
            Err(_) => {} // mysql_common panicked; the prepared path must merely not.
        }
        // Truncated and extended rows: an error, never a panic.
        for cut in [1, rows.len() / 2] {
            let truncated =
                rows_event(type_code, &present, &rows[..rows.len().saturating_sub(cut)]);
            let _ = decode(&truncated, &tme, &ordinal, Decoder::Prepared);
        }
        let mut extended = rows.clone();
        let extra = 1 + random.below(30) as usize;
        extended.extend(random.bytes(extra));
        let _ = decode(
            &rows_event(type_code, &present, &extended),
            &tme,
            &ordinal,
            Decoder::Prepared,
        );
    }
    assert!(compared > 1_400, "only {compared} cases compared");
}
