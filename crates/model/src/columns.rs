//! [`Columns`]: a row image's columns by name, kept as one vector sorted by name.
//!
//! A row has a few dozen columns at most and is built once, read a few times and dropped, so
//! sorted vectors beat a tree: found by binary search, dropped in two frees. The names are a
//! [`ColumnNames`] shared by every row of a table layout, so building a row takes one reference
//! to them rather than one per column (capture builds rows on one thread and drops them on the
//! sealing thread: per-column reference counts made the two cores fight over the same cache
//! lines). The JSON form is an object, as a map's would be.
//!
//! Invariant: names are unique and sorted (byte order) and there is one value per name,
//! whatever way the value was built.

use crate::ColumnName;
use crate::value::Value;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::{Arc, OnceLock};

/// Column names sorted and without repeats, shared by every row of one table layout: a row
/// holds one reference to them, not one per column.
#[derive(Clone, Default)]
pub struct ColumnNames(Arc<Names>);

#[derive(Default)]
struct Names {
    names: Box<[ColumnName]>,
    /// The names as the keys of a JSON object, written once for every row that shares them
    /// (see [`JsonKeys`]); only rows that are serialised by the batch writer ask for them.
    json_keys: OnceLock<JsonKeys>,
}

/// Every name as a JSON object key, escaped as serde_json escapes it: `"name":`, with the
/// comma that separates it from the previous member before every key but the first.
/// A set of names rendered as JSON object keys (see [`ColumnNames::json_keys`]).
pub struct JsonKeys {
    bytes: Vec<u8>,
    /// Where each key starts and ends in `bytes`.
    spans: Vec<(usize, usize)>,
}

impl JsonKeys {
    /// The `i`-th name as a JSON object key, `"name":`, preceded by a comma unless it is the
    /// first (empty past the last name).
    pub fn key(&self, i: usize) -> &[u8] {
        self.spans
            .get(i)
            .and_then(|&(start, end)| self.bytes.get(start..end))
            .unwrap_or_default()
    }
}

impl ColumnNames {
    /// The names, sorted; of repeated names one is kept.
    pub fn new(mut names: Vec<ColumnName>) -> ColumnNames {
        names.sort();
        names.dedup();
        ColumnNames::sorted(names)
    }

    /// Names already sorted and without repeats.
    fn sorted(names: Vec<ColumnName>) -> ColumnNames {
        ColumnNames(Arc::new(Names {
            names: names.into(),
            json_keys: OnceLock::new(),
        }))
    }

    pub fn len(&self) -> usize {
        self.0.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.names.is_empty()
    }

    fn position(&self, column: &str) -> Result<usize, usize> {
        self.0.names.binary_search_by(|name| (**name).cmp(column))
    }

    fn iter(&self) -> std::slice::Iter<'_, ColumnName> {
        self.0.names.iter()
    }

    /// The names as JSON object keys, written on first use.
    /// The names as JSON object keys, rendered once per set of names.
    pub fn json_keys(&self) -> &JsonKeys {
        self.0.json_keys.get_or_init(|| {
            let mut bytes = Vec::new();
            let mut spans = Vec::with_capacity(self.len());
            for (i, name) in self.iter().enumerate() {
                let start = bytes.len();
                if i > 0 {
                    bytes.push(b',');
                }
                crate::json::write_str(&mut bytes, name);
                bytes.push(b':');
                spans.push((start, bytes.len()));
            }
            JsonKeys { bytes, spans }
        })
    }
}

impl PartialEq for ColumnNames {
    fn eq(&self, other: &ColumnNames) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.names == other.0.names
    }
}

impl Eq for ColumnNames {}

impl fmt::Debug for ColumnNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Column values by name, sorted by name.
#[derive(Clone, Default)]
pub struct Columns {
    names: ColumnNames,
    values: Vec<Value>,
}

impl Columns {
    /// No columns.
    pub fn new() -> Columns {
        Columns::default()
    }

    /// A row of `values` for shared `names`, in the names' order; the values back when the
    /// counts differ.
    pub fn with_names(names: ColumnNames, values: Vec<Value>) -> Result<Columns, Vec<Value>> {
        if names.len() != values.len() {
            return Err(values);
        }
        Ok(Columns { names, values })
    }

