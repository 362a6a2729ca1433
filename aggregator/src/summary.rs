//! Summaries: a pure function of the raw events, computed per Kafka partition and quarter.
//!
//! Keying by unit code puts every event of a unit (services, complaints, day closures) on the
//! same partition number of the three topics, and the range assignor gives those partitions to
//! the same aggregator instance. So one instance holds everything needed for its units and is
//! the only writer of their summary files: in each summary table (a Delta table of the lake), one
//! file per (Kafka partition, quarter), `YYYY-Qn-pPPP-<uuid>.parquet`, replaced in a commit whenever
//! a batch touches that quarter.
//!
//! The cells are kept by [`crate::state`]; this module turns a period of them into the tables'
//! rows. The meaning of every figure follows DESIGN.md ("Meaning of the figures"):
//! - events are counted once per `event_id`; an event named by another's `supersedes_event_id`
//!   no longer counts (whichever arrives first);
//! - a request counts as received on its first RECEIVED, provided on its first DELIVERED,
//!   rejected/cancelled on its first REJECTED/CANCELLED; processing time = first DELIVERED −
//!   first RECEIVED; revenue = sum of FEE_PAID fees on their own day (refunds negative);
//! - a complaint counts on the day of its first RECEIVED, classified by its latest jurisdiction
//!   decision (within/outside, else undecided) and latest status event (resolved/more info/
//!   withdrawn, else open); RESOLVED implies within jurisdiction;
//! - a unit-day compares the unit's own latest `UnitDayClosed` counts with the distinct events
//!   that arrived recorded on that day.

use std::collections::BTreeMap;

use owsu_schemas::reference::Reference;
use owsu_schemas::time::Millis;
use polars::prelude::*;
use uuid::Uuid;

/// A calendar month (Cambodia time).
pub(crate) type Month = (i32, u32);

/// The summary tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// `services_daily`: per day, unit and service, request counts, fees and processing sums.
    ServicesDaily,
    /// `complaints_daily`: per day of receipt, unit and sector, complaints by jurisdiction and
    /// status.
    ComplaintsDaily,
    /// `unit_days`: per day and unit, the unit's own closing counts against the events that
    /// arrived.
    UnitDays,
    /// `processing_times`: one row per delivered request, with its processing time.
    ProcessingTimes,
}

impl Table {
    /// Every summary table.
    pub const ALL: [Table; 4] = [
        Table::ServicesDaily,
        Table::ComplaintsDaily,
        Table::UnitDays,
        Table::ProcessingTimes,
    ];
    /// The lake table.
    pub fn def(self) -> &'static owsu_lake::tables::TableDef {
        use owsu_lake::tables as t;
        match self {
            Table::ServicesDaily => &t::SERVICES_DAILY,
            Table::ComplaintsDaily => &t::COMPLAINTS_DAILY,
            Table::UnitDays => &t::UNIT_DAYS,
            Table::ProcessingTimes => &t::PROCESSING_TIMES,
        }
    }
}

/// A calendar quarter (Cambodia time), (year, 1..=4): the period one summary file holds.
/// Quarters rather than months keep a national year at 4 × partitions files per table, and a
/// batch still rewrites only the quarters its events touch.
pub(crate) type Quarter = (i32, u32);

/// The quarter a month falls in (`month` must be 1..=12).
pub fn quarter_of((year, month): Month) -> Quarter {
    (year, (month - 1) / 3 + 1)
}

/// The months of a quarter.
pub(crate) fn quarter_months((year, q): Quarter) -> [Month; 3] {
    let first = (q - 1) * 3 + 1;
    [(year, first), (year, first + 1), (year, first + 2)]
}

/// Name of a new summary file for one Kafka partition's quarter (unique per write).
pub fn file_name((year, q): Quarter, partition: i32) -> String {
    format!(
        "{year}-Q{q}-p{partition:03}-{}.parquet",
        Uuid::new_v4().simple()
    )
}

/// The (quarter, Kafka partition) a summary file holds, from its name. Files of the earlier
/// layout, one per month (`YYYY-MM-pPPP-…`), count as their quarter's, so the first write of
/// that quarter replaces them.
pub(crate) fn parse_file_name(path: &str) -> Option<(Quarter, i32)> {
    let name = path.rsplit('/').next()?;
    let mut it = name.splitn(4, '-');
    let year = it.next()?.parse().ok()?;
    let period = it.next()?;
    let quarter = match period.strip_prefix('Q') {
        Some(q) => q.parse().ok().filter(|q| (1..=4).contains(q))?,
        None => quarter_of((year, period.parse().ok().filter(|m| (1..=12).contains(m))?)).1,
    };
    let partition = it.next()?.strip_prefix('p')?.parse().ok()?;
    Some(((year, quarter), partition))
}

