//! The data-quality report for oversight: every business-rule anomaly in a year's events, per
//! unit and rule, with monthly trends and example events, and fees above the legal schedule
//! ranked by unit as possible overcharging.
//!
//! Anomalous events are **in** the review's figures (they are counted as the office recorded
//! them); this report is where oversight sees which ones they are. Rules about one event come
//! from the raw tables' `anomalies` column (set when the event was checked); rules over several
//! events are derived here, from the raw tables at one version, so arrival order never matters:
//! a request's stages in an impossible order, a unit-day whose own count differs from what
//! arrived, and corrections whose original has not arrived.
//!
//! An event named by a correction is left out (the correction replaces it), as are exact
//! duplicates (the same event id arriving twice).
//!
//! Each anomaly is counted once per event, request or unit-day it concerns, in the month of
//! its day (Cambodia time). Written files are replaced whole (`crate::output`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate};
use owsu_lake::snapshot::Versions;
use owsu_lake::tables::{self, TableDef};
use owsu_lake::{Snapshot, Store};
use owsu_schemas::anomaly::{Flags, Rule};
use owsu_schemas::reference::Reference;
use owsu_schemas::time::{epoch_day_to_date, to_rfc3339};
use polars::prelude::*;
use serde::Serialize;
use uuid::Uuid;

use maud::{html, PreEscaped, DOCTYPE};

use crate::html::thousands;
use crate::sum::{add, narrow};

/// Examples kept per rule.
const EXAMPLES_PER_RULE: usize = 5;

/// One rule's count at one unit, with its months.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UnitRule {
    /// The unit's code.
    pub unit_code: String,
    /// Its name; empty when the registry does not know the code.
    pub(crate) unit_name: String,
    /// Its province (`KH-PP`); empty when the registry does not know the code.
    pub province_code: String,
    /// `provincial` or `district`; empty when the registry does not know the code.
    pub level: String,
    /// The rule's code ([`Rule::code`]).
    pub rule: String,
    /// Events, requests or unit-days of the year with this anomaly at this unit.
    pub count: u64,
    /// Counts by month, January first.
    pub(crate) by_month: [u64; 12],
}

/// A rule's national (or scoped) total.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleTotal {
    /// The rule's code ([`Rule::code`]).
    pub rule: String,
    /// What the rule means ([`Rule::meaning`]).
    pub meaning: String,
    /// Derived across events by this report, rather than kept with each event.
    pub derived: bool,
    /// Events, requests or unit-days of the year in scope with this anomaly.
    pub count: u64,
    /// Units with at least one.
    pub units: usize,
    /// Counts by month, January first.
    pub(crate) by_month: [u64; 12],
}

/// One example of an anomaly: the event (or request, or unit-day) and what is wrong.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Example {
    /// The rule's code ([`Rule::code`]).
    pub rule: String,
    /// The unit's code.
    pub unit_code: String,
    /// The event id; for a request's stages, the request's pseudonymous id; for a unit-day,
    /// the date.
    pub(crate) subject: String,
    /// What is wrong, in words (e.g. the event's stage, service, fee and time).
    pub detail: String,
}

/// Fees above the schedule at one unit.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Overcharge {
    /// The unit's code.
    pub unit_code: String,
    /// Its name; empty when the registry does not know the code.
    pub(crate) unit_name: String,
    /// Its province (`KH-PP`); empty when the registry does not know the code.
    pub province_code: String,
    /// Fee payments flagged above the schedule whose service the catalogue knows.
    pub payments: u64,
    /// Sum over those payments of fee − the service's maximum fee (riel).
    pub excess_riel: i64,
    /// The largest fee ÷ maximum among them.
    pub(crate) worst_ratio: f64,
    /// Services concerned, most frequent first, as `CODE ×N, …`.
    pub services: String,
}

