//! Frames in and out of a table's files: conforming a frame to its definition, Parquet bytes,
//! Delta file statistics, and reading files back.
//!
//! Every data file of the lake is encoded here: the table's columns in their defined order and
//! types, rows sorted by its sort order, timestamps as UTC microseconds, zstd level 1, with
//! min/max/null statistics.

use std::io::Cursor;

use polars::prelude::*;
use serde_json::{Map, Value};

use crate::tables::{ColumnType, TableDef};

/// `s` as the column type `ty`. Timestamps go through their physical microseconds: polars
/// treats a naive and a UTC datetime as equal types, and a cast between them keeps the naive
/// one, which Parquet would then record as not adjusted to UTC (`timestamp_ntz` to Delta).
fn cast_to(s: &Column, ty: ColumnType) -> PolarsResult<Column> {
    if ty != ColumnType::Timestamp {
        return s.cast(&ty.polars());
    }
    let us = match s.dtype() {
        DataType::Datetime(tu, _) => {
            let phys = s.to_physical_repr().cast(&DataType::Int64)?;
            let factor = match tu {
                TimeUnit::Nanoseconds => {
                    return Ok(phys
                        .i64()?
                        .clone()
                        .wrapping_trunc_div_scalar(1000)
                        .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
                        .into_column())
                }
                TimeUnit::Microseconds => 1,
                TimeUnit::Milliseconds => 1000,
            };
            phys.i64()?.clone() * factor
        }
        _ => s.cast(&DataType::Int64)?.i64()?.clone(),
    };
    Ok(us
        .into_datetime(TimeUnit::Microseconds, Some(TimeZone::UTC))
        .into_column())
}

/// A frame that does not fit its table, or a Parquet file that cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A defined column is absent: from a frame to write, or (not nullable) from a file read.
    #[error("table {table}: column `{column}` is missing from the frame")]
    MissingColumn {
        /// Short name of the table.
        table: &'static str,
        /// The column's name.
        column: &'static str,
    },
    /// A column that is not nullable holds nulls.
    #[error("table {table}: column `{column}` has nulls but is not nullable")]
    Nulls {
        /// Short name of the table.
        table: &'static str,
        /// The column's name.
        column: &'static str,
    },
    /// polars failed: a cast, a sort, Parquet encoding, or a column the definition lacks.
    #[error("table {table}: {source}")]
    Polars {
        /// Short name of the table.
        table: &'static str,
        /// polars' error.
        source: PolarsError,
    },
    /// A file of the table could not be decoded, or not stacked onto the other files' rows.
    #[error("table {table}, file {file}: {source}")]
    Read {
        /// Short name of the table.
        table: &'static str,
        /// Key (or name) of the file.
        file: String,
        /// polars' error.
        source: PolarsError,
    },
}

/// Selects the table's columns in their defined order, cast to their defined types, and sorts
/// the rows by the table's sort order. A column the definition lacks is refused: the definition
/// is the one place a column exists. A missing column, or nulls in a column that is not
/// nullable, is refused too.
pub fn conform(def: &'static TableDef, df: DataFrame) -> Result<DataFrame, FrameError> {
    let pe = |source| FrameError::Polars {
        table: def.name,
        source,
    };
    let mut cols = Vec::with_capacity(def.columns.len());
    for c in def.columns {
        let s = df.column(c.name).map_err(|_| FrameError::MissingColumn {
            table: def.name,
            column: c.name,
        })?;
        let s = cast_to(s, c.ty).map_err(pe)?;
        if !c.nullable && s.null_count() > 0 {
            return Err(FrameError::Nulls {
                table: def.name,
                column: c.name,
            });
        }
        cols.push(s);
    }
    if df.width() != def.columns.len() {
        let extra: Vec<String> = df
            .get_column_names()
            .iter()
            .filter(|n| def.column(n.as_str()).is_none())
            .map(|n| n.to_string())
            .collect();
        return Err(pe(
            polars_err!(ColumnNotFound: "columns {:?} are not in the table definition", extra),
        ));
    }
    let out = DataFrame::new_infer_height(cols).map_err(pe)?;
    if out.height() < 2 {
        return Ok(out);
    }
    out.sort(def.sort_by.to_vec(), SortMultipleOptions::default())
        .map_err(pe)
}

