//! Raw landing: the decoded events, as they arrived, as rows of the lake's raw tables.
//!
//! One table per record kind (`owsu_lake::tables::RAW`); a batch adds one file per table, rows
//! sorted by unit and event time, each row keeping its `kafka_partition` and `kafka_offset`. The
//! batch's last offset per partition is committed with the file (a Delta `txn` action), so a
//! replayed batch is recognised and not appended twice.

use owsu_lake::tables::{TableDef, RAW};
use owsu_schemas::record::{
    ComplaintEvent, ComplaintStage, Event, RecordKind, ServiceEvent, ServiceStage, UnitDayClosed,
};
use owsu_schemas::time::{date_to_epoch_day, epoch_day_to_date, local_date};
use owsu_schemas::Flags;
use polars::prelude::*;
use uuid::Uuid;

/// An event with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Landed {
    /// The decoded event.
    pub event: Event,
    /// Business-rule anomalies found when it was checked (kept in the `anomalies` column).
    pub flags: Flags,
    /// Kafka partition it was read from (the `kafka_partition` column).
    pub partition: i32,
    /// Its offset in that partition (the `kafka_offset` column).
    pub offset: i64,
}

/// The raw table of a record kind.
pub(crate) fn table_of(kind: RecordKind) -> &'static TableDef {
    RAW[kind as usize]
}

/// Which record kind a topic name carries (a deployment prefix may precede the base name).
pub(crate) fn kind_of_topic(topic: &str) -> Option<RecordKind> {
    RecordKind::ALL
        .into_iter()
        .find(|k| topic.ends_with(k.topic()))
}

fn ts(name: &str, v: Vec<i64>) -> PolarsResult<Column> {
    // Delta timestamps are microseconds; events carry milliseconds.
    Series::new(
        name.into(),
        v.into_iter().map(|ms| ms * 1000).collect::<Vec<_>>(),
    )
    .cast(&DataType::Datetime(
        TimeUnit::Microseconds,
        Some(TimeZone::UTC),
    ))
    .map(Column::from)
}

fn dates(name: &str, v: Vec<i32>) -> PolarsResult<Column> {
    Series::new(name.into(), v)
        .cast(&DataType::Date)
        .map(Column::from)
}

/// A column of ids in their text form, written into one buffer: a `String` per row was
/// an allocation and a formatter call for every event.
fn uuids(name: &str, ids: impl ExactSizeIterator<Item = uuid::Uuid>) -> Column {
    const LEN: usize = uuid::fmt::Hyphenated::LENGTH;
    let n = ids.len();
    let mut buf = String::with_capacity(n * LEN);
    for id in ids {
        buf.push_str(id.hyphenated().encode_lower(&mut [0; LEN]));
    }
    let rows: Vec<&str> = (0..n).map(|i| &buf[i * LEN..(i + 1) * LEN]).collect();
    col(name, rows)
}

fn col<T, V>(name: &str, v: V) -> Column
where
    Series: NamedFrom<V, T>,
    T: ?Sized,
{
    Column::from(Series::new(name.into(), v))
}