/// A correction whose original has not arrived: held by the aggregator, applied when it does.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Waiting {
    /// `service` or `complaint`.
    pub kind: String,
    /// The unit that recorded the correction.
    pub unit_code: String,
    /// The correction's event id (UUID).
    pub(crate) correction_event_id: String,
    /// The event id it names in `supersedes_event_id`.
    pub(crate) names_event_id: String,
    /// When the correction happened, RFC 3339 in Cambodia time.
    pub occurred_at: String,
    /// `waiting` (its original has not arrived: held, counted nowhere) or `refused: …` (it
    /// names another unit's or kind's event; also held forever when the two units' events
    /// travel on different Kafka partitions, where the aggregator never sees them meet).
    pub status: String,
}

/// What the job found.
#[derive(Debug, Clone, Serialize)]
pub struct Quality {
    /// The calendar year reported on (by event day, Cambodia time).
    pub year: i32,
    /// The province or unit code asked for; `None` for the whole country.
    pub scope: Option<String>,
    /// The lake table versions read (reproducible by time travel).
    pub lake_versions: Versions,
    /// Events of the year in scope (distinct, not replaced by a correction).
    pub events_checked: u64,
    /// Of those, events carrying at least one anomaly (all counted in the figures).
    pub events_flagged: u64,
    /// One total per rule met, in [`Rule::ALL`] order.
    pub rules: Vec<RuleTotal>,
    /// One row per unit and rule met, largest count first.
    pub by_unit: Vec<UnitRule>,
    /// Up to five anomalies of each rule (the first met), grouped by rule.
    pub(crate) examples: Vec<Example>,
    /// Units with fees above the schedule, largest excess first.
    pub overcharging: Vec<Overcharge>,
    /// Corrections waiting for their original or refused, by unit and correction id.
    pub waiting_corrections: Vec<Waiting>,
}

/// Counts being gathered.
#[derive(Default)]
struct Tally {
    counts: BTreeMap<(Rule, String), [u64; 12]>,
    examples: BTreeMap<Rule, Vec<Example>>,
}

impl Tally {
    fn add(&mut self, rule: Rule, unit: &str, month: u32, subject: String, detail: String) {
        self.counts.entry((rule, unit.to_owned())).or_default()[month as usize - 1] += 1;
        let ex = self.examples.entry(rule).or_default();
        if ex.len() < EXAMPLES_PER_RULE {
            ex.push(Example {
                rule: rule.code().to_owned(),
                unit_code: unit.to_owned(),
                subject,
                detail,
            });
        }
    }
}

/// Fees above the schedule at one unit, being gathered into an [`Overcharge`].
#[derive(Default)]
struct OverTally {
    payments: u64,
    excess_riel: i64,
    worst_ratio: f64,
    /// Payments by service.
    services: BTreeMap<String, u64>,
}

/// The earliest (time, event id) of each stage of one request, by [`stage_rank`].
type StageTimes = [Option<(i64, u128)>; 4];

/// A raw event, as much of it as the report needs.
struct Row {
    id: u128,
    unit: String,
    month: u32,
    flags: Flags,
    supersedes: Option<u128>,
    occurred: i64,
    /// Service events: request key, stage, fee, service.
    request: Option<(String, String, Option<i64>, String)>,
}

fn uuid_of(s: &str) -> Option<u128> {
    Uuid::parse_str(s).ok().map(|u| u.as_u128())
}

