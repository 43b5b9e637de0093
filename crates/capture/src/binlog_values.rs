//! Prepared value codecs: how one column's values are laid out in a row image, decided once
//! per TABLE_MAP, then applied to every row without rebuilding column descriptions.
//!
//! Each codec reads exactly the bytes MariaDB (and MySQL) write for its type and returns the
//! value in the form mysql_common's generic decoder gives, so both paths feed the same
//! corrections ([`crate::binlog`]'s `normalise`) and the same conversion to travelling values.
//! Two deliberate differences, both where the generic decoder is wrong: a negative `TIME(1)`
//! or `TIME(2)` with a fraction decodes correctly (mysql_common underflows), and `YEAR` 0000
//! stays 0000 (mysql_common says 1900).
//!
//! Types without a codec here (MySQL's binary JSON, the pre-5.6 temporal formats, vectors)
//! make the whole table use the generic decoder.

use mysql_async::Value as Sql;
use mysql_async::consts::ColumnType;

/// A row image ended before the value of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated;

/// How the values of one column are read from a row image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Tiny {
        unsigned: bool,
    },
    Short {
        unsigned: bool,
    },
    Int24 {
        unsigned: bool,
    },
    Long {
        unsigned: bool,
    },
    LongLong {
        unsigned: bool,
    },
    Float,
    Double,
    Decimal {
        precision: u8,
        scale: u8,
    },
    Year,
    Date,
    DateTime2 {
        decimals: u8,
    },
    Timestamp2 {
        decimals: u8,
    },
    Time2 {
        decimals: u8,
    },
    Bit {
        bytes: usize,
    },
    /// 1-based member index of 1 or 2 bytes.
    Enum {
        bytes: u8,
    },
    /// Member bitmap of 1 to 8 bytes.
    Set {
        bytes: u8,
    },
    /// Text or bytes behind a little-endian length of 1 to 4 bytes (BLOB, TEXT, GEOMETRY,
    /// MariaDB's JSON).
    Blob {
        length_bytes: u8,
    },
    /// VARCHAR, VARBINARY and CHAR: a length of 1 byte, or 2 when the column may hold 256
    /// bytes or more.
    Short255 {
        long: bool,
    },
}

const TIMEF_INT_OFS: i64 = 0x80_0000;
const TIMEF_OFS: i64 = 0x8000_0000_0000;
const DATETIMEF_INT_OFS: i64 = 0x80_0000_0000;

impl Codec {
    /// The codec for a column of `column_type` with TABLE_MAP metadata `meta`, or None when
    /// the type needs the generic decoder (or the metadata is not what the type requires).
    pub fn for_column(column_type: ColumnType, meta: &[u8], unsigned: bool) -> Option<Codec> {
        use ColumnType::*;
        let byte = |i: usize| meta.get(i).copied();
        Some(match column_type {
            MYSQL_TYPE_TINY => Codec::Tiny { unsigned },
            MYSQL_TYPE_SHORT => Codec::Short { unsigned },
            MYSQL_TYPE_INT24 => Codec::Int24 { unsigned },
            MYSQL_TYPE_LONG => Codec::Long { unsigned },
            MYSQL_TYPE_LONGLONG => Codec::LongLong { unsigned },
            MYSQL_TYPE_FLOAT => Codec::Float,
            MYSQL_TYPE_DOUBLE => Codec::Double,
            MYSQL_TYPE_NEWDECIMAL => {
                let (precision, scale) = (byte(0)?, byte(1)?);
                if scale > precision || precision > 65 || scale > 38 {
                    return None;
                }
                Codec::Decimal { precision, scale }
            }
            MYSQL_TYPE_YEAR => Codec::Year,
            MYSQL_TYPE_NEWDATE | MYSQL_TYPE_DATE if meta.is_empty() => Codec::Date,
            MYSQL_TYPE_DATETIME2 => Codec::DateTime2 {
                decimals: byte(0)?.min(6),
            },
            MYSQL_TYPE_TIMESTAMP2 => Codec::Timestamp2 {
                decimals: byte(0)?.min(6),
            },
            MYSQL_TYPE_TIME2 => Codec::Time2 {
                decimals: byte(0)?.min(6),
            },
            MYSQL_TYPE_BIT => Codec::Bit {
                bytes: (usize::from(byte(1)?) * 8 + usize::from(byte(0)?)).div_ceil(8),
            },
            MYSQL_TYPE_ENUM => match byte(1)? {
                bytes @ (1 | 2) => Codec::Enum { bytes },
                _ => return None,
            },
            MYSQL_TYPE_SET => match byte(1)? {
                bytes @ 1..=8 => Codec::Set { bytes },
                _ => return None,
            },
            MYSQL_TYPE_BLOB
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB
            | MYSQL_TYPE_GEOMETRY => match byte(0)? {
                length_bytes @ 1..=4 => Codec::Blob { length_bytes },
                _ => return None,
            },
            MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => {
                let max = u16::from_le_bytes([byte(0)?, byte(1)?]);
                Codec::Short255 { long: max >= 256 }
            }
            MYSQL_TYPE_STRING => {
                let (b0, b1) = (usize::from(byte(0)?), usize::from(byte(1)?));
                let max = if b0 & 0x30 != 0x30 {
                    b1 | (((b0 & 0x30) ^ 0x30) << 4)
                } else {
                    b1
                };
                Codec::Short255 { long: max >= 256 }
            }
            _ => return None,
        })
    }

