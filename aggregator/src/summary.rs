//! Summaries: a pure function of the raw events, computed per Kafka partition and month.
//!
//! Keying by unit code puts every event of a unit (services, complaints, day closures) on the
//! same partition number of the three topics, and the range assignor gives those partitions to
//! the same aggregator instance. So one instance holds everything needed for its units and is
//! the only writer of their summary files: in each summary table (a Delta table of the lake), one
//! file per (Kafka partition, month), `YYYY-MM-pPPP-<uuid>.parquet`, replaced in a commit whenever
//! a batch touches that month.
//!
//! The meaning of every figure follows DESIGN.md ("Meaning of the figures"):
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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};

use chrono::{Datelike, NaiveDate};
use owsu_schemas::record::{ComplaintStage, Event, ServiceStage};
use owsu_schemas::reference::Reference;
use owsu_schemas::time::{date_to_epoch_day, epoch_day_to_date, local_date, Millis};
use polars::prelude::*;
use uuid::Uuid;

/// A calendar month (Cambodia time).
pub type Month = (i32, u32);

/// The summary tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    ServicesDaily,
    ComplaintsDaily,
    UnitDays,
    ProcessingTimes,
}

impl Table {
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

/// Name of a new summary file for one Kafka partition's month (unique per write).
pub fn file_name((year, month): Month, partition: i32) -> String {
    format!("{year}-{month:02}-p{partition:03}-{}.parquet", Uuid::new_v4().simple())
}

/// The (month, Kafka partition) a summary file holds, from its name.
pub fn parse_file_name(path: &str) -> Option<(Month, i32)> {
    let name = path.rsplit('/').next()?;
    let mut it = name.splitn(4, '-');
    let year = it.next()?.parse().ok()?;
    let month = it.next()?.parse().ok()?;
    let partition = it.next()?.strip_prefix('p')?.parse().ok()?;
    Some(((year, month), partition))
}

fn month_of_day(day: i32) -> Month {
    let d = epoch_day_to_date(day);
    (d.year(), d.month())
}

fn day_of(ms: Millis) -> i32 {
    date_to_epoch_day(local_date(ms))
}

/// Codes interned to small integers (the registry and catalogue positions).
pub struct Codes {
    units: HashMap<String, u16>,
    services: HashMap<String, u16>,
    sectors: HashMap<String, u16>,
    pub unit_code: Vec<String>,
    pub unit_province: Vec<String>,
    pub unit_level: Vec<&'static str>,
    pub service_code: Vec<String>,
    pub service_sector: Vec<u16>,
    pub sector_code: Vec<String>,
}

impl Codes {
    pub fn new(r: &Reference) -> Self {
        let units = r
            .registry
            .units
            .iter()
            .enumerate()
            .map(|(i, u)| (u.code.clone(), i as u16))
            .collect();
        let sectors: HashMap<String, u16> = r
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

/// 128-bit key of a pseudonymous id (it is 32 hex characters; anything else is hashed).
fn id_key(s: &str) -> u128 {
    if s.len() == 32 {
        if let Ok(v) = u128::from_str_radix(s, 16) {
            return v;
        }
    }
    let h = |seed: u64| {
        let mut x =
            std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                .build_hasher();
        x.write_u64(seed);
        x.write(s.as_bytes());
        x.finish()
    };
    ((h(1) as u128) << 64) | h(2) as u128
}

#[derive(Debug, Clone)]
struct Svc {
    unit: u16,
    service: u16,
    request: u128,
    stage: ServiceStage,
    fee: Option<i64>,
    occurred: Millis,
    recorded: Millis,
}

#[derive(Debug, Clone)]
struct Cmp {
    unit: u16,
    complaint: u128,
    sector: Option<u16>,
    stage: ComplaintStage,
    occurred: Millis,
    recorded: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct DayClose {
    closed_at: Millis,
    services: i32,
    complaints: i32,
}

/// Everything one Kafka partition's units have sent, enough to recompute any month.
#[derive(Default)]
pub struct PartitionState {
    svc: HashMap<Uuid, Svc>,
    cmp: HashMap<Uuid, Cmp>,
    superseded: HashSet<Uuid>,
    requests: HashMap<u128, Vec<Uuid>>,
    complaints: HashMap<u128, Vec<Uuid>>,
    month_requests: HashMap<Month, HashSet<u128>>,
    month_complaints: HashMap<Month, HashSet<u128>>,
    closes: HashMap<(u16, i32), DayClose>,
    arrived: HashMap<(u16, i32), (i64, i64)>,
    dirty: BTreeSet<Month>,
    /// Distinct events held.
    pub events: u64,
}

/// Whether an event was new to the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    New,
    Duplicate,
}

impl PartitionState {
    /// Adds an event (validated against the same reference data as `codes`). Months whose
    /// figures may change are marked dirty, also for a duplicate: a duplicate arriving from Kafka
    /// can be the replay of a batch whose summaries a crashed instance never wrote.
    pub fn apply(&mut self, e: &Event, codes: &Codes) -> Applied {
        match e {
            Event::Service(s) => {
                let Some((&unit, &service)) = codes
                    .units
                    .get(&s.unit_code)
                    .zip(codes.services.get(&s.service_code))
                else {
                    return Applied::Duplicate; // unreachable for validated events
                };
                let request = id_key(&s.request_id);
                let new = !self.svc.contains_key(&s.event_id);
                if new {
                    self.svc.insert(
                        s.event_id,
                        Svc {
                            unit,
                            service,
                            request,
                            stage: s.stage,
                            fee: s.fee_riel,
                            occurred: s.occurred_at,
                            recorded: s.recorded_at,
                        },
                    );
                    self.requests.entry(request).or_default().push(s.event_id);
                    self.month_requests
                        .entry(month_of_day(day_of(s.occurred_at)))
                        .or_default()
                        .insert(request);
                    self.arrived
                        .entry((unit, day_of(s.recorded_at)))
                        .or_default()
                        .0 += 1;
                    self.events += 1;
                }
                self.dirty.insert(month_of_day(day_of(s.recorded_at)));
                self.dirty_request(request);
                if let Some(t) = s.supersedes_event_id {
                    self.superseded.insert(t);
                    if let Some(target) = self.svc.get(&t).map(|t| t.request) {
                        self.dirty_request(target);
                    }
                }
                if new {
                    Applied::New
                } else {
                    Applied::Duplicate
                }
            }
            Event::Complaint(c) => {
                let Some(&unit) = codes.units.get(&c.unit_code) else {
                    return Applied::Duplicate;
                };
                let complaint = id_key(&c.complaint_id);
                let new = !self.cmp.contains_key(&c.event_id);
                if new {
                    let sector = c
                        .sector_code
                        .as_ref()
                        .and_then(|s| codes.sectors.get(s).copied());
                    self.cmp.insert(
                        c.event_id,
                        Cmp {
                            unit,
                            complaint,
                            sector,
                            stage: c.stage,
                            occurred: c.occurred_at,
                            recorded: c.recorded_at,
                        },
                    );
                    self.complaints
                        .entry(complaint)
                        .or_default()
                        .push(c.event_id);
                    self.month_complaints
                        .entry(month_of_day(day_of(c.occurred_at)))
                        .or_default()
                        .insert(complaint);
                    self.arrived
                        .entry((unit, day_of(c.recorded_at)))
                        .or_default()
                        .1 += 1;
                    self.events += 1;
                }
                self.dirty.insert(month_of_day(day_of(c.recorded_at)));
                self.dirty_complaint(complaint);
                if let Some(t) = c.supersedes_event_id {
                    self.superseded.insert(t);
                    if let Some(target) = self.cmp.get(&t).map(|t| t.complaint) {
                        self.dirty_complaint(target);
                    }
                }
                if new {
                    Applied::New
                } else {
                    Applied::Duplicate
                }
            }
            Event::UnitDay(u) => {
                let Some(&unit) = codes.units.get(&u.unit_code) else {
                    return Applied::Duplicate;
                };
                let day = date_to_epoch_day(u.date);
                let close = DayClose {
                    closed_at: u.closed_at,
                    services: u.services_recorded,
                    complaints: u.complaints_recorded,
                };
                self.dirty.insert(month_of_day(day));
                match self.closes.get(&(unit, day)) {
                    // The latest close wins; ties broken by content so the result never depends on order.
                    Some(old) if *old >= close => Applied::Duplicate,
                    _ => {
                        self.closes.insert((unit, day), close);
                        self.events += 1;
                        Applied::New
                    }
                }
            }
        }
    }

    fn dirty_request(&mut self, r: u128) {
        if let Some(ids) = self.requests.get(&r) {
            for id in ids {
                if let Some(e) = self.svc.get(id) {
                    self.dirty.insert(month_of_day(day_of(e.occurred)));
                }
            }
        }
    }

    fn dirty_complaint(&mut self, c: u128) {
        if let Some(ids) = self.complaints.get(&c) {
            for id in ids {
                if let Some(e) = self.cmp.get(id) {
                    self.dirty.insert(month_of_day(day_of(e.occurred)));
                }
            }
        }
    }

    /// Months whose summaries must be rewritten; clears the set.
    pub fn take_dirty(&mut self) -> BTreeSet<Month> {
        std::mem::take(&mut self.dirty)
    }

    /// Every month holding any figure.
    pub fn all_months(&self) -> BTreeSet<Month> {
        let mut m: BTreeSet<Month> = self
            .month_requests
            .keys()
            .chain(self.month_complaints.keys())
            .copied()
            .collect();
        m.extend(
            self.closes
                .keys()
                .chain(self.arrived.keys())
                .map(|(_, d)| month_of_day(*d)),
        );
        m
    }

    fn effective_svc(&self, r: u128) -> Vec<(&Uuid, &Svc)> {
        let mut v: Vec<(&Uuid, &Svc)> = self.requests[&r]
            .iter()
            .filter(|id| !self.superseded.contains(*id))
            .filter_map(|id| self.svc.get_key_value(id))
            .collect();
        v.sort_by_key(|(id, e)| (e.occurred, e.recorded, **id));
        v
    }

    fn effective_cmp(&self, c: u128) -> Vec<(&Uuid, &Cmp)> {
        let mut v: Vec<(&Uuid, &Cmp)> = self.complaints[&c]
            .iter()
            .filter(|id| !self.superseded.contains(*id))
            .filter_map(|id| self.cmp.get_key_value(id))
            .collect();
        v.sort_by_key(|(id, e)| (e.occurred, e.recorded, **id));
        v
    }

    /// The month's rows of every table, sorted.
    pub fn month(&self, m: Month, codes: &Codes) -> MonthRows {
        let in_month = |ms: Millis| month_of_day(day_of(ms)) == m;
        let mut services: BTreeMap<(i32, u16, u16), ServiceAgg> = BTreeMap::new();
        let mut processing: Vec<ProcessingRow> = Vec::new();
        for &r in self.month_requests.get(&m).into_iter().flatten() {
            let evs = self.effective_svc(r);
            let first = |st: ServiceStage| evs.iter().find(|(_, e)| e.stage == st).map(|(_, e)| *e);
            let received = first(ServiceStage::Received);
            for (stage, field) in [
                (ServiceStage::Received, 0usize),
                (ServiceStage::Delivered, 1),
                (ServiceStage::Rejected, 2),
                (ServiceStage::Cancelled, 3),
            ] {
                if let Some(e) = first(stage).filter(|e| in_month(e.occurred)) {
                    let a = services
                        .entry((day_of(e.occurred), e.unit, e.service))
                        .or_default();
                    match field {
                        0 => a.received += 1,
                        1 => {
                            a.delivered += 1;
                            if let Some(rcv) = received {
                                let secs = (e.occurred - rcv.occurred).div_euclid(1000);
                                if secs >= 0 {
                                    a.processing_seconds_sum += secs;
                                    a.processing_count += 1;
                                    processing.push(ProcessingRow {
                                        day: day_of(e.occurred),
                                        unit: e.unit,
                                        service: e.service,
                                        seconds: secs,
                                    });
                                }
                            }
                        }
                        2 => a.rejected += 1,
                        _ => a.cancelled += 1,
                    }
                }
            }
            for (_, e) in evs
                .iter()
                .filter(|(_, e)| e.stage == ServiceStage::FeePaid && in_month(e.occurred))
            {
                let fee = e.fee.unwrap_or(0);
                let a = services
                    .entry((day_of(e.occurred), e.unit, e.service))
                    .or_default();
                a.revenue_riel += fee;
                match fee.cmp(&0) {
                    std::cmp::Ordering::Greater => a.fee_payments += 1,
                    std::cmp::Ordering::Less => a.refunds += 1,
                    std::cmp::Ordering::Equal => {}
                }
            }
        }
        processing.sort_by_key(|p| (p.day, p.unit, p.service, p.seconds));

        let mut complaints: BTreeMap<(i32, u16, Option<u16>), ComplaintAgg> = BTreeMap::new();
        for &c in self.month_complaints.get(&m).into_iter().flatten() {
            let evs = self.effective_cmp(c);
            let Some((_, rcv)) = evs
                .iter()
                .find(|(_, e)| e.stage == ComplaintStage::Received)
            else {
                continue;
            };
            if !in_month(rcv.occurred) {
                continue;
            }
            let sector = rcv
                .sector
                .or_else(|| evs.iter().find_map(|(_, e)| e.sector));
            let latest = |stages: &[ComplaintStage]| {
                evs.iter()
                    .rev()
                    .find(|(_, e)| stages.contains(&e.stage))
                    .map(|(_, e)| e.stage)
            };
            let status = latest(&[
                ComplaintStage::Resolved,
                ComplaintStage::MoreInfoRequired,
                ComplaintStage::Withdrawn,
            ]);
            let jurisdiction = if status == Some(ComplaintStage::Resolved) {
                Some(ComplaintStage::WithinJurisdiction)
            } else {
                latest(&[
                    ComplaintStage::WithinJurisdiction,
                    ComplaintStage::OutsideJurisdiction,
                ])
            };
            let a = complaints
                .entry((day_of(rcv.occurred), rcv.unit, sector))
                .or_default();
            a.received += 1;
            match jurisdiction {
                Some(ComplaintStage::WithinJurisdiction) => a.within += 1,
                Some(_) => a.outside += 1,
                None => a.undecided += 1,
            }
            match status {
                Some(ComplaintStage::Resolved) => a.resolved += 1,
                Some(ComplaintStage::MoreInfoRequired) => a.more_info += 1,
                Some(_) => a.withdrawn += 1,
                None => a.open += 1,
            }
            if status.is_none() && jurisdiction == Some(ComplaintStage::WithinJurisdiction) {
                a.open_within += 1;
            }
        }

        let mut days: BTreeSet<(i32, u16)> = BTreeSet::new();
        days.extend(
            self.closes
                .keys()
                .filter(|(_, d)| month_of_day(*d) == m)
                .map(|(u, d)| (*d, *u)),
        );
        days.extend(
            self.arrived
                .keys()
                .filter(|(_, d)| month_of_day(*d) == m)
                .map(|(u, d)| (*d, *u)),
        );
        let unit_days = days
            .into_iter()
            .map(|(day, unit)| {
                let (s, c) = self.arrived.get(&(unit, day)).copied().unwrap_or_default();
                UnitDayRow {
                    day,
                    unit,
                    close: self.closes.get(&(unit, day)).copied(),
                    arrived_services: s,
                    arrived_complaints: c,
                }
            })
            .collect();
        let _ = codes;
        MonthRows {
            services,
            processing,
            complaints,
            unit_days,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServiceAgg {
    pub received: i64,
    pub delivered: i64,
    pub rejected: i64,
    pub cancelled: i64,
    pub fee_payments: i64,
    pub refunds: i64,
    pub revenue_riel: i64,
    pub processing_seconds_sum: i64,
    pub processing_count: i64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ComplaintAgg {
    pub received: i64,
    pub within: i64,
    pub outside: i64,
    pub undecided: i64,
    pub resolved: i64,
    pub more_info: i64,
    pub open: i64,
    pub withdrawn: i64,
    /// Open and within jurisdiction: the ones an Ombudsman office owes an answer.
    pub open_within: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct ProcessingRow {
    day: i32,
    unit: u16,
    service: u16,
    seconds: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct UnitDayRow {
    day: i32,
    unit: u16,
    close: Option<DayClose>,
    arrived_services: i64,
    arrived_complaints: i64,
}

/// One month of one partition, all tables.
pub struct MonthRows {
    services: BTreeMap<(i32, u16, u16), ServiceAgg>,
    processing: Vec<ProcessingRow>,
    complaints: BTreeMap<(i32, u16, Option<u16>), ComplaintAgg>,
    unit_days: Vec<UnitDayRow>,
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

impl MonthRows {
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
                            .map(|k| {
                                codes.sector_code[codes.service_sector[k.2 as usize] as usize]
                                    .as_str()
                            })
                            .collect::<Vec<_>>(),
                    ),
                    c(
                        "service_code",
                        keys.iter()
                            .map(|k| codes.service_code[k.2 as usize].as_str())
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
                            .map(|r| {
                                codes.sector_code[codes.service_sector[r.service as usize] as usize]
                                    .as_str()
                            })
                            .collect::<Vec<_>>(),
                    ),
                    c(
                        "service_code",
                        p.iter()
                            .map(|r| codes.service_code[r.service as usize].as_str())
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
                            .map(|k| k.2.map(|s| codes.sector_code[s as usize].as_str()))
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

/// The first day of a month, for readers.
pub fn month_start((y, m): Month) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, 1).expect("valid month")
}

#[cfg(test)]
mod tests {
    use super::*;
    use owsu_schemas::record::{ComplaintEvent, ServiceEvent, UnitDayClosed};
    use owsu_schemas::time::parse_rfc3339;

    fn t(s: &str) -> Millis {
        parse_rfc3339(s).unwrap()
    }

    fn svc(
        id: u128,
        req: &str,
        stage: ServiceStage,
        at: &str,
        fee: Option<i64>,
        supersedes: Option<u128>,
    ) -> Event {
        Event::Service(ServiceEvent {
            event_id: Uuid::from_u128(id),
            unit_code: "KH-0101".into(),
            request_id: req.into(),
            sector_code: "COM".into(),
            service_code: "COM-TRADE-LIC".into(),
            stage,
            fee_riel: fee,
            channel: "counter".into(),
            occurred_at: t(at),
            recorded_at: t(at),
            supersedes_event_id: supersedes.map(Uuid::from_u128),
            window_no: None,
        })
    }

    fn cmp(id: u128, c: &str, stage: ComplaintStage, at: &str) -> Event {
        Event::Complaint(ComplaintEvent {
            event_id: Uuid::from_u128(id),
            unit_code: "KH-0101".into(),
            complaint_id: c.into(),
            sector_code: None,
            stage,
            occurred_at: t(at),
            recorded_at: t(at),
            supersedes_event_id: None,
        })
    }

    fn state(events: &[Event]) -> (PartitionState, Codes) {
        let codes = Codes::new(&Reference::builtin());
        let mut s = PartitionState::default();
        for e in events {
            s.apply(e, &codes);
        }
        (s, codes)
    }

    #[test]
    fn duplicates_count_once_and_corrections_replace_in_any_order() {
        let events = vec![
            svc(
                1,
                "r1",
                ServiceStage::Received,
                "2021-03-01T09:00:00+07:00",
                None,
                None,
            ),
            svc(
                2,
                "r1",
                ServiceStage::FeePaid,
                "2021-03-01T09:30:00+07:00",
                Some(5_000),
                None,
            ),
            svc(
                2,
                "r1",
                ServiceStage::FeePaid,
                "2021-03-01T09:30:00+07:00",
                Some(5_000),
                None,
            ),
            svc(
                4,
                "r1",
                ServiceStage::Delivered,
                "2021-03-03T10:00:00+07:00",
                None,
                None,
            ),
        ];
        let correction = svc(
            3,
            "r1",
            ServiceStage::FeePaid,
            "2021-03-01T09:30:00+07:00",
            Some(50_000),
            Some(2),
        );
        for order in [0, 1] {
            let mut evs = events.clone();
            if order == 0 {
                evs.push(correction.clone())
            } else {
                evs.insert(0, correction.clone())
            }
            let (s, codes) = state(&evs);
            let rows = s.month((2021, 3), &codes);
            let total: ServiceAgg =
                rows.services
                    .values()
                    .fold(ServiceAgg::default(), |mut a, v| {
                        a.revenue_riel += v.revenue_riel;
                        a.delivered += v.delivered;
                        a.received += v.received;
                        a.processing_seconds_sum += v.processing_seconds_sum;
                        a
                    });
            assert_eq!(
                total.revenue_riel, 50_000,
                "the correction replaces the fee (order {order})"
            );
            assert_eq!((total.received, total.delivered), (1, 1));
            assert_eq!(total.processing_seconds_sum, 2 * 86_400 + 3600);
        }
    }

    #[test]
    fn complaints_follow_the_latest_state_on_both_axes() {
        let (s, codes) = state(&[
            cmp(
                1,
                "a",
                ComplaintStage::Received,
                "2021-05-03T09:00:00+07:00",
            ),
            cmp(
                2,
                "a",
                ComplaintStage::WithinJurisdiction,
                "2021-05-04T09:00:00+07:00",
            ),
            cmp(
                3,
                "a",
                ComplaintStage::MoreInfoRequired,
                "2021-05-05T09:00:00+07:00",
            ),
            cmp(
                4,
                "b",
                ComplaintStage::Received,
                "2021-05-03T10:00:00+07:00",
            ),
            cmp(
                5,
                "b",
                ComplaintStage::MoreInfoRequired,
                "2021-05-04T10:00:00+07:00",
            ),
            cmp(
                6,
                "b",
                ComplaintStage::Resolved,
                "2021-06-20T10:00:00+07:00",
            ),
            cmp(
                7,
                "c",
                ComplaintStage::Received,
                "2021-05-07T10:00:00+07:00",
            ),
            cmp(
                8,
                "c",
                ComplaintStage::OutsideJurisdiction,
                "2021-05-08T10:00:00+07:00",
            ),
        ]);
        let rows = s.month((2021, 5), &codes);
        let a = rows
            .complaints
            .values()
            .fold(ComplaintAgg::default(), |mut a, v| {
                a.received += v.received;
                a.within += v.within;
                a.outside += v.outside;
                a.undecided += v.undecided;
                a.resolved += v.resolved;
                a.more_info += v.more_info;
                a.open += v.open;
                a
            });
        // a: within + more info; b: resolved later in June, counted in May and within; c: outside + open.
        assert_eq!((a.received, a.within, a.outside, a.undecided), (3, 2, 1, 0));
        assert_eq!((a.resolved, a.more_info, a.open), (1, 1, 1));
        assert!(
            s.month((2021, 6), &codes).complaints.is_empty(),
            "counted where RECEIVED falls"
        );
    }

    #[test]
    fn unit_days_reconcile_against_the_units_own_count() {
        let close = |n: i32, at: &str| {
            Event::UnitDay(UnitDayClosed {
                unit_code: "KH-0101".into(),
                date: NaiveDate::from_ymd_opt(2021, 3, 1).unwrap(),
                services_recorded: n,
                complaints_recorded: 0,
                closed_at: t(at),
            })
        };
        let (mut s, codes) = state(&[
            svc(
                1,
                "r1",
                ServiceStage::Received,
                "2021-03-01T09:00:00+07:00",
                None,
                None,
            ),
            close(3, "2021-03-01T17:00:00+07:00"),
        ]);
        let mut df = s
            .month((2021, 3), &codes)
            .frame(Table::UnitDays, &codes)
            .unwrap();
        assert_eq!(
            df.column("status").unwrap().str().unwrap().get(0),
            Some("missing_events")
        );
        assert_eq!(
            df.column("services_gap").unwrap().i64().unwrap().get(0),
            Some(2)
        );
        // A later close replaces the earlier one.
        s.apply(&close(1, "2021-03-02T08:00:00+07:00"), &codes);
        df = s
            .month((2021, 3), &codes)
            .frame(Table::UnitDays, &codes)
            .unwrap();
        assert_eq!(
            df.column("status").unwrap().str().unwrap().get(0),
            Some("ok")
        );
        assert!(owsu_lake::frame::conform(Table::UnitDays.def(), df).is_ok());
        let name = file_name((2021, 3), 7);
        assert_eq!(parse_file_name(&name), Some(((2021, 3), 7)));
    }
}