/// [`conform_read_columns`] of all the table's columns.
#[cfg(test)]
pub(crate) fn conform_read(def: &'static TableDef, df: DataFrame) -> Result<DataFrame, FrameError> {
    conform_read_columns(def, df, &def.column_names().collect::<Vec<_>>())
}

/// A frame read from one of the table's files, as the table's `columns` given, in that order
/// and with the table's types (files written before a nullable column was added lack it: it
/// reads as nulls).
pub(crate) fn conform_read_columns(
    def: &'static TableDef,
    df: DataFrame,
    columns: &[&str],
) -> Result<DataFrame, FrameError> {
    let pe = |source| FrameError::Polars {
        table: def.name,
        source,
    };
    let n = df.height();
    let mut cols = Vec::with_capacity(columns.len());
    for name in columns {
        let c = def.column(name).ok_or_else(|| {
            pe(polars_err!(ColumnNotFound: "{name:?} is not a column of the table definition"))
        })?;
        match df.column(c.name) {
            Ok(s) if c.ty != ColumnType::Timestamp && s.dtype() == &c.ty.polars() => {
                cols.push(s.clone())
            }
            Ok(s) => cols.push(cast_to(s, c.ty).map_err(pe)?),
            Err(_) if c.nullable => cols.push(Column::full_null(c.name.into(), n, &c.ty.polars())),
            Err(_) => {
                return Err(FrameError::MissingColumn {
                    table: def.name,
                    column: c.name,
                })
            }
        }
    }
    DataFrame::new(n, cols).map_err(pe)
}

/// The writer of every file of the lake: zstd level 1, files within a few per cent of the
/// default level's size, written in about half the time (the aggregator writes every event once
/// and rewrites summaries often); min/max/null statistics, what readers skip files and row groups
/// by (distinct counts, which no reader here uses, were estimated for every column of every
/// file).
fn parquet_writer<W: std::io::Write>(w: W) -> ParquetWriter<W> {
    let level = polars_utils::compression::ZstdLevel::try_new(1).expect("zstd level 1 is valid");
    ParquetWriter::new(w)
        .with_compression(ParquetCompression::Zstd(Some(level)))
        .with_statistics(StatisticsOptions::default())
}

/// Parquet bytes of a conformed frame (zstd level 1, min/max/null statistics).
pub fn parquet_bytes(def: &'static TableDef, df: &mut DataFrame) -> Result<Vec<u8>, FrameError> {
    let mut buf = Vec::new();
    parquet_writer(&mut buf)
        .finish(df)
        .map_err(|source| FrameError::Polars {
            table: def.name,
            source,
        })?;
    Ok(buf)
}

fn json_value(ty: ColumnType, v: AnyValue<'_>) -> Option<Value> {
    Some(match (ty, v) {
        (_, AnyValue::Null) => return None,
        (ColumnType::String, v) => Value::String(v.str_value().to_string()),
        (ColumnType::Date, AnyValue::Date(d)) => {
            Value::String(owsu_schemas::time::epoch_day_to_date(d).to_string())
        }
        (ColumnType::Timestamp, AnyValue::Datetime(us, _, _)) => {
            let t = chrono::DateTime::from_timestamp_micros(us)?;
            Value::String(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        }
        (ColumnType::Long | ColumnType::Integer, v) => Value::from(v.extract::<i64>()?),
        (ColumnType::Double, v) => Value::from(v.extract::<f64>()?),
        (ColumnType::Boolean, AnyValue::Boolean(b)) => Value::Bool(b),
        _ => return None,
    })
}

/// Delta per-file statistics (numRecords; min, max and null count of the table's stats
/// columns), gathered a frame at a time for a file written in parts ([`FileParts`]).
#[derive(Debug, Default, Clone)]
pub struct Stats {
    rows: usize,
    min: Map<String, Value>,
    max: Map<String, Value>,
    nulls: Map<String, Value>,
}

/// `a` before `b` in the order of their column type (ISO dates and timestamps of one width
/// order as strings do).
fn before(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x < y,
            _ => x.as_f64() < y.as_f64(),
        },
        (Value::String(x), Value::String(y)) => x < y,
        (Value::Bool(x), Value::Bool(y)) => !x & y,
        _ => false,
    }
}