    /// Reads one value from the front of `input`, advancing it.
    pub fn read(&self, input: &mut &[u8]) -> Result<Sql, Truncated> {
        Ok(match *self {
            Codec::Tiny { unsigned } => {
                let [b] = take::<1>(input)?;
                Sql::Int(if unsigned {
                    i64::from(b)
                } else {
                    i64::from(b as i8)
                })
            }
            Codec::Short { unsigned } => {
                let bytes = take::<2>(input)?;
                Sql::Int(if unsigned {
                    i64::from(u16::from_le_bytes(bytes))
                } else {
                    i64::from(i16::from_le_bytes(bytes))
                })
            }
            Codec::Int24 { unsigned } => {
                let [a, b, c] = take::<3>(input)?;
                let value = i64::from(u32::from_le_bytes([a, b, c, 0]));
                Sql::Int(if unsigned || value < 0x80_0000 {
                    value
                } else {
                    value - 0x100_0000
                })
            }
            Codec::Long { unsigned } => {
                let bytes = take::<4>(input)?;
                Sql::Int(if unsigned {
                    i64::from(u32::from_le_bytes(bytes))
                } else {
                    i64::from(i32::from_le_bytes(bytes))
                })
            }
            Codec::LongLong { unsigned } => {
                let bytes = take::<8>(input)?;
                if unsigned {
                    Sql::UInt(u64::from_le_bytes(bytes))
                } else {
                    Sql::Int(i64::from_le_bytes(bytes))
                }
            }
            Codec::Float => Sql::Float(f32::from_le_bytes(take::<4>(input)?)),
            Codec::Double => Sql::Double(f64::from_le_bytes(take::<8>(input)?)),
            Codec::Decimal { precision, scale } => {
                let size = decimal_size(precision, scale);
                Sql::Bytes(decimal_text(split(input, size)?, precision, scale).into_bytes())
            }
            Codec::Year => {
                let [y] = take::<1>(input)?;
                Sql::Bytes(if y == 0 {
                    b"0000".to_vec()
                } else {
                    (1900 + u32::from(y)).to_string().into_bytes()
                })
            }
            Codec::Date => {
                let [a, b, c] = take::<3>(input)?;
                let packed = u32::from_le_bytes([a, b, c, 0]);
                Sql::Date(
                    (packed >> 9) as u16,
                    ((packed >> 5) & 15) as u8,
                    (packed & 31) as u8,
                    0,
                    0,
                    0,
                    0,
                )
            }
            Codec::DateTime2 { decimals } => {
                let int_part = be_uint(split(input, 5)?) as i64 - DATETIMEF_INT_OFS;
                let fraction = signed_fraction(input, decimals)?;
                datetime_from_packed((int_part << 24) + fraction)
            }
            Codec::Timestamp2 { decimals } => {
                let seconds = u32::from_be_bytes(take::<4>(input)?) as i32;
                let micros = signed_fraction(input, decimals)?;
                Sql::Bytes(if micros == 0 {
                    seconds.to_string().into_bytes()
                } else {
                    format!("{seconds}.{micros:06}").into_bytes()
                })
            }
            Codec::Time2 { decimals } => time_from_packed(time_packed(input, decimals)?),
            Codec::Bit { bytes } => Sql::Bytes(split(input, bytes)?.to_vec()),
            Codec::Enum { bytes } => Sql::Int(be_or_le_uint(split(input, usize::from(bytes))?)),
            Codec::Set { bytes } => Sql::Bytes(split(input, usize::from(bytes))?.to_vec()),
            Codec::Blob { length_bytes } => {
                let length = le_uint(split(input, usize::from(length_bytes))?);
                let length = usize::try_from(length).map_err(|_| Truncated)?;
                Sql::Bytes(split(input, length)?.to_vec())
            }
            Codec::Short255 { long } => {
                let length = le_uint(split(input, if long { 2 } else { 1 })?) as usize;
                Sql::Bytes(split(input, length)?.to_vec())
            }
        })
    }
}

