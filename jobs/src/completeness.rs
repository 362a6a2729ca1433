//! Reporting completeness and timeliness per unit and month, as DHIS2 reports them for its
//! organisation units: working days expected, unit-days closed, closed on time, and reconciled.
//!
//! - **Expected**: the working days (Monday to Friday less the public holidays of
//!   `schemas/reference/holidays.csv`) of the month up to the report's last day, for every unit
//!   in scope that has a One Window Service Unit.
//! - **Closed**: expected days for which the unit's `UnitDayClosed` arrived.
//! - **On time**: closed days whose first close was recorded before the [`Deadline`]: by
//!   default 12:00 Cambodia time on the next working day.
//! - **Reconciled**: closed days whose latest own count equals the events that arrived
//!   (`summaries/unit_days` status `ok`).
//!
//! Every share is of the expected days, as DHIS2's completeness and timeliness rates are. The
//! counts come from `summaries/unit_days` and the closing times from `raw/unit_days`, at the
//! table versions of the report, so an approved review's figures come back the same.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate};
use owsu_lake::Store;
use owsu_schemas::reference::Reference;
use owsu_schemas::time::{day_start, Millis};
use serde::Serialize;

use crate::data::{self, Ix, Summaries, Want};

/// Units shown in a report's ranking of the least complete.
pub const LEAST_COMPLETE_SHOWN: usize = 15;

/// When a unit's close of a day counts as on time: before `hour`:00 Cambodia time on the next
/// working day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// Hour of the next working day (0–23) by which the close must be recorded.
    pub hour: u32,
}

impl Default for Deadline {
    fn default() -> Self {
        Deadline { hour: 12 }
    }
}

impl Deadline {
    /// The rule in words, as the reports state it.
    pub fn describe(&self) -> String {
        format!(
            "closed before {:02}:00 Cambodia time on the next working day",
            self.hour
        )
    }

    /// The last instant (exclusive) a close of `day` counts as on time.
    fn due(&self, reference: &Reference, day: NaiveDate) -> Millis {
        let next = day
            .succ_opt()
            .and_then(|d| {
                reference
                    .holidays
                    .working_days(d, d + chrono::Days::new(31))
                    .first()
                    .copied()
            })
            .unwrap_or(day);
        day_start(next) + i64::from(self.hour) * 3_600_000
    }
}

/// Expected, closed, on-time and reconciled unit-days of a unit, province, month or the nation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    /// Working days the units were expected to close.
    pub expected: usize,
    /// Of those, the days a close arrived for.
    pub closed: usize,
    /// Of those, the days first closed before the deadline.
    pub on_time: usize,
    /// Of the closed days, those whose own count equals the events that arrived.
    pub reconciled: usize,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.expected += o.expected;
        self.closed += o.closed;
        self.on_time += o.on_time;
        self.reconciled += o.reconciled;
    }

    /// `n` as a percentage of the expected days (0 when none is expected).
    fn pct(&self, n: usize) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            n as f64 * 100.0 / self.expected as f64
        }
    }
}

/// A row of a completeness table: a month, a province, a unit or the nation (flat, for CSV).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Row {
    /// `YYYY-MM`, a province or unit code, or `KH` for the nation.
    pub code: String,
    /// The month, province or unit in words.
    pub name: String,
    /// Working days the units were expected to close.
    pub expected: usize,
    /// Of those, the days a close arrived for.
    pub closed: usize,
    /// Of those, the days first closed before the deadline.
    pub on_time: usize,
    /// Of the closed days, those whose own count equals the events that arrived.
    pub reconciled: usize,
    /// closed ÷ expected, in percent: DHIS2's reporting rate.
    pub closed_pct: f64,
    /// on time ÷ expected, in percent: DHIS2's reporting rate on time.
    pub on_time_pct: f64,
    /// reconciled ÷ expected, in percent.
    pub reconciled_pct: f64,
}

impl Row {
    fn new(code: String, name: String, counts: Counts) -> Self {
        Row {
            code,
            name,
            expected: counts.expected,
            closed: counts.closed,
            on_time: counts.on_time,
            reconciled: counts.reconciled,
            closed_pct: counts.pct(counts.closed),
            on_time_pct: counts.pct(counts.on_time),
            reconciled_pct: counts.pct(counts.reconciled),
        }
    }
}

/// One unit in one month: the finest grain, as `completeness.csv` lists it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UnitMonth {
    /// The month, `YYYY-MM`.
    pub month: String,
    /// The unit's code.
    pub unit_code: String,
    /// Its name.
    pub unit_name: String,
    /// Its province's code.
    pub province_code: String,
    /// Working days expected.
    pub expected: usize,
    /// Of those, closed.
    pub closed: usize,
    /// Of those, closed on time.
    pub on_time: usize,
    /// Of the closed, reconciled.
    pub reconciled: usize,
}

impl UnitMonth {
    fn counts(&self) -> Counts {
        Counts {
            expected: self.expected,
            closed: self.closed,
            on_time: self.on_time,
            reconciled: self.reconciled,
        }
    }
}