impl Stats {
    /// Adds a frame's rows (conformed to `def`).
    pub fn add(&mut self, def: &'static TableDef, df: &DataFrame) {
        self.rows += df.height();
        for name in def.stats {
            let (Some(c), Ok(s)) = (def.column(name), df.column(name)) else {
                continue;
            };
            let s = s.as_materialized_series();
            let n = self.nulls.get(*name).and_then(Value::as_i64).unwrap_or(0);
            self.nulls
                .insert((*name).into(), Value::from(n + s.null_count() as i64));
            let lo = s
                .min_reduce()
                .ok()
                .map(|sc| sc.as_any_value().into_static());
            let hi = s
                .max_reduce()
                .ok()
                .map(|sc| sc.as_any_value().into_static());
            if let Some(v) = lo.and_then(|v| json_value(c.ty, v)) {
                if self.min.get(*name).is_none_or(|m| before(&v, m)) {
                    self.min.insert((*name).into(), v);
                }
            }
            if let Some(v) = hi.and_then(|v| json_value(c.ty, v)) {
                if self.max.get(*name).is_none_or(|m| before(m, &v)) {
                    self.max.insert((*name).into(), v);
                }
            }
        }
    }

    /// Rows added.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The `stats` field of the file's `add` action.
    pub fn json(&self) -> String {
        serde_json::json!({
            "numRecords": self.rows,
            "minValues": self.min,
            "maxValues": self.max,
            "nullCount": self.nulls,
        })
        .to_string()
    }
}

/// Delta per-file statistics of a whole frame.
pub(crate) fn stats_json(def: &'static TableDef, df: &DataFrame) -> String {
    let mut s = Stats::default();
    s.add(def, df);
    s.json()
}