/// Reads the year's rows of a raw event table in scope (distinct by event id).
async fn read_events(
    snapshot: &Snapshot,
    def: &'static TableDef,
    year: (NaiveDate, NaiveDate),
    in_scope: &dyn Fn(&str) -> bool,
    nationally: &mut u64,
    with_requests: bool,
) -> anyhow::Result<Vec<Row>> {
    let service = with_requests && def.name == tables::RAW_SERVICE_EVENTS.name;
    let mut cols = vec![
        "event_id",
        "unit_code",
        "event_date",
        "occurred_at",
        "supersedes_event_id",
        "anomalies",
    ];
    if service {
        cols.extend(["request_id", "stage", "fee_riel", "service_code"]);
    }
    let df = snapshot
        .read_columns(def, Some(year.0), Some(year.1), Some(&cols))
        .await?;
    let s = |c: &str| -> anyhow::Result<StringChunked> { Ok(df.column(c)?.str()?.clone()) };
    let (ids, units, sup, anomalies) = (
        s("event_id")?,
        s("unit_code")?,
        s("supersedes_event_id")?,
        s("anomalies")?,
    );
    let dates = df.column("event_date")?.date()?.physical().clone();
    let occurred = df.column("occurred_at")?.datetime()?.physical().clone();
    let svc = if service {
        Some((
            s("request_id")?,
            s("stage")?,
            df.column("fee_riel")?.i64()?.clone(),
            s("service_code")?,
        ))
    } else {
        None
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for i in 0..df.height() {
        let Some(date) = dates.get(i).map(epoch_day_to_date) else {
            continue;
        };
        if date < year.0 || date > year.1 {
            continue;
        }
        *nationally += 1;
        let (Some(id), Some(unit)) = (ids.get(i).and_then(uuid_of), units.get(i)) else {
            anyhow::bail!("{}: row {i} has no event id or unit", def.name);
        };
        if !in_scope(unit) || !seen.insert(id) {
            continue;
        }
        let flags = match anomalies.get(i) {
            Some(a) => Flags::parse(a).map_err(|code| {
                anyhow::anyhow!(
                    "{}: event {}: unknown anomaly code {code:?} (written by a later release?)",
                    def.name,
                    Uuid::from_u128(id)
                )
            })?,
            None => Flags::NONE,
        };
        out.push(Row {
            id,
            unit: unit.to_owned(),
            month: date.month(),
            flags,
            supersedes: sup.get(i).and_then(uuid_of),
            occurred: occurred.get(i).unwrap_or(0).div_euclid(1000),
            request: svc.as_ref().map(|(r, st, fee, sv)| {
                (
                    r.get(i).unwrap_or_default().to_owned(),
                    st.get(i).unwrap_or_default().to_owned(),
                    fee.get(i),
                    sv.get(i).unwrap_or_default().to_owned(),
                )
            }),
        });
    }
    Ok(out)
}

/// Position of a service stage in a request's life (cancelled fits anywhere).
fn stage_rank(stage: &str) -> Option<u8> {
    match stage {
        "RECEIVED" => Some(0),
        "FEE_PAID" => Some(1),
        "APPROVED" | "REJECTED" => Some(2),
        "DELIVERED" => Some(3),
        _ => None,
    }
}

/// Events (of one kind) that a correction of their own unit replaces: a correction naming
/// another unit's or kind's event is refused by the aggregator and replaces nothing.
fn replaced_by_own_unit(rows: &[Row]) -> HashSet<u128> {
    let units: HashMap<u128, &str> = rows.iter().map(|r| (r.id, r.unit.as_str())).collect();
    rows.iter()
        .filter_map(|r| {
            r.supersedes
                .filter(|t| units.get(t).is_some_and(|u| *u == r.unit))
        })
        .collect()
}

/// Events of `year` in scope that carry an anomaly (distinct, not replaced by a correction):
/// what the review states its figures include.
pub async fn flagged_events(
    snapshot: &Snapshot,
    reference: &Reference,
    year: i32,
    scope: Option<&str>,
) -> anyhow::Result<u64> {
    let in_scope = scope_filter(reference, scope);
    let year = (
        NaiveDate::from_ymd_opt(year, 1, 1).expect("year"),
        NaiveDate::from_ymd_opt(year, 12, 31).expect("year"),
    );
    let mut n = 0;
    let mut flagged = 0;
    for def in [&tables::RAW_SERVICE_EVENTS, &tables::RAW_COMPLAINT_EVENTS] {
        let rows = read_events(snapshot, def, year, &in_scope, &mut n, false).await?;
        let replaced = replaced_by_own_unit(&rows[..]);
        flagged += rows
            .iter()
            .filter(|r| !r.flags.is_empty() && !replaced.contains(&r.id))
            .count() as u64;
    }
    Ok(flagged)
}

/// Whether a unit code is in `scope` (a province: itself and its districts; or one unit).
fn scope_filter<'a>(
    reference: &'a Reference,
    scope: Option<&'a str>,
) -> impl Fn(&str) -> bool + 'a {
    move |code: &str| {
        scope.is_none_or(|s| {
            code == s
                || reference
                    .registry
                    .get(code)
                    .is_some_and(|u| u.province_code == s)
        })
    }
}

