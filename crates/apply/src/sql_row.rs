//! [`SqlRow`]: a row's values for HQ by column, kept as one vector sorted by name.
//!
//! A resolved row is built once from a change whose columns are already sorted, read a few
//! times (its key, its statement's parameters) and dropped: appending to a vector costs one
//! comparison per column where a tree paid a search and its nodes (the applier's profile had
//! a fifth of its main thread in tree inserts). Names are the change's own shared names.
//!
//! Invariant: names are unique and sorted (byte order), one value per name.

use mysql_async::Value as Sql;
use std::fmt;
use tributary_model::ColumnName;

#[derive(Clone, Default, PartialEq)]
pub struct SqlRow {
    entries: Vec<(ColumnName, Sql)>,
}

impl SqlRow {
    pub fn new() -> SqlRow {
        SqlRow::default()
    }

    pub fn with_capacity(columns: usize) -> SqlRow {
        SqlRow {
            entries: Vec::with_capacity(columns),
        }
    }

    fn position(&self, column: &str) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|(name, _)| (**name).cmp(column))
    }

    pub fn get(&self, column: &str) -> Option<&Sql> {
        let i = self.position(column).ok()?;
        self.entries.get(i).map(|(_, value)| value)
    }

    pub fn get_mut(&mut self, column: &str) -> Option<&mut Sql> {
        let i = self.position(column).ok()?;
        self.entries.get_mut(i).map(|(_, value)| value)
    }

    /// Sets `column`, returning the value it replaced. Columns given in order (as a change's
    /// are) are appended.
    pub fn insert(&mut self, column: ColumnName, value: Sql) -> Option<Sql> {
        if self.entries.last().is_none_or(|(last, _)| *last < column) {
            self.entries.push((column, value));
            return None;
        }
        match self.position(&column) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (column, value));
                None
            }
        }
    }

    pub fn remove(&mut self, column: &str) -> Option<Sql> {
        let i = self.position(column).ok()?;
        Some(self.entries.remove(i).1)
    }

    /// Names in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &ColumnName> {
        self.entries.iter().map(|(name, _)| name)
    }

    /// Values in name order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &Sql> {
        self.entries.iter().map(|(_, value)| value)
    }

    /// Values in name order, taken.
    pub fn into_values(self) -> impl ExactSizeIterator<Item = Sql> {
        self.entries.into_iter().map(|(_, value)| value)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl FromIterator<(ColumnName, Sql)> for SqlRow {
    /// In any order; of repeated names the last value wins, as with a map.
    fn from_iter<I: IntoIterator<Item = (ColumnName, Sql)>>(pairs: I) -> SqlRow {
        let mut row = SqlRow::new();
        for (column, value) in pairs {
            row.insert(column, value);
        }
        row
    }
}

impl IntoIterator for SqlRow {
    type Item = (ColumnName, Sql);
    type IntoIter = std::vec::IntoIter<(ColumnName, Sql)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl fmt::Debug for SqlRow {
    // Names only: values are patient data and never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row from (name, value) pairs, in the order given.
    fn row_of(pairs: &[(&str, Sql)]) -> SqlRow {
        pairs
            .iter()
            .map(|(column, value)| (ColumnName::from(*column), value.clone()))
            .collect()
    }

    fn names(row: &SqlRow) -> Vec<&str> {
        row.keys().map(|k| &**k).collect()
    }

    #[test]
    fn a_row_built_out_of_order_is_sorted_and_keeps_the_last_value() {
        let mut row = row_of(&[
            ("voided", Sql::Int(0)),
            ("uuid", Sql::from("a")),
            ("voided", Sql::Int(1)),
            ("comments", Sql::NULL),
        ]);
        assert_eq!(names(&row), ["comments", "uuid", "voided"]);
        assert_eq!(row.get("voided"), Some(&Sql::Int(1)));
        assert_eq!(row.get("missing"), None);

        assert_eq!(
            row.insert(ColumnName::from("concept_id"), Sql::Int(5)),
            None
        );
        assert_eq!(
            row.insert(ColumnName::from("uuid"), Sql::from("b")),
            Some(Sql::from("a"))
        );
        assert_eq!(row.remove("comments"), Some(Sql::NULL));
        assert_eq!(row.remove("comments"), None);
        if let Some(value) = row.get_mut("voided") {
            *value = Sql::Int(2);
        }
        assert_eq!(names(&row), ["concept_id", "uuid", "voided"]);
        let values: Vec<Sql> = row.into_values().collect();
        assert_eq!(values, [Sql::Int(5), Sql::from("b"), Sql::Int(2)]);
    }

    #[test]
    fn names_sort_by_bytes_as_a_changes_columns_do() {
        let row = row_of(&[
            ("b", Sql::NULL),
            ("B", Sql::NULL),
            ("a_b", Sql::NULL),
            ("ab", Sql::NULL),
            ("a", Sql::NULL),
        ]);
        assert_eq!(names(&row), ["B", "a", "a_b", "ab", "b"]);
    }

    #[test]
    fn debug_shows_names_and_never_values() {
        let shown = format!("{:?}", row_of(&[("given_name", Sql::from("Amina"))]));
        assert!(shown.contains("given_name"));
        assert!(!shown.contains("Amina"));
    }
}