    /// The value of `column`.
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.names.position(column).ok().map(|i| &self.values[i])
    }

    /// Whether `column` is present.
    pub fn contains_key(&self, column: &str) -> bool {
        self.names.position(column).is_ok()
    }

    /// Sets `column`, returning the value it replaced. (A new column copies the names: rows
    /// are built whole, this is for the rare edit.)
    pub fn insert(&mut self, column: ColumnName, value: Value) -> Option<Value> {
        match self.names.position(&column) {
            Ok(i) => Some(std::mem::replace(&mut self.values[i], value)),
            Err(i) => {
                let mut names = self.names.iter().cloned().collect::<Vec<_>>();
                names.insert(i, column);
                self.names = ColumnNames::sorted(names);
                self.values.insert(i, value);
                None
            }
        }
    }

    /// Removes `column`, returning its value.
    pub fn remove(&mut self, column: &str) -> Option<Value> {
        let i = self.names.position(column).ok()?;
        let mut names = self.names.iter().cloned().collect::<Vec<_>>();
        names.remove(i);
        self.names = ColumnNames::sorted(names);
        Some(self.values.remove(i))
    }

    /// (name, value) pairs in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&ColumnName, &Value)> {
        self.names.iter().zip(self.values.iter())
    }

    /// The shared names.
    pub(crate) fn names(&self) -> &ColumnNames {
        &self.names
    }

    /// Names in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &ColumnName> {
        self.names.iter()
    }

    /// Values in name order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &Value> {
        self.values.iter()
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl FromIterator<(ColumnName, Value)> for Columns {
    /// Sorts by name; of repeated names the last value wins, as with a map.
    fn from_iter<I: IntoIterator<Item = (ColumnName, Value)>>(pairs: I) -> Columns {
        let mut entries: Vec<(ColumnName, Value)> = pairs.into_iter().collect();
        // Stable: among equal names the later one stays last, and is the one kept.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut names: Vec<ColumnName> = Vec::with_capacity(entries.len());
        let mut values: Vec<Value> = Vec::with_capacity(entries.len());
        for (name, value) in entries {
            match (names.last(), values.last_mut()) {
                (Some(last), Some(last_value)) if *last == name => *last_value = value,
                _ => {
                    names.push(name);
                    values.push(value);
                }
            }
        }
        Columns {
            names: ColumnNames::sorted(names),
            values,
        }
    }
}

impl IntoIterator for Columns {
    type Item = (ColumnName, Value);
    type IntoIter = std::iter::Zip<std::vec::IntoIter<ColumnName>, std::vec::IntoIter<Value>>;

    fn into_iter(self) -> Self::IntoIter {
        let names: Vec<ColumnName> = self.names.iter().cloned().collect();
        names.into_iter().zip(self.values)
    }
}

impl<'a> IntoIterator for &'a Columns {
    type Item = (&'a ColumnName, &'a Value);
    type IntoIter = std::iter::Zip<std::slice::Iter<'a, ColumnName>, std::slice::Iter<'a, Value>>;

