//! Turning what MariaDB hands us (binlog row images and binary-protocol result rows, both as
//! `mysql_async::Value`) into travelling [`Value`]s, by the column's declared kind.
//!
//! Both paths must give the same value for the same stored data: verification compares a
//! site's rows with HQ's through this one function. Temporal values become MariaDB's literal
//! text form, which HQ accepts back as a parameter; `TIMESTAMP` is rendered in UTC (sessions
//! that write or compare use `time_zone = '+00:00'`). `FLOAT` is widened from its 32-bit
//! value so that binlog and query paths agree.

use crate::catalog::ColumnKind;
use mysql_async::Value as Sql;
use tributary_model::Value;
use tributary_model::json::{write_f64, write_hex, write_str, write_value};

/// Converts one stored value. Never fails: bytes that are not valid text stay bytes.
pub fn to_value(sql: Sql, kind: ColumnKind) -> Value {
    match sql {
        Sql::NULL => Value::Null,
        Sql::Int(v) => Value::Int(v),
        Sql::UInt(v) => i64::try_from(v).map_or(Value::UInt(v), Value::Int),
        Sql::Float(v) => Value::Float(f64::from(v)),
        Sql::Double(v) if kind == ColumnKind::Float => Value::Float(f64::from(v as f32)),
        Sql::Double(v) => Value::Float(v),
        Sql::Date(y, mo, d, h, mi, s, us) => Value::Text(match kind {
            ColumnKind::Date => date_text(y, mo, d),
            _ => datetime_text(y, mo, d, h, mi, s, us),
        }),
        Sql::Time(negative, days, h, mi, s, us) => {
            let hours = days * 24 + u32::from(h);
            let sign = if negative { "-" } else { "" };
            Value::Text(format!("{sign}{hours:02}:{mi:02}:{s:02}{}", fraction(us)))
        }
        Sql::Bytes(bytes) => bytes_to_value(bytes, kind),
    }
}

/// Writes one stored value as the JSON of its travelling [`Value`]: the same bytes as
/// `json::write_value(&to_value(sql.clone(), kind))`, without building the value (capture
/// writes every plain column of every row this way).
pub fn write_json(out: &mut Vec<u8>, sql: &Sql, kind: ColumnKind) {
    let mut digits = itoa::Buffer::new();
    match sql {
        Sql::NULL => out.extend_from_slice(b"null"),
        Sql::Int(v) => out.extend_from_slice(digits.format(*v).as_bytes()),
        Sql::UInt(v) => out.extend_from_slice(digits.format(*v).as_bytes()),
        Sql::Float(v) => write_f64(out, f64::from(*v)),
        Sql::Double(v) if kind == ColumnKind::Float => write_f64(out, f64::from(*v as f32)),
        Sql::Double(v) => write_f64(out, *v),
        &Sql::Date(y, mo, d, h, mi, s, us) => {
            // Digits, dashes, colons and a space: nothing to escape.
            out.push(b'"');
            push_date(out, y, mo, d);
            if kind != ColumnKind::Date {
                push_time_of_day(out, h, mi, s, us);
            }
            out.push(b'"');
        }
        // Rare forms go through the value.
        Sql::Time(..) => write_value(out, &to_value(sql.clone(), kind)),
        Sql::Bytes(bytes) => match kind {
            ColumnKind::Binary => write_hex(out, bytes),
            ColumnKind::Timestamp | ColumnKind::Integer => {
                write_value(out, &to_value(sql.clone(), kind))
            }
            _ => match std::str::from_utf8(bytes) {
                Ok(text) => write_str(out, text),
                Err(_) => write_hex(out, bytes),
            },
        },
    }
}

fn bytes_to_value(bytes: Vec<u8>, kind: ColumnKind) -> Value {
    match kind {
        ColumnKind::Binary => Value::Bytes(bytes),
        ColumnKind::Timestamp => match std::str::from_utf8(&bytes).ok().and_then(unix_to_text) {
            Some(text) => Value::Text(text),
            None => text_or_bytes(bytes),
        },
        ColumnKind::Integer => match std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.parse().ok())
        {
            Some(v) => Value::Int(v),
            None => text_or_bytes(bytes),
        },
        _ => text_or_bytes(bytes),
    }
}

fn text_or_bytes(bytes: Vec<u8>) -> Value {
    match String::from_utf8(bytes) {
        Ok(text) => Value::Text(text),
        Err(e) => Value::Bytes(e.into_bytes()),
    }
}