/// Computes the report of `year` for `scope` (a province or unit code; all when `None`) from
/// the raw tables and `unit_days`, all at their latest versions.
///
/// Fails when `scope` is not in the registry, the store holds none of these tables, no event of
/// the year is in the lake nationally, an event has no id or unit, an anomaly code is unknown,
/// or a fee excess does not fit.
pub async fn compute(
    store: &Store,
    reference: &Reference,
    year: i32,
    scope: Option<&str>,
) -> anyhow::Result<Quality> {
    if let Some(s) = scope {
        anyhow::ensure!(
            reference.registry.get(s).is_some(),
            "--scope {s}: not a unit or province code in the registry"
        );
    }
    let in_scope = scope_filter(reference, scope);
    let from = NaiveDate::from_ymd_opt(year, 1, 1).expect("year");
    let to = NaiveDate::from_ymd_opt(year, 12, 31).expect("year");
    let snapshot = Snapshot::open(
        store,
        &[
            &tables::RAW_SERVICE_EVENTS,
            &tables::RAW_COMPLAINT_EVENTS,
            &tables::RAW_UNIT_DAYS,
            &tables::UNIT_DAYS,
        ],
        None,
    )
    .await?;
    anyhow::ensure!(
        !snapshot.versions().0.is_empty(),
        "store {} holds no raw tables: run the aggregator first, or check --store",
        store.url()
    );
    let mut nationally = 0u64;
    let services = read_events(
        &snapshot,
        &tables::RAW_SERVICE_EVENTS,
        (from, to),
        &in_scope,
        &mut nationally,
        true,
    )
    .await?;
    let complaints = read_events(
        &snapshot,
        &tables::RAW_COMPLAINT_EVENTS,
        (from, to),
        &in_scope,
        &mut nationally,
        true,
    )
    .await?;
    anyhow::ensure!(
        nationally > 0,
        "no events of {year} in the lake at {}: nothing to report (check --year and --store)",
        store.url()
    );

    let mut t = Tally::default();
    let mut checked = 0u64;
    let mut flagged = 0u64;
    let mut waiting = Vec::new();
    let mut over: BTreeMap<String, OverTally> = BTreeMap::new();
    // Every event's kind and unit, for the corrections that name one.
    let mut owners: HashMap<u128, (&str, &str)> = HashMap::new();
    for (kind, rows) in [("service", &services), ("complaint", &complaints)] {
        for r in rows.iter() {
            owners.entry(r.id).or_insert((kind, r.unit.as_str()));
        }
    }
    for (kind, rows) in [("service", &services), ("complaint", &complaints)] {
        let replaced = replaced_by_own_unit(&rows[..]);
        let mut requests: HashMap<(&str, &str), StageTimes> = HashMap::new();
        for r in rows.iter().filter(|r| !replaced.contains(&r.id)) {
            checked += 1;
            let status = r.supersedes.and_then(|t| match owners.get(&t) {
                None => Some((t, "waiting".to_owned())),
                Some((k, _)) if *k != kind => Some((t, format!("refused: names a {k} event"))),
                Some((_, u)) if *u != r.unit => {
                    Some((t, format!("refused: names an event of unit {u}")))
                }
                Some(_) => None,
            });
            if let Some((target, status)) = status {
                if status == "waiting" {
                    t.add(
                        Rule::CorrectionWaiting,
                        &r.unit,
                        r.month,
                        Uuid::from_u128(r.id).to_string(),
                        format!("names {} (not arrived)", Uuid::from_u128(target)),
                    );
                }
                waiting.push(Waiting {
                    kind: kind.to_owned(),
                    unit_code: r.unit.clone(),
                    correction_event_id: Uuid::from_u128(r.id).to_string(),
                    names_event_id: Uuid::from_u128(target).to_string(),
                    occurred_at: to_rfc3339(r.occurred),
                    status,
                });
            }
            if !r.flags.is_empty() {
                flagged += 1;
            }
            for rule in r.flags.iter() {
                let detail = match (&r.request, rule) {
                    (Some((_, stage, fee, service)), _) => format!(
                        "{stage} {service}{} at {}",
                        fee.map(|f| format!(" fee {f} riel")).unwrap_or_default(),
                        to_rfc3339(r.occurred)
                    ),
                    (None, _) => format!("{kind} at {}", to_rfc3339(r.occurred)),
                };
                t.add(
                    rule,
                    &r.unit,
                    r.month,
                    Uuid::from_u128(r.id).to_string(),
                    detail,
                );
            }
            let Some((request, stage, fee, service)) = &r.request else {
                continue;
            };
            if r.flags.contains(Rule::FeeAboveSchedule) {
                if let (Some(fee), Some((_, sv))) = (fee, reference.catalogue.service(service)) {
                    let o = over.entry(r.unit.clone()).or_default();
                    o.payments += 1;
                    // Exact or an error naming the unit: a saturated total would be a wrong
                    // figure that looks right.
                    let excess = i128::from(*fee) - i128::from(sv.fee_max_riel);
                    let excess: i64 = narrow(excess, "fee above the schedule", &r.unit)?;
                    add(&mut o.excess_riel, excess, "excess_riel", &r.unit)?;
                    if sv.fee_max_riel > 0 {
                        o.worst_ratio = o.worst_ratio.max(*fee as f64 / sv.fee_max_riel as f64);
                    }
                    *o.services.entry(service.clone()).or_default() += 1;
                }
            }
            if let Some(rank) = stage_rank(stage) {
                let slot = &mut requests.entry((&r.unit, request)).or_default()[rank as usize];
                // The earliest time of each stage (ties: the smaller id, for a stable example).
                if slot.is_none_or(|(at, id)| (r.occurred, r.id) < (at, id)) {
                    *slot = Some((r.occurred, r.id));
                }
            }
        }
        let mut requests: Vec<_> = requests.into_iter().collect();
        requests.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for ((unit, request), stages) in requests {
            let at = |k: usize| stages[k].map(|s| s.0);
            let month = |ms: i64| owsu_schemas::time::local_date(ms).month();
            if let (Some(rec), Some(del)) = (at(0), at(3)) {
                if del < rec {
                    t.add(
                        Rule::DeliveredBeforeReceived,
                        unit,
                        month(rec),
                        request.to_owned(),
                        format!(
                            "received {}, delivered {}",
                            to_rfc3339(rec),
                            to_rfc3339(del)
                        ),
                    );
                    continue;
                }
            }
            let inverted = (0..4)
                .flat_map(|a| (a + 1..4).map(move |b| (a, b)))
                .find(|&(a, b)| matches!((at(a), at(b)), (Some(x), Some(y)) if y < x));
            if let Some((a, b)) = inverted {
                const NAMES: [&str; 4] = ["RECEIVED", "FEE_PAID", "APPROVED/REJECTED", "DELIVERED"];
                let first = at(0).or(at(a)).unwrap_or_default();
                t.add(
                    Rule::StagesOutOfOrder,
                    unit,
                    month(first),
                    request.to_owned(),
                    format!(
                        "{} at {} before {} at {}",
                        NAMES[b],
                        to_rfc3339(at(b).unwrap_or_default()),
                        NAMES[a],
                        to_rfc3339(at(a).unwrap_or_default())
                    ),
                );
            }
        }
    }

    // Unit-days: the anomalies kept with each close, and the summary's reconciliation.
    let days = snapshot
        .read_columns(
            &tables::RAW_UNIT_DAYS,
            Some(from),
            Some(to),
            Some(&["unit_code", "date", "anomalies"]),
        )
        .await?;
    let (du, dd, da) = (
        days.column("unit_code")?.str()?.clone(),
        days.column("date")?.date()?.physical().clone(),
        days.column("anomalies")?.str()?.clone(),
    );
    let mut seen_days = HashSet::new();
    for i in 0..days.height() {
        let (Some(unit), Some(day), Some(a)) = (du.get(i), dd.get(i), da.get(i)) else {
            continue;
        };
        let date = epoch_day_to_date(day);
        if date.year() != year || !in_scope(unit) || !seen_days.insert((unit, day, a)) {
            continue;
        }
        for rule in Flags::parse(a)
            .map_err(|c| anyhow::anyhow!("unknown anomaly code {c:?}"))?
            .iter()
        {
            t.add(
                rule,
                unit,
                date.month(),
                date.to_string(),
                "day closure".into(),
            );
        }
    }
    let recon = snapshot
        .read_columns(
            &tables::UNIT_DAYS,
            Some(from),
            Some(to),
            Some(&[
                "unit_code",
                "date",
                "status",
                "reported_services",
                "arrived_services",
                "reported_complaints",
                "arrived_complaints",
            ]),
        )
        .await?;
    let (ru, rd, rs) = (
        recon.column("unit_code")?.str()?.clone(),
        recon.column("date")?.date()?.physical().clone(),
        recon.column("status")?.str()?.clone(),
    );
    let int = |c: &str| -> anyhow::Result<Int64Chunked> { Ok(recon.column(c)?.i64()?.clone()) };
    let (rps, ras, rpc, rac) = (
        int("reported_services")?,
        int("arrived_services")?,
        int("reported_complaints")?,
        int("arrived_complaints")?,
    );
    for i in 0..recon.height() {
        let (Some(unit), Some(day), Some(status)) = (ru.get(i), rd.get(i), rs.get(i)) else {
            continue;
        };
        let date = epoch_day_to_date(day);
        if date.year() != year
            || !in_scope(unit)
            || !matches!(status, "missing_events" | "extra_events")
        {
            continue;
        }
        let n = |c: &Int64Chunked| c.get(i).map_or("–".to_owned(), |v| v.to_string());
        t.add(
            Rule::UnitDayMismatch,
            unit,
            date.month(),
            date.to_string(),
            format!(
                "{status}: services reported {} / arrived {}, complaints reported {} / arrived {}",
                n(&rps),
                n(&ras),
                n(&rpc),
                n(&rac)
            ),
        );
    }

    Ok(assemble(
        reference,
        year,
        scope,
        snapshot.versions(),
        t,
        checked,
        flagged,
        over,
        waiting,
    ))
}