/// Code → index.
type CodeMap = owsu_schemas::FastMap<String, u16>;

/// Codes interned to small integers (the registry and catalogue positions).
pub struct Codes {
    units: CodeMap,
    services: CodeMap,
    sectors: CodeMap,
    /// Unit index → unit code (registry order).
    pub unit_code: Vec<String>,
    /// Unit index → the unit's province code.
    pub(crate) unit_province: Vec<String>,
    /// Unit index → the unit's level, as its text form.
    pub(crate) unit_level: Vec<&'static str>,
    /// Service index → service code (catalogue order, sector by sector).
    pub service_code: Vec<String>,
    /// Service index → index of its sector.
    pub service_sector: Vec<u16>,
    /// Sector index → sector code (catalogue order).
    pub sector_code: Vec<String>,
}

impl Codes {
    /// Index of a unit code, if the registry knows it.
    pub fn unit(&self, code: &str) -> Option<u16> {
        self.units.get(code).copied()
    }
    /// Index of a service code, if the catalogue knows it.
    pub fn service(&self, code: &str) -> Option<u16> {
        self.services.get(code).copied()
    }
    /// Index of a sector code, if the catalogue knows it.
    pub fn sector(&self, code: &str) -> Option<u16> {
        self.sectors.get(code).copied()
    }

    /// Numbers the registry's units and the catalogue's sectors and services by their position.
    pub fn new(r: &Reference) -> Self {
        let units = r
            .registry
            .units
            .iter()
            .enumerate()
            .map(|(i, u)| (u.code.clone(), i as u16))
            .collect();
        let sectors: CodeMap = r
            .catalogue
            .sectors
            .iter()
            .enumerate()
            .map(|(i, s)| (s.code.clone(), i as u16))
            .collect();
        let svc: Vec<(String, u16)> = r
            .catalogue
            .services()
            .map(|(s, v)| (v.code.clone(), sectors[&s.code]))
            .collect();
        Codes {
            units,
            services: svc
                .iter()
                .enumerate()
                .map(|(i, (c, _))| (c.clone(), i as u16))
                .collect(),
            sectors,
            unit_code: r.registry.units.iter().map(|u| u.code.clone()).collect(),
            unit_province: r
                .registry
                .units
                .iter()
                .map(|u| u.province_code.clone())
                .collect(),
            unit_level: r.registry.units.iter().map(|u| u.level.as_str()).collect(),
            service_code: svc.iter().map(|(c, _)| c.clone()).collect(),
            service_sector: svc.iter().map(|(_, s)| *s).collect(),
            sector_code: r.catalogue.sectors.iter().map(|s| s.code.clone()).collect(),
        }
    }
}

/// A unit's own closing count of a day (the latest wins; ties broken by content).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DayClose {
    /// When the unit closed the day (Unix milliseconds, from the event).
    pub closed_at: Millis,
    /// Service events the unit says it recorded that day.
    pub services: i32,
    /// Complaint events the unit says it recorded that day.
    pub complaints: i32,
}

/// Figures of one `services_daily` cell: (day, unit, service). The day is the Cambodia date
/// of the event's `occurred_at`; only counted events (not superseded) take part.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServiceAgg {
    /// Requests whose first RECEIVED fell on this day.
    pub received: i64,
    /// Requests whose first DELIVERED fell on this day.
    pub delivered: i64,
    /// Requests whose first REJECTED fell on this day.
    pub rejected: i64,
    /// Requests whose first CANCELLED fell on this day.
    pub cancelled: i64,
    /// FEE_PAID events with a positive fee on this day.
    pub fee_payments: i64,
    /// FEE_PAID events with a negative fee (refunds) on this day.
    pub refunds: i64,
    /// Sum of the FEE_PAID fees on this day, in riel (refunds count negative).
    pub revenue_riel: i64,
    /// Sum of the processing times of the requests delivered this day, in whole seconds
    /// (first DELIVERED − first RECEIVED; negative times are left out).
    pub processing_seconds_sum: i64,
    /// Requests in `processing_seconds_sum`.
    pub processing_count: i64,
}

