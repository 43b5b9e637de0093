//! What a TABLE_MAP says about a table's columns, prepared once and reused for every rows
//! event that follows it (MariaDB repeats the table map before every statement's rows; the
//! layout is rebuilt only when the table map's bytes change).
//!
//! A layout names each column (from `binlog_row_metadata=FULL`, or by position from the
//! schema-history version valid here), gives its kind, the corrections its values need, and
//! when every column has one, a prepared [`Codec`] so row images are read straight from the
//! event bytes. Tables with a column type the codecs do not cover are read with
//! mysql_common's generic row decoder, through the same names and corrections.

use crate::binlog::{RawImage, travelling_names};
use crate::binlog_values::{Codec, Truncated};
use crate::error::CaptureError;
use mysql_async::Value as Sql;
use mysql_async::binlog::events::{OptionalMetaExtractor, OptionalMetadataField, TableMapEvent};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::binlog::value::BinlogValue;
use mysql_async::consts::ColumnType;
use rustc_hash::FxHashMap;
use std::sync::Arc;
use tributary_model::ColumnName;
use tributary_model::ColumnNames;
use tributary_schema::{CatalogColumn, ColumnKind, SchemaMap, TableMap};

/// Table maps remembered at once; more (a very long stream re-opening tables) starts afresh.
const MAX_LAYOUTS: usize = 4_096;

/// A column of a row image: its name and kind as the row's own TABLE_MAP describes them, and
/// what the schema map makes of it (decided once per layout, not per row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: ColumnName,
    pub kind: ColumnKind,
    pub role: ColumnRole,
}

/// What annotation does with a column's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnRole {
    /// Travels as it is.
    Plain,
    /// Stays at the site: the surrogate key, or a column the policy excludes.
    Local,
    /// An integer reference to `target`'s rows: travels as the referenced identity, which
    /// the identity cache holds under `root` (the target, or the table it inherits from).
    Reference {
        target: Arc<str>,
        root: Option<Arc<str>>,
        /// `{"ref":"<target>","id":`, the JSON every value of the column starts with.
        json_prefix: Arc<[u8]>,
    },
    /// Holds an id when the row's attribute type says so (`person_attribute.value`).
    Polymorphic,
}

impl ColumnRole {
    /// The role of column `name` of `map`'s table in `schema` (Plain when no map is known).
    pub fn of(context: Option<(&SchemaMap, &TableMap)>, name: &str) -> ColumnRole {
        let Some((schema, map)) = context else {
            return ColumnRole::Plain;
        };
        if map.surrogate_key.as_deref() == Some(name)
            || map.excluded_columns.iter().any(|c| c == name)
        {
            ColumnRole::Local
        } else if let Some(target) = map.references.get(name) {
            ColumnRole::Reference {
                json_prefix: tributary_model::json::ref_prefix(target).into(),
                target: Arc::clone(target),
                root: schema
                    .table(target)
                    .and_then(|t| t.identity_source.as_ref())
                    .map(|source| Arc::from(source.root.as_str())),
            }
        } else if map.polymorphic.iter().any(|p| p.column == name) {
            ColumnRole::Polymorphic
        } else {
            ColumnRole::Plain
        }
    }
}

/// One table map, prepared.
#[derive(Debug)]
pub struct TableLayout {
    pub table: Arc<str>,
    /// Every column of the table map, in binlog order.
    columns: Vec<ColumnInfo>,
    /// The shape of a full image (every column present).
    full: Arc<ImageShape>,
    /// Every column's index, `0..columns.len()`: what a full image's bitmap lists.
    all: Vec<usize>,
    corrections: Vec<BinlogColumn>,
    /// One codec per column, when every column has one.
    codecs: Option<Vec<PreparedColumn>>,
}

/// How one column's values are read by the prepared codecs.
#[derive(Debug, Clone, Copy)]
struct PreparedColumn {
    codec: Codec,
    /// Whether its values go through [`BinlogColumn::normalise`] (decided once per layout).
    corrected: bool,
}

/// The columns of a row image **sorted by name** (so rows are built without sorting), and
/// for each value in binlog order, the slot it goes to.
#[derive(Debug)]
pub struct ImageShape {
    columns: Arc<[ColumnInfo]>,
    /// The names that travel, worked out once (see `travelling_names`).
    travelling: Option<ColumnNames>,
    /// `slots[j]` is where the j-th present column's value goes.
    slots: Vec<usize>,
}