#[allow(clippy::too_many_arguments)]
fn assemble(
    reference: &Reference,
    year: i32,
    scope: Option<&str>,
    lake_versions: Versions,
    t: Tally,
    events_checked: u64,
    events_flagged: u64,
    over: BTreeMap<String, OverTally>,
    mut waiting: Vec<Waiting>,
) -> Quality {
    let unit = |code: &str| reference.registry.get(code);
    let mut by_unit: Vec<UnitRule> = t
        .counts
        .iter()
        .map(|((rule, code), months)| {
            let u = unit(code);
            UnitRule {
                unit_code: code.clone(),
                unit_name: u.map(|u| u.name.clone()).unwrap_or_default(),
                province_code: u.map(|u| u.province_code.clone()).unwrap_or_default(),
                level: u.map(|u| u.level.as_str().to_owned()).unwrap_or_default(),
                rule: rule.code().to_owned(),
                count: months.iter().sum(),
                by_month: *months,
            }
        })
        .collect();
    by_unit.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| (&a.rule, &a.unit_code).cmp(&(&b.rule, &b.unit_code)))
    });
    let rules = Rule::ALL
        .into_iter()
        .filter_map(|r| {
            let rows: Vec<_> = t.counts.iter().filter(|((x, _), _)| *x == r).collect();
            if rows.is_empty() {
                return None;
            }
            let mut by_month = [0u64; 12];
            for (_, m) in &rows {
                for (i, v) in m.iter().enumerate() {
                    by_month[i] += v;
                }
            }
            Some(RuleTotal {
                rule: r.code().to_owned(),
                meaning: r.meaning().to_owned(),
                derived: r.derived(),
                count: by_month.iter().sum(),
                units: rows.len(),
                by_month,
            })
        })
        .collect();
    let mut overcharging: Vec<Overcharge> = over
        .into_iter()
        .map(|(code, o)| {
            let mut sv: Vec<_> = o.services.into_iter().collect();
            sv.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let u = unit(&code);
            Overcharge {
                unit_name: u.map(|u| u.name.clone()).unwrap_or_default(),
                province_code: u.map(|u| u.province_code.clone()).unwrap_or_default(),
                unit_code: code,
                payments: o.payments,
                excess_riel: o.excess_riel,
                worst_ratio: o.worst_ratio,
                services: sv
                    .iter()
                    .map(|(s, n)| format!("{s} ×{n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })
        .collect();
    overcharging.sort_by(|a, b| {
        b.excess_riel
            .cmp(&a.excess_riel)
            .then_with(|| a.unit_code.cmp(&b.unit_code))
    });
    waiting.sort_by(|a, b| {
        (&a.unit_code, &a.correction_event_id).cmp(&(&b.unit_code, &b.correction_event_id))
    });
    Quality {
        year,
        scope: scope.map(str::to_owned),
        lake_versions,
        events_checked,
        events_flagged,
        rules,
        by_unit,
        examples: t.examples.into_values().flatten().collect(),
        overcharging,
        waiting_corrections: waiting,
    }
}

/// The terminal summary.
pub fn table(q: &Quality) -> String {
    let mut s = format!(
        "Data quality {}{}: {} events checked, {} flagged (all counted in the figures)\n",
        q.year,
        q.scope
            .as_deref()
            .map(|x| format!(" ({x})"))
            .unwrap_or_default(),
        thousands(q.events_checked as i64),
        thousands(q.events_flagged as i64),
    );
    let mut t = owsu_runtime::table::new(&["rule", "count", "units", "meaning"], &[1, 2]);
    for r in &q.rules {
        t.add_row(vec![
            r.rule.to_string(),
            thousands(r.count as i64),
            r.units.to_string(),
            format!("{}{}", r.meaning, if r.derived { " (derived)" } else { "" }),
        ]);
    }
    if !q.rules.is_empty() {
        s.push_str(&owsu_runtime::table::render(&t));
    }
    if q.rules.is_empty() {
        s.push_str("no anomalies\n");
    }
    if let Some(o) = q.overcharging.first() {
        let _ = writeln!(
            s,
            "Most above the fee schedule: {} {} ({} payments, {} riel above the maximum)",
            o.unit_code,
            o.unit_name,
            o.payments,
            thousands(o.excess_riel)
        );
    }
    let _ = writeln!(s, "Computed from the lake's tables {}.", q.lake_versions);
    s
}

fn page(q: &Quality) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;max-width:75em}\
        table{border-collapse:collapse;margin:1em 0}\
        td,th{border-bottom:1px solid #ddd;padding:.25em .6em;text-align:left}\
        td.num{text-align:right;font-variant-numeric:tabular-nums}\
        caption{text-align:left;font-weight:bold}";
    let scope = q
        .scope
        .as_deref()
        .map(|x| format!(" — {x}"))
        .unwrap_or_default();
    let waiting = q
        .waiting_corrections
        .iter()
        .filter(|w| w.status == "waiting")
        .count();
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "OWSU data quality " (q.year) (scope) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "Data quality " (q.year) (scope) }
                p {
                    (thousands(q.events_checked as i64)) " events checked; "
                    strong { (thousands(q.events_flagged as i64)) }
                    " carry at least one anomaly. Every one of them is counted in the review's figures as \
                     the office recorded it: this page says which they are."
                }
                table {
                    caption { "Anomalies by rule and month" }
                    tr {
                        th { "rule" } th { "meaning" } th { "units" } th { "total" }
                        @for m in MONTHS { th { (m) } }
                    }
                    @for r in &q.rules {
                        tr {
                            td { code { (r.rule) } }
                            td { (r.meaning) }
                            td class="num" { (r.units) }
                            td class="num" { (thousands(r.count as i64)) }
                            @for v in r.by_month { td class="num" { (thousands(v as i64)) } }
                        }
                    }
                }
                @if !q.overcharging.is_empty() {
                    table {
                        caption { "Fees above the legal schedule, by unit (possible overcharging)" }
                        tr {
                            th { "unit" } th { "name" } th { "province" } th { "payments" }
                            th { "riel above the maximum" } th { "worst fee ÷ maximum" } th { "services" }
                        }
                        @for o in &q.overcharging {
                            tr {
                                td { (o.unit_code) } td { (o.unit_name) } td { (o.province_code) }
                                td class="num" { (o.payments) }
                                td class="num" { (thousands(o.excess_riel)) }
                                td class="num" { (format!("{:.1}×", o.worst_ratio)) }
                                td { (o.services) }
                            }
                        }
                    }
                }
                table {
                    caption { "By unit and rule" }
                    tr { th { "unit" } th { "name" } th { "province" } th { "rule" } th { "count" } }
                    @for u in &q.by_unit {
                        tr {
                            td { (u.unit_code) } td { (u.unit_name) } td { (u.province_code) }
                            td { code { (u.rule) } }
                            td class="num" { (thousands(u.count as i64)) }
                        }
                    }
                }
                table {
                    caption { "Examples" }
                    tr { th { "rule" } th { "unit" } th { "event, request or day" } th { "what" } }
                    @for e in &q.examples {
                        tr {
                            td { code { (e.rule) } } td { (e.unit_code) }
                            td { code { (e.subject) } } td { (e.detail) }
                        }
                    }
                }
                p {
                    (waiting) " corrections wait for their original and "
                    (q.waiting_corrections.len() - waiting)
                    " were refused for naming another unit's or kind's event (listed in \
                     waiting_corrections.csv); neither is counted. Computed from the lake's tables "
                    (q.lake_versions) "."
                }
            }
        }
    };
    page.into_string()
}