/// Figures of one `complaints_daily` cell: (day of first RECEIVED, unit, sector). Each
/// complaint counts in one of within/outside/undecided and in one of
/// resolved/more_info/open/withdrawn.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ComplaintAgg {
    /// Complaints first received on this day.
    pub received: i64,
    /// Latest jurisdiction decision is "within" (a RESOLVED complaint counts here too).
    pub within: i64,
    /// Latest jurisdiction decision is "outside".
    pub outside: i64,
    /// No jurisdiction decision yet.
    pub undecided: i64,
    /// Latest status event is RESOLVED.
    pub resolved: i64,
    /// Latest status event is MORE_INFO_REQUIRED.
    pub more_info: i64,
    /// No status event yet.
    pub open: i64,
    /// Latest status event is WITHDRAWN.
    pub withdrawn: i64,
    /// Open and within jurisdiction: the ones an Ombudsman office owes an answer.
    pub open_within: i64,
}

/// One row of `processing_times`: a delivered request and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct ProcessingRow {
    /// Cambodia date of its first DELIVERED, as days since 1970-01-01.
    pub day: i32,
    /// Unit index ([`Codes`]).
    pub unit: u16,
    /// Service number: a [`Codes`] index, or from [`EXTRA_BASE`] on a partition's own number.
    pub service: u16,
    /// First DELIVERED − first RECEIVED, in whole seconds (never negative).
    pub seconds: i64,
    /// Cambodia date of its first RECEIVED, as days since 1970-01-01 (working days between the
    /// two are what a legal time limit counts).
    pub received_day: i32,
}

/// One row of `unit_days`: a unit's own close of a day against the events that arrived.
#[derive(Debug, Clone, Copy)]
pub struct UnitDayRow {
    /// The day, as days since 1970-01-01 (Cambodia time).
    pub day: i32,
    /// Unit index ([`Codes`]).
    pub unit: u16,
    /// The unit's latest close of the day; `None` if it has not closed it.
    pub close: Option<DayClose>,
    /// Distinct service events recorded (`recorded_at`) on this day that reached the partition.
    pub arrived_services: i64,
    /// Distinct complaint events recorded on this day that reached the partition.
    pub arrived_complaints: i64,
}

impl UnitDayRow {
    /// A row with no close and nothing arrived.
    pub fn empty(day: i32, unit: u16) -> Self {
        UnitDayRow {
            day,
            unit,
            close: None,
            arrived_services: 0,
            arrived_complaints: 0,
        }
    }
}

/// The rows of one partition for one period (a quarter: what a summary file holds), all tables.
#[derive(Debug, Default)]
pub struct PeriodRows {
    /// (day, unit, service) → figures: the `services_daily` rows.
    pub services: BTreeMap<(i32, u16, u16), ServiceAgg>,
    /// The `processing_times` rows, sorted by (day, unit, service, seconds).
    pub processing: Vec<ProcessingRow>,
    /// (day, unit, sector or `None`) → figures: the `complaints_daily` rows.
    pub complaints: BTreeMap<(i32, u16, Option<u16>), ComplaintAgg>,
    /// The `unit_days` rows, sorted by (day, unit).
    pub unit_days: Vec<UnitDayRow>,
    /// Codes the catalogue does not know, as the partition state numbered them.
    pub extra: ExtraCodes,
}

/// First number given to a service or sector code the catalogue does not know: codes below it
/// are catalogue positions ([`Codes`]), codes from it on are numbered by each partition's state
/// in the order they arrive, so events of a service added after the catalogue (or a mistyped
/// code) are counted under their own code, not dropped.
pub const EXTRA_BASE: u16 = 0x8000;

/// A partition's codes beyond the catalogue.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExtraCodes {
    /// Number → (service code, its sector code as the events gave it).
    pub services: BTreeMap<u16, (String, String)>,
    /// Number → sector code.
    pub sectors: BTreeMap<u16, String>,
}

impl ExtraCodes {
    fn service_code<'a>(&'a self, codes: &'a Codes, i: u16) -> &'a str {
        match self.services.get(&i) {
            Some((c, _)) => c,
            None => codes
                .service_code
                .get(usize::from(i))
                .map_or("?", String::as_str),
        }
    }

    fn service_sector<'a>(&'a self, codes: &'a Codes, i: u16) -> &'a str {
        match self.services.get(&i) {
            Some((_, sector)) => sector,
            None => codes
                .service_sector
                .get(usize::from(i))
                .and_then(|s| codes.sector_code.get(usize::from(*s)))
                .map_or("?", String::as_str),
        }
    }