/// Completeness and timeliness of a year in scope, through its last reported day.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Reporting {
    /// The on-time rule ([`Deadline::describe`]).
    pub deadline: String,
    /// The last day expected: the report's latest day with figures, or the year's end.
    pub through: Option<NaiveDate>,
    /// The whole scope.
    pub total: Row,
    /// Per month, January first (months after `through` are left out).
    pub months: Vec<Row>,
    /// Per province of the scope, by code.
    pub provinces: Vec<Row>,
    /// The least complete units: lowest closed share first, then on time, then reconciled.
    pub least_complete: Vec<Row>,
    /// Every unit and month ([`UnitMonth`]); written as completeness.csv by the command, not
    /// part of the review.
    #[serde(skip)]
    pub unit_months: Vec<UnitMonth>,
}

/// Counts every unit in scope (with an OWSU) and month of `year` up to `through` (inclusive;
/// the year's end when later). `s` must hold `unit_days` and `closes` of the year in scope.
pub(crate) fn compute(
    reference: &Reference,
    s: &Summaries,
    year: i32,
    scope: Option<&str>,
    through: NaiveDate,
    deadline: Deadline,
) -> Reporting {
    let from = NaiveDate::from_ymd_opt(year, 1, 1).expect("year");
    let to = through.min(NaiveDate::from_ymd_opt(year, 12, 31).expect("year"));
    let working = reference.holidays.working_days(from, to);
    // The first close of each unit-day (a later close replaces the counts, not the time the
    // day was first closed).
    let mut first_close: HashMap<(u16, NaiveDate), Millis> = HashMap::new();
    for c in &s.closes {
        first_close
            .entry((c.unit, c.date))
            .and_modify(|t| *t = (*t).min(c.closed_at))
            .or_insert(c.closed_at);
    }
    let days: HashMap<(u16, NaiveDate), &crate::data::DayRow> =
        s.unit_days.iter().map(|d| ((d.unit, d.date), d)).collect();
    let mut unit_months = Vec::new();
    let mut per_unit: Vec<Row> = Vec::new();
    for (i, u) in reference.registry.units.iter().enumerate() {
        if !u.has_owsu || !scope.is_none_or(|s| u.province_code == s || u.code == s) {
            continue;
        }
        let unit = u16::try_from(i).expect("fewer than 65,536 units");
        let mut months: BTreeMap<u32, Counts> = BTreeMap::new();
        for day in &working {
            let c = months.entry(day.month()).or_default();
            c.expected += 1;
            let Some(row) = days.get(&(unit, *day)).filter(|d| d.closed) else {
                continue;
            };
            c.closed += 1;
            if first_close
                .get(&(unit, *day))
                .is_some_and(|t| *t < deadline.due(reference, *day))
            {
                c.on_time += 1;
            }
            if row.status == "ok" {
                c.reconciled += 1;
            }
        }
        let mut total = Counts::default();
        for (m, c) in months {
            total.add(c);
            unit_months.push(UnitMonth {
                month: format!("{year}-{m:02}"),
                unit_code: u.code.clone(),
                unit_name: u.name.clone(),
                province_code: u.province_code.clone(),
                expected: c.expected,
                closed: c.closed,
                on_time: c.on_time,
                reconciled: c.reconciled,
            });
        }
        per_unit.push(Row::new(u.code.clone(), u.name.clone(), total));
    }
    let mut months: BTreeMap<&str, Counts> = BTreeMap::new();
    let mut provinces: BTreeMap<&str, Counts> = BTreeMap::new();
    let mut total = Counts::default();
    for um in &unit_months {
        months.entry(&um.month).or_default().add(um.counts());
        provinces
            .entry(&um.province_code)
            .or_default()
            .add(um.counts());
        total.add(um.counts());
    }
    let province_name = |code: &str| {
        reference
            .registry
            .get(code)
            .map(|u| u.name.clone())
            .unwrap_or_default()
    };
    let mut least = per_unit;
    rank_least_complete(&mut least);
    Reporting {
        deadline: deadline.describe(),
        through: (!working.is_empty()).then_some(to),
        total: Row::new(
            scope.unwrap_or("KH").to_owned(),
            scope.map_or_else(|| "Kingdom of Cambodia".to_owned(), province_name),
            total,
        ),
        months: months
            .into_iter()
            .map(|(m, c)| Row::new(m.to_owned(), month_name(m), c))
            .collect(),
        provinces: provinces
            .into_iter()
            .map(|(p, c)| Row::new(p.to_owned(), province_name(p), c))
            .collect(),
        least_complete: least,
        unit_months,
    }
}