impl ImageShape {
    /// The shape of an image holding `present` (binlog column indexes, ascending).
    fn of(columns: &[ColumnInfo], present: &[usize]) -> ImageShape {
        let mut by_name: Vec<usize> = (0..present.len()).collect();
        by_name.sort_by(|&a, &b| {
            let name = |j: usize| {
                present
                    .get(j)
                    .and_then(|&i| columns.get(i))
                    .map(|c| &c.name)
            };
            name(a).cmp(&name(b))
        });
        let mut slots = vec![0; present.len()];
        for (slot, &j) in by_name.iter().enumerate() {
            slots[j] = slot;
        }
        let columns: Arc<[ColumnInfo]> = by_name
            .iter()
            .filter_map(|&j| present.get(j).and_then(|&i| columns.get(i)).cloned())
            .collect();
        ImageShape {
            travelling: travelling_names(&columns),
            columns,
            slots,
        }
    }

    /// Places values given in binlog order into their sorted slots.
    fn image(&self, in_binlog_order: impl IntoIterator<Item = Sql>) -> RawImage {
        let mut values = vec![Sql::NULL; self.slots.len()];
        for (value, &slot) in in_binlog_order.into_iter().zip(&self.slots) {
            if let Some(place) = values.get_mut(slot) {
                *place = value;
            }
        }
        RawImage::shaped(Arc::clone(&self.columns), self.travelling.clone(), values)
    }
}

/// Prepared layouts by table id, each with the table map it was built from; `None` for a
/// table capture does not sync (another database, a table the schema map leaves out), so the
/// rows events that follow a TABLE_MAP cost one comparison whichever table they touch.
#[derive(Default)]
pub struct Layouts {
    by_table_id: FxHashMap<u64, (TableMapEvent<'static>, Option<Arc<TableLayout>>)>,
}

impl Layouts {
    /// The layout of `tme`, built on first sight and whenever the table map changed.
    /// `ordinal` names the columns when the binlog carries no names; the schema map and the
    /// table's map give them their roles.
    #[cfg(test)]
    pub fn layout(
        &mut self,
        tme: &TableMapEvent<'static>,
        ordinal: &[CatalogColumn],
        map: Option<(&SchemaMap, &TableMap)>,
    ) -> Result<Arc<TableLayout>, CaptureError> {
        let built = self.remembered(tme, || {
            TableLayout::build(tme, ordinal, map).map(|layout| Some(Arc::new(layout)))
        })?;
        built.ok_or(CaptureError::MissingTableMap(tme.table_id()))
    }

    /// The layout of `tme` when its table is synced: `synced` (asked only when the table map
    /// is new or changed) gives the schema map and the table's entry, or None for a table
    /// capture leaves out. Columns named by position take the entry's ordinal columns.
    pub fn synced_layout<'s>(
        &mut self,
        tme: &TableMapEvent<'static>,
        synced: impl FnOnce() -> Option<(&'s SchemaMap, &'s TableMap)>,
    ) -> Result<Option<Arc<TableLayout>>, CaptureError> {
        self.remembered(tme, || match synced() {
            Some((schema, map)) => {
                TableLayout::build(tme, &map.ordinal_columns, Some((schema, map)))
                    .map(|layout| Some(Arc::new(layout)))
            }
            None => Ok(None),
        })
    }

    /// What `build` made of `tme`, remembered until the table map of its id changes.
    fn remembered(
        &mut self,
        tme: &TableMapEvent<'static>,
        build: impl FnOnce() -> Result<Option<Arc<TableLayout>>, CaptureError>,
    ) -> Result<Option<Arc<TableLayout>>, CaptureError> {
        if let Some((known, layout)) = self.by_table_id.get(&tme.table_id())
            && known == tme
        {
            return Ok(layout.clone());
        }
        let layout = build()?;
        if self.by_table_id.len() >= MAX_LAYOUTS {
            self.by_table_id.clear();
        }
        self.by_table_id
            .insert(tme.table_id(), (tme.clone(), layout.clone()));
        Ok(layout)
    }

    /// Forgets every layout: the schema version that names columns by position changed.
    pub fn clear(&mut self) {
        self.by_table_id.clear();
    }
}