    fn sector_code<'a>(&'a self, codes: &'a Codes, i: u16) -> &'a str {
        match self.sectors.get(&i) {
            Some(c) => c,
            None => codes
                .sector_code
                .get(usize::from(i))
                .map_or("?", String::as_str),
        }
    }
}

fn date_col(name: &str, days: Vec<i32>) -> PolarsResult<Column> {
    Series::new(name.into(), days)
        .cast(&DataType::Date)
        .map(Column::from)
}

fn c<T, V>(name: &str, v: V) -> Column
where
    Series: NamedFrom<V, T>,
    T: ?Sized,
{
    Column::from(Series::new(name.into(), v))
}

impl PeriodRows {
    /// Whether table `t` has no rows in this period (then no file is written for it).
    pub fn is_empty(&self, t: Table) -> bool {
        match t {
            Table::ServicesDaily => self.services.is_empty(),
            Table::ComplaintsDaily => self.complaints.is_empty(),
            Table::UnitDays => self.unit_days.is_empty(),
            Table::ProcessingTimes => self.processing.is_empty(),
        }
    }

    /// The table as a DataFrame with the documented columns (see jobs' data dictionary).
    pub fn frame(&self, t: Table, codes: &Codes) -> PolarsResult<DataFrame> {
        let unit_cols = |units: &[u16]| {
            vec![
                c(
                    "unit_code",
                    units
                        .iter()
                        .map(|u| codes.unit_code[*u as usize].as_str())
                        .collect::<Vec<_>>(),
                ),
                c(
                    "province_code",
                    units
                        .iter()
                        .map(|u| codes.unit_province[*u as usize].as_str())
                        .collect::<Vec<_>>(),
                ),
                c(
                    "level",
                    units
                        .iter()
                        .map(|u| codes.unit_level[*u as usize])
                        .collect::<Vec<_>>(),
                ),
            ]
        };
        match t {
            Table::ServicesDaily => {
                let keys: Vec<&(i32, u16, u16)> = self.services.keys().collect();
                let vals: Vec<&ServiceAgg> = self.services.values().collect();
                let units: Vec<u16> = keys.iter().map(|k| k.1).collect();
                let mut cols = vec![date_col("date", keys.iter().map(|k| k.0).collect())?];
                cols.extend(unit_cols(&units));
                let f = |g: fn(&ServiceAgg) -> i64| vals.iter().map(|v| g(v)).collect::<Vec<i64>>();
                cols.extend([
                    c(
                        "sector_code",
                        keys.iter()
                            .map(|k| self.extra.service_sector(codes, k.2))
                            .collect::<Vec<_>>(),
                    ),
                    c(
                        "service_code",
                        keys.iter()
                            .map(|k| self.extra.service_code(codes, k.2))
                            .collect::<Vec<_>>(),
                    ),
                    c("requests_received", f(|v| v.received)),
                    c("services_delivered", f(|v| v.delivered)),
                    c("requests_rejected", f(|v| v.rejected)),
                    c("requests_cancelled", f(|v| v.cancelled)),
                    c("fee_payments", f(|v| v.fee_payments)),
                    c("refunds", f(|v| v.refunds)),
                    c("revenue_riel", f(|v| v.revenue_riel)),
                    c("processing_seconds_sum", f(|v| v.processing_seconds_sum)),
                    c("processing_count", f(|v| v.processing_count)),
                ]);
                DataFrame::new_infer_height(cols)
            }
            Table::ProcessingTimes => {
                let p = &self.processing;
                let units: Vec<u16> = p.iter().map(|r| r.unit).collect();
                let mut cols = vec![date_col("date", p.iter().map(|r| r.day).collect())?];
                cols.extend(unit_cols(&units));
                cols.extend([
                    c(
                        "sector_code",
                        p.iter()
                            .map(|r| self.extra.service_sector(codes, r.service))
                            .collect::<Vec<_>>(),
                    ),
                    c(
                        "service_code",
                        p.iter()
                            .map(|r| self.extra.service_code(codes, r.service))
                            .collect::<Vec<_>>(),
                    ),
                    c(
                        "processing_seconds",
                        p.iter().map(|r| r.seconds).collect::<Vec<_>>(),
                    ),
                    c(
                        "processing_days",
                        p.iter()
                            .map(|r| r.seconds as f64 / 86_400.0)
                            .collect::<Vec<_>>(),
                    ),
                ]);
                cols.push(date_col(
                    "received_date",
                    p.iter().map(|r| r.received_day).collect(),
                )?);
                DataFrame::new_infer_height(cols)
            }
            Table::ComplaintsDaily => {
                let keys: Vec<&(i32, u16, Option<u16>)> = self.complaints.keys().collect();
                let vals: Vec<&ComplaintAgg> = self.complaints.values().collect();
                let units: Vec<u16> = keys.iter().map(|k| k.1).collect();
                let mut cols = vec![date_col("date", keys.iter().map(|k| k.0).collect())?];
                cols.extend(unit_cols(&units));
                let f =
                    |g: fn(&ComplaintAgg) -> i64| vals.iter().map(|v| g(v)).collect::<Vec<i64>>();
                cols.extend([
                    c(
                        "sector_code",
                        keys.iter()
                            .map(|k| k.2.map(|s| self.extra.sector_code(codes, s)))
                            .collect::<Vec<_>>(),
                    ),
                    c("complaints_received", f(|v| v.received)),
                    c("within_jurisdiction", f(|v| v.within)),
                    c("outside_jurisdiction", f(|v| v.outside)),
                    c("jurisdiction_undecided", f(|v| v.undecided)),
                    c("resolved", f(|v| v.resolved)),
                    c("more_info_required", f(|v| v.more_info)),
                    c("open", f(|v| v.open)),
                    c("withdrawn", f(|v| v.withdrawn)),
                    c("open_within_jurisdiction", f(|v| v.open_within)),
                ]);
                DataFrame::new_infer_height(cols)
            }
            Table::UnitDays => {
                let r = &self.unit_days;
                let units: Vec<u16> = r.iter().map(|x| x.unit).collect();
                let mut cols = vec![date_col("date", r.iter().map(|x| x.day).collect())?];
                cols.extend(unit_cols(&units));
                let status = |x: &UnitDayRow| match x.close {
                    None => "not_closed",
                    Some(cl)
                        if (cl.services as i64, cl.complaints as i64)
                            == (x.arrived_services, x.arrived_complaints) =>
                    {
                        "ok"
                    }
                    Some(cl)
                        if cl.services as i64 > x.arrived_services
                            || cl.complaints as i64 > x.arrived_complaints =>
                    {
                        "missing_events"
                    }
                    Some(_) => "extra_events",
                };
                cols.extend([
                    c(
                        "closed",
                        r.iter().map(|x| x.close.is_some()).collect::<Vec<_>>(),
                    ),
                    c(
                        "reported_services",
                        r.iter()
                            .map(|x| x.close.map(|cl| cl.services as i64))
                            .collect::<Vec<_>>(),
                    ),
                    c(
                        "reported_complaints",
                        r.iter()
                            .map(|x| x.close.map(|cl| cl.complaints as i64))
                            .collect::<Vec<_>>(),
                    ),
                    c(
                        "arrived_services",
                        r.iter().map(|x| x.arrived_services).collect::<Vec<_>>(),
                    ),
                    c(
                        "arrived_complaints",
                        r.iter().map(|x| x.arrived_complaints).collect::<Vec<_>>(),
                    ),
                    c(
                        "services_gap",
                        r.iter()
                            .map(|x| x.close.map(|cl| cl.services as i64 - x.arrived_services))
                            .collect::<Vec<_>>(),
                    ),
                    c(
                        "complaints_gap",
                        r.iter()
                            .map(|x| {
                                x.close
                                    .map(|cl| cl.complaints as i64 - x.arrived_complaints)
                            })
                            .collect::<Vec<_>>(),
                    ),
                    c("status", r.iter().map(status).collect::<Vec<_>>()),
                ]);
                DataFrame::new_infer_height(cols)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_carry_quarter_and_partition() {
        let name = file_name((2021, 3), 7);
        assert!(name.starts_with("2021-Q3-p007-"));
        assert_eq!(parse_file_name(&name), Some(((2021, 3), 7)));
        assert_eq!(
            parse_file_name("x/2021-08-p002-abc.parquet"),
            Some(((2021, 3), 2)),
            "a month file of the earlier layout belongs to its quarter"
        );
        assert_eq!(parse_file_name("part-abc.parquet"), None);
        assert_eq!(parse_file_name("2021-Q5-p001-abc.parquet"), None);
        assert_eq!(quarter_of((2021, 12)), (2021, 4));
        assert_eq!(quarter_months((2021, 2)), [(2021, 4), (2021, 5), (2021, 6)]);
        for t in Table::ALL {
            assert_eq!(t.def().role, owsu_lake::tables::Role::Summary);
        }
    }
}