/// Loads the year in scope (summaries and the closes of `raw/unit_days`) and counts it through
/// its latest day with figures.
pub async fn run(
    store: &Store,
    reference: &Reference,
    year: i32,
    scope: Option<&str>,
    deadline: Deadline,
) -> anyhow::Result<Reporting> {
    if let Some(s) = scope {
        anyhow::ensure!(
            reference.registry.get(s).is_some(),
            "--scope {s}: not a unit or province code in the registry"
        );
    }
    let (from, to) = (
        NaiveDate::from_ymd_opt(year, 1, 1).expect("year"),
        NaiveDate::from_ymd_opt(year, 12, 31).expect("year"),
    );
    let mut ix = Ix::new(reference);
    let want = Want {
        services: true,
        complaints: true,
        unit_days: true,
        closes: true,
        ..Want::default()
    };
    let s = data::load(store, &mut ix, want, from, to, scope, None).await?;
    let through = s.latest_day().unwrap_or(to);
    if !reference.holidays.covers(year) {
        tracing::warn!(
            year,
            "holidays.csv lists no public holiday in {year}: working days are Monday to Friday only"
        );
    }
    Ok(compute(reference, &s, year, scope, through, deadline))
}

/// Writes completeness.csv (every unit and month), completeness_monthly.csv,
/// completeness_by_province.csv, least_complete_units.csv and completeness.json into `dir`, each
/// replaced whole. Returns the path of completeness.csv.
pub fn write(r: &Reporting, dir: &Path) -> anyhow::Result<PathBuf> {
    use crate::output::{write, write_csv};
    std::fs::create_dir_all(dir)?;
    let csv = dir.join("completeness.csv");
    write_csv(&csv, &r.unit_months)?;
    write_csv(&dir.join("completeness_monthly.csv"), &r.months)?;
    write_csv(&dir.join("completeness_by_province.csv"), &r.provinces)?;
    write_csv(&dir.join("least_complete_units.csv"), &r.least_complete)?;
    write(
        &dir.join("completeness.json"),
        serde_json::to_vec_pretty(r)?,
    )?;
    Ok(csv)
}

/// The total, the months and the least complete units as terminal text.
pub fn table(r: &Reporting) -> String {
    let mut t = owsu_runtime::table::new(
        &["", "expected", "closed", "on time", "reconciled"],
        &[1, 2, 3, 4],
    );
    let line = |t: &mut owsu_runtime::table::Table, row: &Row| {
        t.add_row(vec![
            row.name.clone(),
            row.expected.to_string(),
            format!("{:.1}%", row.closed_pct),
            format!("{:.1}%", row.on_time_pct),
            format!("{:.1}%", row.reconciled_pct),
        ]);
    };
    for m in &r.months {
        line(&mut t, m);
    }
    line(&mut t, &r.total);
    let mut out = format!(
        "Reporting completeness, {} (on time: {})\n{}",
        r.total.name,
        r.deadline,
        owsu_runtime::table::render(&t)
    );
    if !r.least_complete.is_empty() {
        let mut u = owsu_runtime::table::new(
            &[
                "least complete",
                "expected",
                "closed",
                "on time",
                "reconciled",
            ],
            &[1, 2, 3, 4],
        );
        for row in r.least_complete.iter().take(5) {
            line(&mut u, row);
        }
        out.push_str(&owsu_runtime::table::render(&u));
    }
    out
}

/// Sorts `rows` least complete first (lowest closed share, then on time, then reconciled, then
/// code), leaves out the complete ones and keeps the first [`LEAST_COMPLETE_SHOWN`].
pub(crate) fn rank_least_complete(rows: &mut Vec<Row>) {
    rows.sort_by(|a, b| {
        a.closed_pct
            .total_cmp(&b.closed_pct)
            .then(a.on_time_pct.total_cmp(&b.on_time_pct))
            .then(a.reconciled_pct.total_cmp(&b.reconciled_pct))
            .then(a.code.cmp(&b.code))
    });
    rows.retain(|r| r.closed < r.expected || r.on_time < r.expected || r.reconciled < r.closed);
    rows.truncate(LEAST_COMPLETE_SHOWN);
}

/// One row summing `months` (of any units and months), named `code` and `name`.
pub(crate) fn row_of<'a>(
    code: String,
    name: String,
    months: impl IntoIterator<Item = &'a UnitMonth>,
) -> Row {
    let mut c = Counts::default();
    for m in months {
        c.add(m.counts());
    }
    Row::new(code, name, c)
}

/// `2021-03` as `March 2021`.
fn month_name(month: &str) -> String {
    NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d")
        .map(|d| d.format("%B %Y").to_string())
        .unwrap_or_else(|_| month.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_the_next_working_days_noon() {
        let reference = Reference::load(None).unwrap();
        let d = Deadline::default();
        // Friday 2021-03-05: due Monday 2021-03-08? No: International Women's Day, so Tuesday.
        let fri = NaiveDate::from_ymd_opt(2021, 3, 5).unwrap();
        let tue = NaiveDate::from_ymd_opt(2021, 3, 9).unwrap();
        assert_eq!(d.due(&reference, fri), day_start(tue) + 12 * 3_600_000);
        let wed = NaiveDate::from_ymd_opt(2021, 3, 10).unwrap();
        let thu = NaiveDate::from_ymd_opt(2021, 3, 11).unwrap();
        assert_eq!(
            Deadline { hour: 9 }.due(&reference, wed),
            day_start(thu) + 9 * 3_600_000
        );
        assert_eq!(
            d.describe(),
            "closed before 12:00 Cambodia time on the next working day"
        );
    }
}