impl TableLayout {
    fn build(
        tme: &TableMapEvent<'_>,
        ordinal: &[CatalogColumn],
        map: Option<(&SchemaMap, &TableMap)>,
    ) -> Result<TableLayout, CaptureError> {
        let table: Arc<str> = Arc::from(tme.table_name().as_ref());
        let malformed = |detail: String| CaptureError::MalformedEvent {
            event: "TABLE_MAP",
            detail,
        };
        let count = usize::try_from(tme.columns_count())
            .map_err(|_| malformed(format!("table {table}: column count out of range")))?;
        let extractor = OptionalMetaExtractor::new(tme.iter_optional_meta())
            .map_err(|e| malformed(format!("table {table}: {e}")))?;
        let mut names = extractor.iter_column_name();
        let mut signedness = extractor.iter_signedness();
        let mut charsets = extractor.iter_charset();
        let mut enum_set_charsets = extractor.iter_enum_and_set_charset();
        let mut members = member_names(tme)?.into_iter();

        let mut columns = Vec::with_capacity(count);
        let mut corrections = Vec::with_capacity(count);
        let mut codecs = Some(Vec::with_capacity(count));
        for i in 0..count {
            let column_type = match tme.get_column_type(i) {
                Ok(Some(t)) => t,
                Ok(None) => {
                    return Err(malformed(format!("table {table}: column {i} has no type")));
                }
                Err(e) => return Err(malformed(format!("table {table}: column {i}: {e}"))),
            };
            let listed_unsigned = if column_type.is_numeric_type() {
                signedness.next()
            } else {
                None
            };
            let charset = if column_type.is_character_type() {
                charsets.next().transpose()
            } else if column_type.is_enum_or_set_type() {
                enum_set_charsets.next().transpose()
            } else {
                Ok(None)
            }
            .map_err(|e| malformed(format!("table {table}: {e}")))?
            .unwrap_or_default();
            let named = names
                .next()
                .transpose()
                .map_err(|e| malformed(format!("table {table}: {e}")))?;
            let (name, unsigned) = match named {
                Some(name) => (
                    ColumnName::from(name.name()),
                    listed_unsigned.unwrap_or(false),
                ),
                None => {
                    if ordinal.len() != count {
                        return Err(malformed(format!(
                            "table {table} has {count} columns in the binlog but {} in the \
                             schema version valid here, and the binlog carries no column names \
                             (binlog_row_metadata below FULL); set binlog_row_metadata=FULL, \
                             then re-seed the site",
                            ordinal.len()
                        )));
                    }
                    let known = &ordinal[i];
                    (ColumnName::from(known.name.as_str()), known.unsigned)
                }
            };
            let meta = tme.get_column_metadata(i).unwrap_or(&[]);
            let correction = BinlogColumn {
                column_type,
                charset,
                unsigned,
                members: members.next().flatten(),
            };
            match (&mut codecs, Codec::for_column(column_type, meta, unsigned)) {
                (Some(list), Some(codec)) => list.push(PreparedColumn {
                    codec,
                    corrected: correction.corrects_prepared_values(),
                }),
                _ => codecs = None,
            }
            columns.push(ColumnInfo {
                role: ColumnRole::of(map, &name),
                name,
                kind: ColumnKind::from_column_type(column_type, charset),
            });
            corrections.push(correction);
        }
        let all: Vec<usize> = (0..columns.len()).collect();
        Ok(TableLayout {
            table,
            full: Arc::new(ImageShape::of(&columns, &all)),
            all,
            columns,
            corrections,
            codecs,
        })
    }

    /// The indexes of a full image's columns (every column of the table map).
    pub fn all_columns(&self) -> &[usize] {
        &self.all
    }

    /// Whether rows of this table are read by the prepared codecs.
    pub fn is_prepared(&self) -> bool {
        self.codecs.is_some()
    }

    /// The shape of images whose column bitmap is `present`: the layout's own for a full
    /// image (shared, no copy), else one for the listed subset.
    pub fn image_shape(&self, present: &[usize]) -> Arc<ImageShape> {
        if present.len() == self.columns.len() {
            Arc::clone(&self.full)
        } else {
            Arc::new(ImageShape::of(&self.columns, present))
        }
    }