fn split<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], Truncated> {
    if input.len() < n {
        return Err(Truncated);
    }
    let (head, tail) = input.split_at(n);
    *input = tail;
    Ok(head)
}

fn take<const N: usize>(input: &mut &[u8]) -> Result<[u8; N], Truncated> {
    split(input, N)?.try_into().map_err(|_| Truncated)
}

fn le_uint(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0, |acc, b| (acc << 8) | u64::from(*b))
}

fn be_uint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |acc, b| (acc << 8) | u64::from(*b))
}

/// ENUM indexes are little-endian.
fn be_or_le_uint(bytes: &[u8]) -> i64 {
    le_uint(bytes) as i64
}

fn be_int(bytes: &[u8]) -> i64 {
    let unsigned = be_uint(bytes);
    let bits = 8 * bytes.len() as u32;
    if bits == 0 || bits >= 64 {
        return unsigned as i64;
    }
    // Sign-extend from the top bit of the field.
    let shift = 64 - bits;
    ((unsigned << shift) as i64) >> shift
}

/// The fractional part of DATETIME2 and TIMESTAMP2, in microseconds, stored big-endian in
/// (decimals + 1) / 2 bytes as a signed number.
fn signed_fraction(input: &mut &[u8], decimals: u8) -> Result<i64, Truncated> {
    Ok(match decimals {
        1 | 2 => be_int(split(input, 1)?) * 10_000,
        3 | 4 => be_int(split(input, 2)?) * 100,
        5 | 6 => be_int(split(input, 3)?),
        _ => 0,
    })
}

/// TIME2 as a packed number (`int_part << 24 | microseconds`), as MariaDB's
/// `my_time_packed_from_binary` computes it: negative values store their fraction reversed.
fn time_packed(input: &mut &[u8], decimals: u8) -> Result<i64, Truncated> {
    Ok(match decimals {
        1..=4 => {
            let mut int_part = be_uint(split(input, 3)?) as i64 - TIMEF_INT_OFS;
            let (width, scale) = if decimals <= 2 { (1, 10_000) } else { (2, 100) };
            let mut fraction = be_uint(split(input, width)?) as i64;
            if int_part < 0 && fraction != 0 {
                int_part += 1;
                fraction -= 1 << (8 * width);
            }
            (int_part << 24) + fraction * scale
        }
        5 | 6 => be_uint(split(input, 6)?) as i64 - TIMEF_OFS,
        _ => (be_uint(split(input, 3)?) as i64 - TIMEF_INT_OFS) << 24,
    })
}

fn time_from_packed(packed: i64) -> Sql {
    let negative = packed < 0;
    let magnitude = packed.unsigned_abs();
    let hms = magnitude >> 24;
    let hours = ((hms >> 12) % (1 << 10)) as u32;
    Sql::Time(
        negative,
        hours / 24,
        (hours % 24) as u8,
        ((hms >> 6) % (1 << 6)) as u8,
        (hms % (1 << 6)) as u8,
        (magnitude % (1 << 24)) as u32,
    )
}