/// The rows of `kind`'s raw table for these events (all of that kind), unsorted.
pub(crate) fn to_frame(kind: RecordKind, rows: &[&Landed]) -> PolarsResult<DataFrame> {
    let part: Vec<i32> = rows.iter().map(|r| r.partition).collect();
    let off: Vec<i64> = rows.iter().map(|r| r.offset).collect();
    let anomalies = col(
        "anomalies",
        rows.iter().map(|r| r.flags.to_column()).collect::<Vec<_>>(),
    );
    let mut df = match kind {
        RecordKind::Service => {
            let ev: Vec<&ServiceEvent> = rows
                .iter()
                .filter_map(|r| {
                    if let Event::Service(s) = &r.event {
                        Some(s)
                    } else {
                        None
                    }
                })
                .collect();
            DataFrame::new_infer_height(vec![
                uuids("event_id", ev.iter().map(|e| e.event_id)),
                col(
                    "unit_code",
                    ev.iter().map(|e| e.unit_code.as_str()).collect::<Vec<_>>(),
                ),
                col(
                    "request_id",
                    ev.iter().map(|e| e.request_id.as_str()).collect::<Vec<_>>(),
                ),
                col(
                    "sector_code",
                    ev.iter()
                        .map(|e| e.sector_code.as_str())
                        .collect::<Vec<_>>(),
                ),
                col(
                    "service_code",
                    ev.iter()
                        .map(|e| e.service_code.as_str())
                        .collect::<Vec<_>>(),
                ),
                col(
                    "stage",
                    ev.iter().map(|e| e.stage.as_str()).collect::<Vec<_>>(),
                ),
                col(
                    "fee_riel",
                    ev.iter().map(|e| e.fee_riel).collect::<Vec<_>>(),
                ),
                col(
                    "channel",
                    ev.iter().map(|e| e.channel.as_str()).collect::<Vec<_>>(),
                ),
                ts("occurred_at", ev.iter().map(|e| e.occurred_at).collect())?,
                ts("recorded_at", ev.iter().map(|e| e.recorded_at).collect())?,
                col(
                    "supersedes_event_id",
                    ev.iter()
                        .map(|e| e.supersedes_event_id.map(|u| u.to_string()))
                        .collect::<Vec<_>>(),
                ),
                col(
                    "window_no",
                    ev.iter().map(|e| e.window_no).collect::<Vec<_>>(),
                ),
                dates(
                    "event_date",
                    ev.iter()
                        .map(|e| date_to_epoch_day(local_date(e.occurred_at)))
                        .collect(),
                )?,
                col("kafka_partition", part),
                col("kafka_offset", off),
            ])?
        }
        RecordKind::Complaint => {
            let ev: Vec<&ComplaintEvent> = rows
                .iter()
                .filter_map(|r| {
                    if let Event::Complaint(c) = &r.event {
                        Some(c)
                    } else {
                        None
                    }
                })
                .collect();
            DataFrame::new_infer_height(vec![
                uuids("event_id", ev.iter().map(|e| e.event_id)),
                col(
                    "unit_code",
                    ev.iter().map(|e| e.unit_code.as_str()).collect::<Vec<_>>(),
                ),
                col(
                    "complaint_id",
                    ev.iter()
                        .map(|e| e.complaint_id.as_str())
                        .collect::<Vec<_>>(),
                ),
                col(
                    "sector_code",
                    ev.iter()
                        .map(|e| e.sector_code.as_deref())
                        .collect::<Vec<_>>(),
                ),
                col(
                    "stage",
                    ev.iter().map(|e| e.stage.as_str()).collect::<Vec<_>>(),
                ),
                ts("occurred_at", ev.iter().map(|e| e.occurred_at).collect())?,
                ts("recorded_at", ev.iter().map(|e| e.recorded_at).collect())?,
                col(
                    "supersedes_event_id",
                    ev.iter()
                        .map(|e| e.supersedes_event_id.map(|u| u.to_string()))
                        .collect::<Vec<_>>(),
                ),
                dates(
                    "event_date",
                    ev.iter()
                        .map(|e| date_to_epoch_day(local_date(e.occurred_at)))
                        .collect(),
                )?,
                col("kafka_partition", part),
                col("kafka_offset", off),
            ])?
        }
        RecordKind::UnitDay => {
            let ev: Vec<&UnitDayClosed> = rows
                .iter()
                .filter_map(|r| {
                    if let Event::UnitDay(u) = &r.event {
                        Some(u)
                    } else {
                        None
                    }
                })
                .collect();
            DataFrame::new_infer_height(vec![
                col(
                    "unit_code",
                    ev.iter().map(|e| e.unit_code.as_str()).collect::<Vec<_>>(),
                ),
                Column::from(
                    Series::new(
                        "date".into(),
                        ev.iter()
                            .map(|e| date_to_epoch_day(e.date))
                            .collect::<Vec<_>>(),
                    )
                    .cast(&DataType::Date)?,
                ),
                col(
                    "services_recorded",
                    ev.iter().map(|e| e.services_recorded).collect::<Vec<_>>(),
                ),
                col(
                    "complaints_recorded",
                    ev.iter().map(|e| e.complaints_recorded).collect::<Vec<_>>(),
                ),
                ts("closed_at", ev.iter().map(|e| e.closed_at).collect())?,
                col("kafka_partition", part),
                col("kafka_offset", off),
            ])?
        }
    };
    df.with_column(anomalies)?;
    Ok(df)
}

/// Raw rows that cannot be read back into events.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RawReadError {
    /// A column is missing or not of the expected type.
    #[error("raw table {key}: {source}")]
    Parquet {
        /// What the rows came from (the file's path, as the caller names it).
        key: String,
        /// The Polars error.
        source: PolarsError,
    },
    /// One row's value cannot be turned into its event's field.
    #[error("raw table {key}, row {row}: field `{field}`: {problem}")]
    Row {
        /// What the rows came from (the file's path, as the caller names it).
        key: String,
        /// Row index within the frame given to [`from_frame`] (0-based).
        row: usize,
        /// The column at fault.
        field: &'static str,
        /// What is wrong with the value (missing, unparsable, unknown code).
        problem: String,
    },
}

