//! Column values as they travel: the few kinds OpenMRS data needs, with references kept apart.
//!
//! JSON form (compact, readable, and unambiguous on the way back):
//! `null`, integers, floats (always written with a fraction or exponent, so `3.0` stays a float),
//! strings (text, and dates/times as MariaDB prints them), `{"hex": "..."}` for bytes that are
//! not UTF-8, and `{"ref": "<table>", "id": "<identity>"}` for a reference.

use crate::identity::{Identity, RowRef};
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    UInt(u64),
    Float(f64),
    /// Text, and temporal values in MariaDB's literal form (`2024-01-31 08:00:00`).
    Text(String),
    Bytes(Vec<u8>),
    Ref(RowRef),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The value as an integer key, when it is one (references in a source row before
    /// translation).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(*v),
            Value::UInt(v) => i64::try_from(*v).ok(),
            _ => None,
        }
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Int(v) => serializer.serialize_i64(*v),
            Value::UInt(v) => serializer.serialize_u64(*v),
            Value::Float(v) => serializer.serialize_f64(*v),
            Value::Text(s) => serializer.serialize_str(s),
            Value::Bytes(b) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("hex", &hex_encode(b))?;
                map.end()
            }
            Value::Ref(r) => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("ref", &r.table)?;
                map.serialize_entry("id", r.identity.as_str())?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("null, a number, a string, {\"hex\": ..} or {\"ref\": .., \"id\": ..}")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Int(i64::from(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::UInt(v), Value::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Text(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Text(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut hex = None;
        let mut table = None;
        let mut id = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "hex" => hex = Some(map.next_value::<String>()?),
                "ref" => table = Some(map.next_value::<String>()?),
                "id" => id = Some(map.next_value::<String>()?),
                other => return Err(de::Error::unknown_field(other, &["hex", "ref", "id"])),
            }
        }
        match (hex, table, id) {
            (Some(hex), None, None) => hex_decode(&hex)
                .map(Value::Bytes)
                .ok_or_else(|| de::Error::custom("invalid hex in a bytes value")),
            (None, Some(table), Some(id)) => {
                Ok(Value::Ref(RowRef::new(table, Identity::from_raw(id))))
            }
            _ => Err(de::Error::custom(
                "an object value must be {\"hex\": ..} or {\"ref\": .., \"id\": ..}",
            )),
        }
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_odd_input() {
        assert_eq!(
            hex_decode(&hex_encode(&[0, 1, 254, 255])),
            Some(vec![0, 1, 254, 255])
        );
        assert_eq!(hex_decode("abc"), None);
        assert_eq!(hex_decode("zz"), None);
    }

    #[test]
    fn large_unsigned_stays_unsigned() {
        let v: Value = serde_json::from_str("18446744073709551615").unwrap();
        assert_eq!(v, Value::UInt(u64::MAX));
    }

    #[test]
    fn malformed_objects_are_errors_not_panics() {
        assert!(serde_json::from_str::<Value>("{\"ref\": \"obs\"}").is_err());
        assert!(serde_json::from_str::<Value>("{\"what\": 1}").is_err());
        assert!(serde_json::from_str::<Value>("{\"hex\": \"0\"}").is_err());
    }
}
