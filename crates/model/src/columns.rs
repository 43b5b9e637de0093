//! [`Columns`]: a row image's columns by name, kept as one vector sorted by name.
//!
//! A row has a few dozen columns at most and is built once, read a few times and dropped, so a
//! sorted vector beats a tree: built from an already sorted image without searching, found by
//! binary search, dropped in one free. The JSON form is an object, as a map's would be.
//!
//! Invariant: names are unique and sorted (byte order), whatever way the value was built.

use crate::ColumnName;
use crate::value::Value;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Column values by name, sorted by name.
#[derive(Clone, Default, PartialEq)]
pub struct Columns {
    entries: Vec<(ColumnName, Value)>,
}

impl Columns {
    /// No columns.
    pub fn new() -> Columns {
        Columns::default()
    }

    /// Columns from pairs already sorted by name without repeats (a table layout's image
    /// order); checked, and sorted after all if they are not.
    pub fn from_sorted(entries: Vec<(ColumnName, Value)>) -> Columns {
        if entries.windows(2).all(|w| w[0].0 < w[1].0) {
            Columns { entries }
        } else {
            entries.into_iter().collect()
        }
    }

    /// The value of `column`.
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.position(column).ok().map(|i| &self.entries[i].1)
    }

    /// Whether `column` is present.
    pub fn contains_key(&self, column: &str) -> bool {
        self.position(column).is_ok()
    }

    /// Sets `column`, returning the value it replaced.
    pub fn insert(&mut self, column: ColumnName, value: Value) -> Option<Value> {
        match self.position(&column) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (column, value));
                None
            }
        }
    }

    /// Removes `column`, returning its value.
    pub fn remove(&mut self, column: &str) -> Option<Value> {
        let i = self.position(column).ok()?;
        Some(self.entries.remove(i).1)
    }

    /// (name, value) pairs in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&ColumnName, &Value)> {
        self.entries.iter().map(|(name, value)| (name, value))
    }

    /// Names in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &ColumnName> {
        self.entries.iter().map(|(name, _)| name)
    }

    /// Values in name order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &Value> {
        self.entries.iter().map(|(_, value)| value)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn position(&self, column: &str) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|(name, _)| (**name).cmp(column))
    }
}

impl FromIterator<(ColumnName, Value)> for Columns {
    /// Sorts by name; of repeated names the last value wins, as with a map.
    fn from_iter<I: IntoIterator<Item = (ColumnName, Value)>>(pairs: I) -> Columns {
        let mut entries: Vec<(ColumnName, Value)> = pairs.into_iter().collect();
        // Stable: among equal names the later one stays last, and is the one kept.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut unique: Vec<(ColumnName, Value)> = Vec::with_capacity(entries.len());
        for (name, value) in entries {
            match unique.last_mut() {
                Some(last) if last.0 == name => last.1 = value,
                _ => unique.push((name, value)),
            }
        }
        Columns { entries: unique }
    }
}

impl IntoIterator for Columns {
    type Item = (ColumnName, Value);
    type IntoIter = std::vec::IntoIter<(ColumnName, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'a> IntoIterator for &'a Columns {
    type Item = (&'a ColumnName, &'a Value);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (ColumnName, Value)>,
        fn(&'a (ColumnName, Value)) -> (&'a ColumnName, &'a Value),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(name, value)| (name, value))
    }
}

impl std::ops::Index<&str> for Columns {
    type Output = Value;

    /// Panics when the column is absent, like a map's index: for tests and known columns.
    fn index(&self, column: &str) -> &Value {
        match self.get(column) {
            Some(value) => value,
            None => panic!("no column {column:?}"),
        }
    }
}

impl fmt::Debug for Columns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Columns {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (name, value) in &self.entries {
            map.serialize_entry(&**name, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Columns {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ColumnsVisitor)
    }
}

struct ColumnsVisitor;

impl<'de> Visitor<'de> for ColumnsVisitor {
    type Value = Columns;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of column values")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Columns, A::Error> {
        // Bounded by the input: every entry is at least a few bytes of it.
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        while let Some((name, value)) = map.next_entry::<String, Value>()? {
            entries.push((ColumnName::from(name), value));
        }
        Ok(Columns::from_sorted(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ColumnName {
        ColumnName::from(s)
    }

    #[test]
    fn built_in_any_order_it_reads_like_a_map() {
        let columns: Columns = [
            (name("voided"), Value::Int(0)),
            (name("uuid"), Value::Text("a".into())),
            (name("voided"), Value::Int(1)),
            (name("comments"), Value::Null),
        ]
        .into_iter()
        .collect();
        let names: Vec<&str> = columns.keys().map(|k| &**k).collect();
        assert_eq!(names, ["comments", "uuid", "voided"]);
        assert_eq!(
            columns.get("voided"),
            Some(&Value::Int(1)),
            "the last value wins"
        );
        assert_eq!(columns["uuid"], Value::Text("a".into()));
        assert!(columns.get("absent").is_none() && !columns.contains_key("absent"));
        assert_eq!(columns.len(), 3);
    }

    #[test]
    fn insert_and_remove_keep_the_order() {
        let mut columns = Columns::new();
        assert!(columns.is_empty());
        for n in ["m", "a", "z", "b"] {
            assert_eq!(columns.insert(name(n), Value::Int(1)), None);
        }
        assert_eq!(
            columns.insert(name("a"), Value::Int(2)),
            Some(Value::Int(1))
        );
        assert_eq!(columns.remove("m"), Some(Value::Int(1)));
        assert_eq!(columns.remove("m"), None);
        let names: Vec<&str> = columns.keys().map(|k| &**k).collect();
        assert_eq!(names, ["a", "b", "z"]);
    }

    #[test]
    fn unsorted_input_to_from_sorted_is_sorted_after_all() {
        let columns =
            Columns::from_sorted(vec![(name("b"), Value::Null), (name("a"), Value::Null)]);
        let names: Vec<&str> = columns.keys().map(|k| &**k).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn json_is_an_object_and_round_trips() {
        let columns: Columns = [(name("b"), Value::Int(2)), (name("a"), Value::Null)]
            .into_iter()
            .collect();
        let json = serde_json::to_string(&columns).unwrap();
        assert_eq!(json, r#"{"a":null,"b":2}"#);
        assert_eq!(serde_json::from_str::<Columns>(&json).unwrap(), columns);
        // Order in the JSON does not matter; a repeated name keeps its last value.
        let reordered: Columns = serde_json::from_str(r#"{"b":2,"a":null,"b":3}"#).unwrap();
        assert_eq!(reordered.get("b"), Some(&Value::Int(3)));
        assert_eq!(reordered.len(), 2);
    }
}