/// The bytes of a file written in parts, shared between the Parquet writer and its owner.
#[derive(Clone, Default)]
struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buffer lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A Parquet file of a table written a frame at a time: each part conformed (cast, sorted by
/// the table's order) and encoded as a row group of its own at once, so the file is held
/// compressed, never as rows. Readers skip row groups by their min/max statistics as they do
/// files; compaction sorts whole files again.
pub struct FileParts {
    def: &'static TableDef,
    writer: polars::io::parquet::write::BatchedWriter<SharedBuf>,
    buf: SharedBuf,
    stats: Stats,
}

impl FileParts {
    /// A new file of `def`'s table.
    pub fn new(def: &'static TableDef) -> Result<Self, FrameError> {
        let buf = SharedBuf::default();
        let schema = empty(def).schema().as_ref().clone();
        let writer = parquet_writer(buf.clone())
            .batched(&schema)
            .map_err(|source| FrameError::Polars {
                table: def.name,
                source,
            })?;
        Ok(FileParts {
            def,
            writer,
            buf,
            stats: Stats::default(),
        })
    }

    /// Conforms `df` to the table and appends it as a row group.
    pub fn write(&mut self, df: DataFrame) -> Result<(), FrameError> {
        if df.height() == 0 {
            return Ok(());
        }
        let mut df = conform(self.def, df)?;
        df.rechunk_mut();
        self.stats.add(self.def, &df);
        self.writer
            .write_batch(&df)
            .map_err(|source| FrameError::Polars {
                table: self.def.name,
                source,
            })
    }

    /// Rows written.
    pub fn rows(&self) -> usize {
        self.stats.rows()
    }

    /// Compressed bytes written so far.
    pub fn bytes(&self) -> usize {
        self.buf.0.lock().expect("buffer lock").len()
    }

    /// The whole file (its footer written) and its statistics.
    pub fn finish(self) -> Result<(Vec<u8>, Stats), FrameError> {
        self.writer.finish().map_err(|source| FrameError::Polars {
            table: self.def.name,
            source,
        })?;
        drop(self.writer);
        let bytes = std::mem::take(&mut *self.buf.0.lock().expect("buffer lock"));
        Ok((bytes, self.stats))
    }
}

/// Reads one of the table's files, all its columns as stored (`file` names it in errors).
pub fn read_parquet(
    def: &'static TableDef,
    file: &str,
    bytes: &[u8],
) -> Result<DataFrame, FrameError> {
    ParquetReader::new(Cursor::new(bytes))
        .finish()
        .map_err(|source| FrameError::Read {
            table: def.name,
            file: file.to_owned(),
            source,
        })
}

/// Reads only `columns` of one of the table's files (those the file has: a column added to the
/// table after the file was written is left for [`conform_read_columns`] to fill with nulls).
pub(crate) fn read_parquet_columns(
    def: &'static TableDef,
    file: &str,
    bytes: &[u8],
    columns: &[&str],
) -> Result<DataFrame, FrameError> {
    let re = |source| FrameError::Read {
        table: def.name,
        file: file.to_owned(),
        source,
    };
    let mut reader = ParquetReader::new(Cursor::new(bytes));
    let schema = reader.schema().map_err(re)?;
    let present: Vec<String> = columns
        .iter()
        .filter(|c| schema.contains(c))
        .map(|c| (*c).to_owned())
        .collect();
    reader.with_columns(Some(present)).finish().map_err(re)
}

/// An empty frame with the table's columns and types.
pub fn empty(def: &'static TableDef) -> DataFrame {
    let cols: Vec<Column> = def
        .columns
        .iter()
        .map(|c| Column::new_empty(c.name.into(), &c.ty.polars()))
        .collect();
    DataFrame::new_infer_height(cols).expect("empty columns of one height")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::PROCESSING_TIMES;

    #[test]
    fn conform_orders_casts_sorts_and_refuses_strangers() {
        let df = df!(
            "processing_days" => [2.0, 1.0],
            "processing_seconds" => [172_800i64, 86_400],
            "service_code" => ["S", "S"],
            "sector_code" => ["X", "X"],
            "level" => ["district", "district"],
            "province_code" => ["KH-01", "KH-01"],
            "unit_code" => ["KH-0101", "KH-0101"],
            "date" => [18_700i32, 18_700],
            "received_date" => [18_698i32, 18_699],
        )
        .unwrap();
        let df = df
            .lazy()
            .with_columns([
                col("date").cast(DataType::Date),
                col("received_date").cast(DataType::Date),
            ])
            .collect()
            .unwrap();
        let out = conform(&PROCESSING_TIMES, df.clone()).unwrap();
        let names: Vec<_> = out
            .get_column_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(names[0], "date");
        assert_eq!(
            out.column("processing_seconds")
                .unwrap()
                .i64()
                .unwrap()
                .get(0),
            Some(86_400),
            "sorted by the table's order"
        );
        let stats: Value = serde_json::from_str(&stats_json(&PROCESSING_TIMES, &out)).unwrap();
        assert_eq!(stats["numRecords"], 2);
        assert_eq!(stats["minValues"]["unit_code"], "KH-0101");
        assert_eq!(stats["maxValues"]["date"], "2021-03-14");
        let mut extra = df.clone();
        extra
            .with_column(Column::new("surprise".into(), [1i64, 2]))
            .unwrap();
        assert!(conform(&PROCESSING_TIMES, extra).is_err());
        assert!(matches!(
            conform(&PROCESSING_TIMES, df.drop("level").unwrap()),
            Err(FrameError::MissingColumn {
                column: "level",
                ..
            })
        ));
    }
}

#[cfg(test)]
mod timestamp_tests {
    use super::*;
    use crate::tables::RAW_UNIT_DAYS;

    #[test]
    fn timestamps_round_trip_as_utc() {
        let df = df!(
            "unit_code" => ["KH-01"],
            "date" => [18_700i32],
            "services_recorded" => [3i32],
            "complaints_recorded" => [0i32],
            "closed_at" => [1_614_852_000_000_000i64],
            "kafka_partition" => [1i32],
            "kafka_offset" => [7i64],
            "anomalies" => [None::<&str>],
        )
        .unwrap();
        let mut df = conform(&RAW_UNIT_DAYS, df).unwrap();
        let bytes = parquet_bytes(&RAW_UNIT_DAYS, &mut df).unwrap();
        let back = read_parquet(&RAW_UNIT_DAYS, "f", &bytes).unwrap();
        let back = conform_read(&RAW_UNIT_DAYS, back).unwrap();
        assert_eq!(
            back.column("closed_at").unwrap().dtype(),
            &ColumnType::Timestamp.polars()
        );
        let mut out = empty(&RAW_UNIT_DAYS);
        out.vstack_mut_owned(back).unwrap();
        assert_eq!(out.height(), 1);
    }
}