    /// Reads one row image from the front of `input` with the prepared codecs: a null bitmap
    /// over the present columns, then each non-null value.
    pub fn read_image(
        &self,
        input: &mut &[u8],
        present: &[usize],
        shape: &ImageShape,
    ) -> Result<RawImage, CaptureError> {
        let truncated = |_: Truncated| CaptureError::MalformedEvent {
            event: "rows",
            detail: format!("table {}: row image is truncated", self.table),
        };
        let codecs = self.codecs.as_deref().ok_or_else(|| truncated(Truncated))?;
        let null_bytes = present.len().div_ceil(8);
        if input.len() < null_bytes {
            return Err(truncated(Truncated));
        }
        let (nulls, rest) = input.split_at(null_bytes);
        *input = rest;
        // Values go straight to their sorted slots; NULLs are already in place (written as
        // such, not cloned from one: `vec![Sql::NULL; n]` clones through `Value::clone`).
        let mut values = Vec::with_capacity(present.len());
        values.resize_with(present.len(), || Sql::NULL);
        for ((position, &column), &slot) in present.iter().enumerate().zip(&shape.slots) {
            let is_null = nulls[position / 8] & (1 << (position % 8)) != 0;
            if is_null {
                continue;
            }
            let (Some(prepared), Some(place)) = (codecs.get(column), values.get_mut(slot)) else {
                return Err(truncated(Truncated));
            };
            let value = prepared.codec.read(input).map_err(truncated)?;
            *place = match self.corrections.get(column) {
                Some(correction) if prepared.corrected => correction.normalise(value),
                _ => value,
            };
        }
        Ok(RawImage::shaped(
            Arc::clone(&shape.columns),
            shape.travelling.clone(),
            values,
        ))
    }

    /// Converts one image from mysql_common's generic decoder through the same corrections.
    pub fn generic_image(
        &self,
        row: BinlogRow,
        present: &[usize],
        shape: &ImageShape,
    ) -> Result<RawImage, CaptureError> {
        let values = row
            .unwrap()
            .into_iter()
            .zip(present)
            .map(|(value, &column)| {
                let value = match value {
                    BinlogValue::Value(v) => v,
                    // MySQL's binary JSON; MariaDB writes JSON as text.
                    other => Sql::try_from(other).map_err(|e| CaptureError::MalformedEvent {
                        event: "rows",
                        detail: format!("table {}: {e}", self.table),
                    })?,
                };
                Ok(match self.corrections.get(column) {
                    Some(correction) => correction.normalise(value),
                    None => value,
                })
            })
            .collect::<Result<Vec<_>, CaptureError>>()?;
        Ok(shape.image(values))
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

/// What a row value's TABLE_MAP says about its column, for the corrections below.
#[derive(Debug)]
pub(crate) struct BinlogColumn {
    column_type: ColumnType,
    charset: u16,
    unsigned: bool,
    /// ENUM and SET member names, in definition order.
    members: Option<Vec<String>>,
}

impl BinlogColumn {
    /// Whether values read by the prepared codecs need [`BinlogColumn::normalise`]: ENUM
    /// and SET members, and latin1 text.
    fn corrects_prepared_values(&self) -> bool {
        matches!(
            self.column_type,
            ColumnType::MYSQL_TYPE_ENUM | ColumnType::MYSQL_TYPE_SET
        ) || is_latin1(self.charset)
    }

    /// Brings a decoded binlog value to the form a query of the same column returns:
    /// - a signed MEDIUMINT is read by mysql_common without sign extension;
    /// - without SIGNEDNESS metadata mysql_common reads unsigned integers as signed;
    /// - an ENUM arrives as its 1-based index and a SET as its little-endian member bitmap:
    ///   both become their member names (the bitmap's number, should the names be missing);
    /// - latin1 text arrives in latin1 bytes (our connections speak utf8mb4).
    ///
    /// Values from the prepared codecs need only the last two; the others leave them as
    /// they are.
    fn normalise(&self, value: Sql) -> Sql {
        match (self.column_type, value) {
            (ColumnType::MYSQL_TYPE_INT24, Sql::Int(v)) if !self.unsigned && v > 0x7f_ffff => {
                Sql::Int(v - 0x100_0000)
            }
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
            (ColumnType::MYSQL_TYPE_ENUM, Sql::Int(index)) => match (&self.members, index) {
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
                match &self.members {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            int24.normalise(Sql::Int(-5)),
            Sql::Int(-5),
            "already sign-extended"
        );
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
            members: Some(names.clone()),
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
            members: Some(names),
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
}