fn datetime_from_packed(packed: i64) -> Sql {
    let magnitude = packed.unsigned_abs();
    let micros = magnitude % (1 << 24);
    let ymdhms = magnitude >> 24;
    let ymd = ymdhms >> 17;
    let ym = ymd >> 5;
    let hms = ymdhms % (1 << 17);
    Sql::Date(
        (ym / 13) as u16,
        (ym % 13) as u8,
        (ymd % (1 << 5)) as u8,
        (hms >> 12) as u8,
        ((hms >> 6) % (1 << 6)) as u8,
        (hms % (1 << 6)) as u8,
        micros as u32,
    )
}

const DIGITS_PER_WORD: u8 = 9;
const BYTES_FOR_DIGITS: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];

/// Bytes of a DECIMAL(precision, scale) in its binary form.
fn decimal_size(precision: u8, scale: u8) -> usize {
    let integral = precision - scale;
    usize::from(integral / DIGITS_PER_WORD) * 4
        + BYTES_FOR_DIGITS[usize::from(integral % DIGITS_PER_WORD)]
        + usize::from(scale / DIGITS_PER_WORD) * 4
        + BYTES_FOR_DIGITS[usize::from(scale % DIGITS_PER_WORD)]
}

/// MariaDB's binary DECIMAL as text: groups of nine digits in big-endian words, a leading
/// partial group for the integral digits and a trailing one for the fraction, the sign in the
/// top bit (inverted), negative values stored with every bit flipped. Leading zeros of the
/// integral part are dropped (at least "0" stays); the fraction keeps `scale` digits.
fn decimal_text(bytes: &[u8], precision: u8, scale: u8) -> String {
    let mut raw = bytes.to_vec();
    if let Some(first) = raw.first_mut() {
        *first ^= 0x80;
    }
    let negative = raw.first().is_some_and(|b| b & 0x80 != 0);
    let mask: i64 = if negative { -1 } else { 0 };
    let mut input = raw.as_slice();
    let mut word = |digits: u8| -> u32 {
        let width = BYTES_FOR_DIGITS[usize::from(digits)];
        let value = split(&mut input, width).map_or(0, be_int) ^ mask;
        u32::try_from(value).unwrap_or(0)
    };
    let integral = precision - scale;
    let mut integral_digits = String::new();
    if !integral.is_multiple_of(DIGITS_PER_WORD) {
        let digits = integral % DIGITS_PER_WORD;
        integral_digits.push_str(&format!(
            "{:0width$}",
            word(digits),
            width = usize::from(digits)
        ));
    }
    for _ in 0..integral / DIGITS_PER_WORD {
        integral_digits.push_str(&format!("{:09}", word(DIGITS_PER_WORD)));
    }
    let mut fraction_digits = String::new();
    for _ in 0..scale / DIGITS_PER_WORD {
        fraction_digits.push_str(&format!("{:09}", word(DIGITS_PER_WORD)));
    }
    if !scale.is_multiple_of(DIGITS_PER_WORD) {
        let digits = scale % DIGITS_PER_WORD;
        fraction_digits.push_str(&format!(
            "{:0width$}",
            word(digits),
            width = usize::from(digits)
        ));
    }
    let trimmed = integral_digits.trim_start_matches('0');
    let integral_text = if trimmed.is_empty() { "0" } else { trimmed };
    if trimmed.is_empty() && fraction_digits.is_empty() {
        // Zero without a fraction has no sign.
        return "0".to_owned();
    }
    let mut text = String::with_capacity(integral_text.len() + fraction_digits.len() + 2);
    if negative {
        text.push('-');
    }
    text.push_str(integral_text);
    if !fraction_digits.is_empty() {
        text.push('.');
        text.push_str(&fraction_digits);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(codec: Codec, bytes: &[u8]) -> Sql {
        let mut input = bytes;
        let value = codec.read(&mut input).expect("complete value");
        assert!(input.is_empty(), "{codec:?} left {} bytes", input.len());
        value
    }

    #[test]
    fn integers_honour_their_signedness() {
        assert_eq!(read(Codec::Tiny { unsigned: false }, &[0xff]), Sql::Int(-1));
        assert_eq!(read(Codec::Tiny { unsigned: true }, &[0xff]), Sql::Int(255));
        assert_eq!(
            read(Codec::Int24 { unsigned: false }, &[0, 0, 0x80]),
            Sql::Int(-8_388_608)
        );
        assert_eq!(
            read(Codec::Int24 { unsigned: true }, &[0xff, 0xff, 0xff]),
            Sql::Int(16_777_215)
        );
        assert_eq!(
            read(Codec::LongLong { unsigned: true }, &[0xff; 8]),
            Sql::UInt(u64::MAX)
        );
    }

    #[test]
    fn decimals_render_like_mariadb() {
        // DECIMAL(10,2) 1234.56: integral 8 digits = 4 bytes, fraction 2 digits = 1 byte.
        let mut bytes = 1234u32.to_be_bytes().to_vec();
        bytes.push(56);
        bytes[0] ^= 0x80;
        let codec = Codec::Decimal {
            precision: 10,
            scale: 2,
        };
        assert_eq!(read(codec, &bytes), Sql::Bytes(b"1234.56".to_vec()));
        let negative: Vec<u8> = bytes.iter().map(|b| !b).collect();
        assert_eq!(read(codec, &negative), Sql::Bytes(b"-1234.56".to_vec()));
        let zero = [0x80, 0, 0, 0, 0];
        assert_eq!(read(codec, &zero), Sql::Bytes(b"0.00".to_vec()));
        let integer = Codec::Decimal {
            precision: 5,
            scale: 0,
        };
        assert_eq!(read(integer, &[0x80, 0, 0]), Sql::Bytes(b"0".to_vec()));
    }

    #[test]
    fn negative_times_with_a_fraction_decode() {
        // -00:00:01.10 stored as 7FFFFE.F6 (MariaDB's my_time.c table).
        assert_eq!(
            read(Codec::Time2 { decimals: 2 }, &[0x7f, 0xff, 0xfe, 0xf6]),
            Sql::Time(true, 0, 0, 0, 1, 100_000)
        );
        // -00:00:00.01 stored as 7FFFFF.FF.
        assert_eq!(
            read(Codec::Time2 { decimals: 1 }, &[0x7f, 0xff, 0xff, 0xff]),
            Sql::Time(true, 0, 0, 0, 0, 10_000)
        );
        // 00:00:00 is 800000.
        assert_eq!(
            read(Codec::Time2 { decimals: 0 }, &[0x80, 0, 0]),
            Sql::Time(false, 0, 0, 0, 0, 0)
        );
    }

    #[test]
    fn short_input_is_an_error_not_a_panic() {
        let codecs = [
            Codec::Long { unsigned: false },
            Codec::Decimal {
                precision: 65,
                scale: 30,
            },
            Codec::DateTime2 { decimals: 6 },
            Codec::Blob { length_bytes: 4 },
            Codec::Short255 { long: true },
            Codec::Time2 { decimals: 3 },
        ];
        for codec in codecs {
            let mut input: &[u8] = &[0xff, 0xff, 0x01];
            assert_eq!(codec.read(&mut input), Err(Truncated), "{codec:?}");
        }
    }

    #[test]
    fn unusual_metadata_falls_back_to_the_generic_decoder() {
        use ColumnType::*;
        assert_eq!(Codec::for_column(MYSQL_TYPE_JSON, &[4], false), None);
        assert_eq!(
            Codec::for_column(MYSQL_TYPE_NEWDECIMAL, &[2, 5], false),
            None
        );
        assert_eq!(Codec::for_column(MYSQL_TYPE_ENUM, &[0xf7, 3], false), None);
        assert_eq!(Codec::for_column(MYSQL_TYPE_VARCHAR, &[1], false), None);
        assert_eq!(
            Codec::for_column(MYSQL_TYPE_VARCHAR, &[0, 1], false),
            Some(Codec::Short255 { long: true })
        );
    }
}