/// Writes quality.html, quality.json, anomalies.csv, overcharging.csv and
/// waiting_corrections.csv; returns the HTML's path.
pub fn write(q: &Quality, dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    crate::output::write(&dir.join("quality.json"), serde_json::to_vec_pretty(q)?)?;
    crate::output::atomically(&dir.join("anomalies.csv"), |tmp| {
        let mut w = csv::Writer::from_path(tmp)?;
        let mut header = vec![
            "unit_code",
            "unit_name",
            "province_code",
            "level",
            "rule",
            "count",
        ];
        const M: [&str; 12] = [
            "m01", "m02", "m03", "m04", "m05", "m06", "m07", "m08", "m09", "m10", "m11", "m12",
        ];
        header.extend(M);
        w.write_record(&header)?;
        for u in &q.by_unit {
            let mut rec = vec![
                u.unit_code.clone(),
                u.unit_name.clone(),
                u.province_code.clone(),
                u.level.clone(),
                u.rule.clone(),
                u.count.to_string(),
            ];
            rec.extend(u.by_month.iter().map(|v| v.to_string()));
            w.write_record(&rec)?;
        }
        w.flush()?;
        Ok(())
    })?;
    crate::output::write_csv(&dir.join("overcharging.csv"), &q.overcharging)?;
    crate::output::write_csv(&dir.join("waiting_corrections.csv"), &q.waiting_corrections)?;
    let html = dir.join("quality.html");
    crate::output::write(&html, page(q))?;
    Ok(html)
}