/// Reads rows of `kind`'s raw table back into events (`key` names them in errors).
pub(crate) fn from_frame(
    key: &str,
    kind: RecordKind,
    df: &DataFrame,
) -> Result<Vec<Landed>, RawReadError> {
    let pe = |source| RawReadError::Parquet {
        key: key.to_owned(),
        source,
    };
    let n = df.height();
    let strs = |name: &str| -> Result<Vec<Option<String>>, RawReadError> {
        df.column(name)
            .and_then(|c| {
                c.str()
                    .map(|s| s.iter().map(|v| v.map(str::to_owned)).collect())
            })
            .map_err(pe)
    };
    let i64s = |name: &str| -> Result<Vec<Option<i64>>, RawReadError> {
        df.column(name)
            .and_then(|c| c.i64().map(|s| s.iter().collect()))
            .map_err(pe)
    };
    let i32s = |name: &str| -> Result<Vec<Option<i32>>, RawReadError> {
        df.column(name)
            .and_then(|c| c.i32().map(|s| s.iter().collect()))
            .map_err(pe)
    };
    let times = |name: &str| -> Result<Vec<Option<i64>>, RawReadError> {
        df.column(name)
            .and_then(|c| {
                c.datetime().map(|s| {
                    s.physical()
                        .iter()
                        .map(|v| v.map(|us| us.div_euclid(1000)))
                        .collect()
                })
            })
            .map_err(pe)
    };
    let row_err = |row, field, problem: String| RawReadError::Row {
        key: key.to_owned(),
        row,
        field,
        problem,
    };
    let need =
        |v: Option<String>, row, field| v.ok_or_else(|| row_err(row, field, "missing".into()));
    let uuid = |v: Option<String>, row, field| -> Result<Uuid, RawReadError> {
        let s = need(v, row, field)?;
        Uuid::parse_str(&s).map_err(|e| row_err(row, field, e.to_string()))
    };
    let part = i32s("kafka_partition")?;
    let off = i64s("kafka_offset")?;
    let flags = strs("anomalies")?
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            v.map_or(Ok(Flags::NONE), |s| Flags::parse(&s))
                .map_err(|code| row_err(i, "anomalies", format!("unknown rule code {code:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(n);
    match kind {
        RecordKind::Service => {
            let (id, unit, req, sec, svc, stage, fee, ch, occ, rec, sup, win) = (
                strs("event_id")?,
                strs("unit_code")?,
                strs("request_id")?,
                strs("sector_code")?,
                strs("service_code")?,
                strs("stage")?,
                i64s("fee_riel")?,
                strs("channel")?,
                times("occurred_at")?,
                times("recorded_at")?,
                strs("supersedes_event_id")?,
                i32s("window_no")?,
            );
            for i in 0..n {
                let st = need(stage[i].clone(), i, "stage")?;
                out.push(Landed {
                    flags: flags[i],
                    event: Event::Service(ServiceEvent {
                        event_id: uuid(id[i].clone(), i, "event_id")?,
                        unit_code: need(unit[i].clone(), i, "unit_code")?,
                        request_id: need(req[i].clone(), i, "request_id")?,
                        sector_code: need(sec[i].clone(), i, "sector_code")?,
                        service_code: need(svc[i].clone(), i, "service_code")?,
                        stage: ServiceStage::parse(&st)
                            .ok_or_else(|| row_err(i, "stage", st.clone()))?,
                        fee_riel: fee[i],
                        channel: ch[i].clone().unwrap_or_default(),
                        occurred_at: occ[i]
                            .ok_or_else(|| row_err(i, "occurred_at", "missing".into()))?,
                        recorded_at: rec[i]
                            .ok_or_else(|| row_err(i, "recorded_at", "missing".into()))?,
                        supersedes_event_id: match sup[i].clone() {
                            None => None,
                            s => Some(uuid(s, i, "supersedes_event_id")?),
                        },
                        window_no: win[i],
                    }),
                    partition: part[i].unwrap_or(-1),
                    offset: off[i].unwrap_or(-1),
                });
            }
        }
        RecordKind::Complaint => {
            let (id, unit, cid, sec, stage, occ, rec, sup) = (
                strs("event_id")?,
                strs("unit_code")?,
                strs("complaint_id")?,
                strs("sector_code")?,
                strs("stage")?,
                times("occurred_at")?,
                times("recorded_at")?,
                strs("supersedes_event_id")?,
            );
            for i in 0..n {
                let st = need(stage[i].clone(), i, "stage")?;
                out.push(Landed {
                    flags: flags[i],
                    event: Event::Complaint(ComplaintEvent {
                        event_id: uuid(id[i].clone(), i, "event_id")?,
                        unit_code: need(unit[i].clone(), i, "unit_code")?,
                        complaint_id: need(cid[i].clone(), i, "complaint_id")?,
                        sector_code: sec[i].clone(),
                        stage: ComplaintStage::parse(&st)
                            .ok_or_else(|| row_err(i, "stage", st.clone()))?,
                        occurred_at: occ[i]
                            .ok_or_else(|| row_err(i, "occurred_at", "missing".into()))?,
                        recorded_at: rec[i]
                            .ok_or_else(|| row_err(i, "recorded_at", "missing".into()))?,
                        supersedes_event_id: match sup[i].clone() {
                            None => None,
                            s => Some(uuid(s, i, "supersedes_event_id")?),
                        },
                    }),
                    partition: part[i].unwrap_or(-1),
                    offset: off[i].unwrap_or(-1),
                });
            }
        }
        RecordKind::UnitDay => {
            let unit = strs("unit_code")?;
            let date: Vec<Option<i32>> = df
                .column("date")
                .and_then(|c| c.date().map(|s| s.physical().iter().collect()))
                .map_err(pe)?;
            let (s, c, closed) = (
                i32s("services_recorded")?,
                i32s("complaints_recorded")?,
                times("closed_at")?,
            );
            for i in 0..n {
                out.push(Landed {
                    flags: flags[i],
                    event: Event::UnitDay(UnitDayClosed {
                        unit_code: need(unit[i].clone(), i, "unit_code")?,
                        date: epoch_day_to_date(
                            date[i].ok_or_else(|| row_err(i, "date", "missing".into()))?,
                        ),
                        services_recorded: s[i].unwrap_or(0),
                        complaints_recorded: c[i].unwrap_or(0),
                        closed_at: closed[i]
                            .ok_or_else(|| row_err(i, "closed_at", "missing".into()))?,
                    }),
                    partition: part[i].unwrap_or(-1),
                    offset: off[i].unwrap_or(-1),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn every_kind_round_trips_through_its_raw_table() {
        let s = Event::Service(ServiceEvent {
            event_id: Uuid::from_u128(1),
            unit_code: "KH-01".into(),
            request_id: "ab".into(),
            sector_code: "COM".into(),
            service_code: "COM-TRADE-LIC".into(),
            stage: ServiceStage::FeePaid,
            fee_riel: Some(-4000),
            channel: "counter".into(),
            occurred_at: 1_614_820_000_000,
            recorded_at: 1_614_820_100_000,
            supersedes_event_id: Some(Uuid::from_u128(2)),
            window_no: None,
        });
        let c = Event::Complaint(ComplaintEvent {
            event_id: Uuid::from_u128(3),
            unit_code: "KH-01".into(),
            complaint_id: "cd".into(),
            sector_code: None,
            stage: ComplaintStage::Withdrawn,
            occurred_at: 1_614_820_000_000,
            recorded_at: 1_614_820_000_000,
            supersedes_event_id: None,
        });
        let u = Event::UnitDay(UnitDayClosed {
            unit_code: "KH-01".into(),
            date: NaiveDate::from_ymd_opt(2021, 3, 4).unwrap(),
            services_recorded: 9,
            complaints_recorded: 1,
            closed_at: 1_614_852_000_000,
        });
        for (kind, e) in [
            (RecordKind::Service, s),
            (RecordKind::Complaint, c),
            (RecordKind::UnitDay, u),
        ] {
            let l = Landed {
                event: e,
                flags: [owsu_schemas::Rule::FutureTime].into_iter().collect(),
                partition: 3,
                offset: 99,
            };
            let df =
                owsu_lake::frame::conform(table_of(kind), to_frame(kind, &[&l]).unwrap()).unwrap();
            let mut df2 = df.clone();
            let bytes = owsu_lake::frame::parquet_bytes(table_of(kind), &mut df2).unwrap();
            let back = owsu_lake::frame::read_parquet(table_of(kind), "k", &bytes).unwrap();
            assert_eq!(from_frame("k", kind, &back).unwrap(), vec![l]);
        }
    }
}