/// `YYYY-MM-DD`, as `format!("{y:04}-{mo:02}-{d:02}")` gives it, without the formatting
/// machinery (every obs row carries several dates).
fn date_text(year: u16, month: u8, day: u8) -> String {
    let mut text = Vec::with_capacity(26);
    push_date(&mut text, year, month, day);
    ascii_string(text)
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]`.
fn datetime_text(
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    micros: u32,
) -> String {
    let mut text = Vec::with_capacity(26);
    push_date(&mut text, year, month, day);
    push_time_of_day(&mut text, hour, minute, second, micros);
    ascii_string(text)
}

fn push_date(out: &mut Vec<u8>, year: u16, month: u8, day: u8) {
    if year <= 9999 && month <= 99 && day <= 99 {
        // The usual case, in one copy: every obs row carries several dates.
        let y = usize::from(year);
        out.extend_from_slice(&[
            digit(y / 1000),
            digit(y / 100),
            digit(y / 10),
            digit(y),
            b'-',
            digit(usize::from(month) / 10),
            digit(usize::from(month)),
            b'-',
            digit(usize::from(day) / 10),
            digit(usize::from(day)),
        ]);
        return;
    }
    push_padded(out, u32::from(year), 4);
    out.push(b'-');
    push_padded(out, u32::from(month), 2);
    out.push(b'-');
    push_padded(out, u32::from(day), 2);
}

/// ` HH:MM:SS[.ffffff]`, after a date.
fn push_time_of_day(out: &mut Vec<u8>, hour: u8, minute: u8, second: u8, micros: u32) {
    if hour <= 99 && minute <= 99 && second <= 99 {
        let (h, m, s) = (usize::from(hour), usize::from(minute), usize::from(second));
        out.extend_from_slice(&[
            b' ',
            digit(h / 10),
            digit(h),
            b':',
            digit(m / 10),
            digit(m),
            b':',
            digit(s / 10),
            digit(s),
        ]);
    } else {
        out.push(b' ');
        push_padded(out, u32::from(hour), 2);
        out.push(b':');
        push_padded(out, u32::from(minute), 2);
        out.push(b':');
        push_padded(out, u32::from(second), 2);
    }
    if micros != 0 {
        out.push(b'.');
        push_padded(out, micros, 6);
    }
}

/// The last decimal digit of `value`, as ASCII.
fn digit(value: usize) -> u8 {
    b'0' + (value % 10) as u8
}

/// Text made only of ASCII digits and separators.
fn ascii_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_default()
}

/// Appends `value` in decimal, zero-padded to at least `width` digits.
fn push_padded(out: &mut Vec<u8>, value: u32, width: usize) {
    let mut digits = [b'0'; 10];
    let mut rest = value;
    let mut used = 0;
    while rest > 0 || used == 0 {
        digits[used] = b'0' + (rest % 10) as u8;
        rest /= 10;
        used += 1;
    }
    for _ in used..width {
        out.push(b'0');
    }
    out.extend(digits[..used].iter().rev());
}

fn fraction(micros: u32) -> String {
    if micros == 0 {
        String::new()
    } else {
        format!(".{micros:06}")
    }
}

/// The binlog carries TIMESTAMP as `"<unix seconds>[.<micros>]"`; render it as UTC text.
fn unix_to_text(raw: &str) -> Option<String> {
    let (secs, micros) = match raw.split_once('.') {
        Some((s, f)) => (
            s.parse::<i64>().ok()?,
            format!("{f:0<6}").get(..6)?.parse::<u32>().ok()?,
        ),
        None => (raw.parse::<i64>().ok()?, 0),
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    Some(format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}{}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        fraction(micros)
    ))
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Quotes an identifier for MariaDB (backticks, with embedded backticks doubled).
pub fn quote_ident(name: &str) -> String {
    // By hand: statements quote every column name they list, and `format!` cost a thousand
    // instructions a name in the applier's profile.
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('`');
    for (i, part) in name.split('`').enumerate() {
        if i > 0 {
            quoted.push_str("``");
        }
        quoted.push_str(part);
    }
    quoted.push('`');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind() -> impl Strategy<Value = ColumnKind> {
        prop_oneof![
            Just(ColumnKind::Integer),
            Just(ColumnKind::Float),
            Just(ColumnKind::Double),
            Just(ColumnKind::Decimal),
            Just(ColumnKind::Text),
            Just(ColumnKind::Binary),
            Just(ColumnKind::Date),
            Just(ColumnKind::DateTime),
            Just(ColumnKind::Timestamp),
            Just(ColumnKind::Time),
            Just(ColumnKind::Year),
            Just(ColumnKind::Other),
        ]
    }

    fn stored() -> impl Strategy<Value = Sql> {
        prop_oneof![
            Just(Sql::NULL),
            any::<i64>().prop_map(Sql::Int),
            any::<u64>().prop_map(Sql::UInt),
            any::<f32>().prop_map(Sql::Float),
            any::<f64>().prop_map(Sql::Double),
            Just(Sql::Double(f64::NAN)),
            any::<(u16, u8, u8, u8, u8, u8, u32)>()
                .prop_map(|(y, mo, d, h, mi, s, us)| Sql::Date(y, mo, d, h, mi, s, us)),
            any::<(bool, u32, u8, u8, u8, u32)>().prop_map(|(n, d, h, mi, s, us)| Sql::Time(
                n,
                d % 40,
                h,
                mi,
                s,
                us
            )),
            any::<String>().prop_map(|s| Sql::Bytes(s.into_bytes())),
            "[0-9]{1,12}(\\.[0-9]{1,6})?".prop_map(|s| Sql::Bytes(s.into_bytes())),
            "-?[0-9]{1,20}".prop_map(|s| Sql::Bytes(s.into_bytes())),
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(Sql::Bytes),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn written_json_is_the_values_json(sql in stored(), kind in kind()) {
            let mut direct = Vec::new();
            write_json(&mut direct, &sql, kind);
            let mut through_value = Vec::new();
            write_value(&mut through_value, &to_value(sql, kind));
            prop_assert_eq!(
                String::from_utf8_lossy(&direct),
                String::from_utf8_lossy(&through_value)
            );
        }
    }

    #[test]
    fn temporal_values_render_as_mariadb_literals() {
        assert_eq!(
            to_value(Sql::Date(2024, 1, 31, 0, 0, 0, 0), ColumnKind::Date),
            Value::Text("2024-01-31".into())
        );
        assert_eq!(
            to_value(Sql::Date(2024, 1, 31, 8, 5, 9, 0), ColumnKind::DateTime),
            Value::Text("2024-01-31 08:05:09".into())
        );
        assert_eq!(
            to_value(Sql::Time(true, 1, 2, 3, 4, 5), ColumnKind::Time),
            Value::Text("-26:03:04.000005".into())
        );
    }

    #[test]
    fn temporal_text_matches_the_formatting_machinery() {
        for (y, mo, d, h, mi, s, us) in [
            (0u16, 0u8, 0u8, 0u8, 0u8, 0u8, 0u32),
            (2024, 2, 29, 23, 59, 59, 123_456),
            (9999, 12, 31, 0, 0, 1, 1),
            (65535, 255, 255, 255, 255, 255, 16_777_215),
            (1, 1, 1, 1, 1, 1, 10),
        ] {
            assert_eq!(date_text(y, mo, d), format!("{y:04}-{mo:02}-{d:02}"));
            assert_eq!(
                datetime_text(y, mo, d, h, mi, s, us),
                format!(
                    "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}{}",
                    fraction(us)
                )
            );
        }
    }

    #[test]
    fn binlog_timestamps_become_utc_text() {
        let v = to_value(
            Sql::Bytes(b"1704164645.678000".to_vec()),
            ColumnKind::Timestamp,
        );
        assert_eq!(v, Value::Text("2024-01-02 03:04:05.678000".into()));
        assert_eq!(unix_to_text("0"), Some("1970-01-01 00:00:00".into()));
        assert_eq!(unix_to_text("garbage"), None);
    }

    #[test]
    fn floats_agree_between_binlog_and_query_paths() {
        let from_binlog = to_value(Sql::Float(0.1), ColumnKind::Float);
        let from_query = to_value(Sql::Double(0.1), ColumnKind::Float);
        assert_eq!(from_binlog, from_query);
    }

    #[test]
    fn invalid_utf8_text_stays_bytes() {
        assert_eq!(
            to_value(Sql::Bytes(vec![0xff, 0xfe]), ColumnKind::Text),
            Value::Bytes(vec![0xff, 0xfe])
        );
        assert_eq!(
            to_value(Sql::Bytes(b"42".to_vec()), ColumnKind::Integer),
            Value::Int(42)
        );
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a`b"), "`a``b`");
        assert_eq!(quote_ident("obs_id"), "`obs_id`");
        assert_eq!(quote_ident(""), "``");
        assert_eq!(quote_ident("`"), "````");
        assert_eq!(quote_ident("``x`"), "`````x```");
        assert_eq!(quote_ident("é`ü"), "`é``ü`");
    }
}