    fn into_iter(self) -> Self::IntoIter {
        self.names.iter().zip(self.values.iter())
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

impl PartialEq for Columns {
    fn eq(&self, other: &Columns) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl fmt::Debug for Columns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Columns {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (name, value) in self.iter() {
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
        let hint = map.size_hint().unwrap_or(0).min(4096);
        let mut keys: Vec<Key<'de>> = Vec::with_capacity(hint);
        let mut values = Vec::with_capacity(hint);
        while let Some(key) = map.next_key::<Key<'de>>()? {
            values.push(map.next_value::<Value>()?);
            keys.push(key);
        }
        // Written by Tributary, the names come sorted: rows of one shape then share them.
        if keys
            .windows(2)
            .all(|pair| pair[0].as_str() < pair[1].as_str())
        {
            let names = RECENT_NAMES.with(|recent| recent.borrow_mut().names_for(&keys));
            return Ok(Columns { names, values });
        }
        Ok(keys
            .iter()
            .map(|key| ColumnName::from(key.as_str()))
            .zip(values)
            .collect())
    }
}

/// A column name as read from JSON: borrowed from the input unless it had escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(name) => name,
            Key::Owned(name) => name,
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a column name")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, name: &'de str) -> Result<Key<'de>, E> {
        Ok(Key::Borrowed(name))
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Key<'de>, E> {
        Ok(Key::Owned(name.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, name: String) -> Result<Key<'de>, E> {
        Ok(Key::Owned(name))
    }
}

/// Shapes of rows recently read on this thread.
const RECENT_SHAPES: usize = 32;

thread_local! {
    static RECENT_NAMES: std::cell::RefCell<RecentNames> =
        const { std::cell::RefCell::new(RecentNames { shapes: Vec::new(), last: 0 }) };
}

/// The column names of the row shapes read last on one thread, so that the rows of a batch
/// share one set per shape (one reference count each) instead of allocating every name of
/// every row: the applier reads thousands of rows of a handful of shapes per batch.
struct RecentNames {
    shapes: Vec<ColumnNames>,
    /// The shape found last, looked at first.
    last: usize,
}

impl RecentNames {
    /// The names `keys` (sorted, no repeats) spell, shared with an earlier row when one had
    /// the same.
    fn names_for(&mut self, keys: &[Key<'_>]) -> ColumnNames {
        let same = |names: &ColumnNames| {
            names.len() == keys.len()
                && names
                    .iter()
                    .zip(keys)
                    .all(|(name, key)| **name == *key.as_str())
        };
        let found = std::iter::once(self.last)
            .chain(0..self.shapes.len())
            .find(|i| self.shapes.get(*i).is_some_and(same));
        if let Some(i) = found {
            self.last = i;
            return self.shapes[i].clone();
        }
        let names =
            ColumnNames::sorted(keys.iter().map(|k| ColumnName::from(k.as_str())).collect());
        if self.shapes.len() < RECENT_SHAPES {
            self.shapes.push(names.clone());
            self.last = self.shapes.len() - 1;
        } else {
            // The shape found last stays; the next slot after it goes.
            let slot = (self.last + 1) % RECENT_SHAPES;
            self.shapes[slot] = names.clone();
            self.last = slot;
        }
        names
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
    fn rows_share_their_layout_names() {
        let names = ColumnNames::new(vec![name("b"), name("a"), name("b")]);
        assert_eq!(names.len(), 2);
        let row = Columns::with_names(names.clone(), vec![Value::Int(1), Value::Int(2)]).unwrap();
        assert_eq!(row.get("a"), Some(&Value::Int(1)));
        assert_eq!(row.get("b"), Some(&Value::Int(2)));
        assert!(Columns::with_names(names, vec![Value::Null]).is_err());
        let mut edited = row.clone();
        edited.insert(name("c"), Value::Null);
        assert_eq!(edited.len(), 3);
        assert_eq!(row.len(), 2, "an edit copies the shared names");
    }

    #[test]
    fn rows_read_from_json_share_the_names_of_their_shape() {
        let rows: Vec<Columns> =
            serde_json::from_str(r#"[{"a":1,"b":2},{"a":3,"b":4},{"a":5},{"a":6,"b":7}]"#).unwrap();
        assert!(Arc::ptr_eq(&rows[0].names.0, &rows[1].names.0));
        assert!(Arc::ptr_eq(&rows[0].names.0, &rows[3].names.0));
        assert!(!Arc::ptr_eq(&rows[0].names.0, &rows[2].names.0));
        assert_eq!(rows[3].get("b"), Some(&Value::Int(7)));
        assert_eq!(rows[2].len(), 1);
        // An escaped name is read as well, and is the same name as its plain spelling.
        let escaped: Columns = serde_json::from_str(r#"{"\u0061":1,"b":2}"#).unwrap();
        assert_eq!(escaped.get("a"), Some(&Value::Int(1)));
        assert!(Arc::ptr_eq(&escaped.names.0, &rows[0].names.0));
    }

    #[test]
    fn more_shapes_than_are_remembered_still_read_right() {
        for round in 0..2 {
            for width in 1..=(RECENT_SHAPES + 5) {
                let json = format!(
                    "{{{}}}",
                    (0..width)
                        .map(|i| format!("\"c{i:03}\":{}", i + round))
                        .collect::<Vec<_>>()
                        .join(",")
                );
                let row: Columns = serde_json::from_str(&json).unwrap();
                assert_eq!(row.len(), width);
                assert_eq!(row.get("c000"), Some(&Value::Int(round as i64)));
                let last = format!("c{:03}", width - 1);
                assert_eq!(
                    row.get(&last),
                    Some(&Value::Int((width - 1 + round) as i64))
                );
            }
        }
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
