//! The yearly review for the secretary-general: FACTS.md's table for the year, by level, sector
//! and province, with year-on-year change when the previous year is in the store.
//!
//! Every figure is a sum over the summaries (which are exact); a scoped review (`--scope KH-PP`)
//! reads only that province's units, so nothing of another province reaches any output.
//! Sums that do not fit are an error (`crate::sum`), and every file is replaced whole
//! (`crate::output`).

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{Datelike, NaiveDate};
use owsu_lake::Store;
use owsu_schemas::reference::{Level, Reference};
use owsu_schemas::RIEL_PER_USD;
use serde::Serialize;

use crate::completeness::{self, Deadline, Reporting};
use crate::data::{self, median_p90, Ix, Summaries, Want};
use crate::standards::{self, Standards};
use crate::sum::{add, Overflow};

/// FACTS.md's yearly table: one row per level, then one for all units.
///
/// Year-on-year changes are in percent, `None` without previous-year figures or when the
/// previous year's value is 0.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FactsRow {
    /// The level as FACTS.md names it ([`Level::label`]), or `All units`.
    pub level: String,
    /// Requests delivered in the year (services provided).
    pub services_delivered: i64,
    /// Fees paid in the year, refunds deducted, in riel.
    pub revenue_riel: i64,
    /// `revenue_riel` ÷ [`RIEL_PER_USD`].
    pub(crate) revenue_usd: f64,
    /// Complaints received in the year.
    pub complaints_received: i64,
    /// Of those, latest jurisdiction decision within (or resolved).
    pub within_jurisdiction: i64,
    /// Of those, latest decision outside jurisdiction.
    pub outside_jurisdiction: i64,
    /// Of those, no jurisdiction decision yet.
    pub jurisdiction_undecided: i64,
    /// Of those, latest status RESOLVED.
    pub resolved: i64,
    /// Of those, latest status MORE_INFO_REQUIRED.
    pub more_info_required: i64,
    /// Of those, no status event yet.
    pub open: i64,
    /// Of those, latest status WITHDRAWN.
    pub withdrawn: i64,
    /// resolved ÷ within jurisdiction, in percent; `None` when none is within.
    pub(crate) resolution_rate_pct: Option<f64>,
    /// Change in services delivered on the previous year.
    pub services_yoy_pct: Option<f64>,
    /// Change in revenue on the previous year.
    pub(crate) revenue_yoy_pct: Option<f64>,
    /// Change in complaints received on the previous year.
    pub(crate) complaints_yoy_pct: Option<f64>,
}

/// One sector with service figures in the year.
///
/// Year-on-year changes are in percent, `None` without previous-year figures or when the
/// previous year's value is 0.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SectorRow {
    /// The sector's code.
    pub sector_code: String,
    /// Its name in the catalogue ("CODE (not in the catalogue)" for an unknown one).
    pub sector_name: String,
    /// Services delivered by capital/provincial units.
    pub(crate) services_provincial: i64,
    /// Services delivered by municipal/district/khan units.
    pub(crate) services_district: i64,
    /// Services delivered at both levels.
    pub services_delivered: i64,
    /// Fees paid, refunds deducted, in riel.
    pub revenue_riel: i64,
    /// Change in services delivered on the previous year.
    pub services_yoy_pct: Option<f64>,
    /// Change in revenue on the previous year.
    pub(crate) revenue_yoy_pct: Option<f64>,
}

/// One province of the scope in the year.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProvinceRow {
    /// The province's code (`KH-PP`).
    pub province_code: String,
    /// Its name.
    pub province_name: String,
    /// Units of the registry in the province and the scope (with or without an OWSU).
    pub units: usize,
    /// Services delivered in the year.
    pub services_delivered: i64,
    /// Fees paid, refunds deducted, in riel.
    pub revenue_riel: i64,
    /// Complaints received in the year.
    pub complaints_received: i64,
    /// Change in services delivered on the previous year, in percent; `None` without
    /// previous-year figures or when the previous year's value is 0.
    pub services_yoy_pct: Option<f64>,
}

/// One calendar month of the year (Cambodia time); a month without figures has zeros.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MonthRow {
    /// `YYYY-MM`.
    pub month: String,
    /// Services delivered in the month.
    pub services_delivered: i64,
    /// Fees paid in the month, refunds deducted, in riel.
    pub revenue_riel: i64,
    /// Complaints received in the month.
    pub complaints_received: i64,
}

/// Processing times of one sector's deliveries in the year, in calendar days with fractions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcessingRow {
    /// The sector's code.
    pub sector_code: String,
    /// Its name, as in [`SectorRow::sector_name`].
    pub sector_name: String,
    /// Requests delivered with a known processing time.
    pub deliveries: usize,
    /// Median (the mean of the two middle values for an even count).
    pub(crate) median_days: Option<f64>,
    /// 90th percentile (nearest rank).
    pub(crate) p90_days: Option<f64>,
}

/// A unit whose own closing count disagreed with the events that arrived on some day.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GapRow {
    /// The unit's code.
    pub unit_code: String,
    /// Its name.
    pub(crate) unit_name: String,
    /// Working days of the year it closed.
    pub(crate) unit_days_closed: usize,
    /// Working days of the year.
    pub(crate) unit_days_expected: usize,
    /// Days with status `missing_events` or `extra_events`.
    pub(crate) days_with_gaps: usize,
    /// Reported − arrived over those days, services and complaints; negative: extra events.
    pub(crate) events_missing: i64,
    /// The earliest of those days.
    pub(crate) first_gap: Option<NaiveDate>,
}

/// Events Kafka deleted (retention) before the lake held them, whose loss an operator accepted
/// (`audit/offset_gaps`): they are in no figure, and which units and days they were of is not
/// known.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct LostEvents {
    /// Accepted gaps (one per partition and outage).
    pub gaps: usize,
    /// Events in them.
    pub events: i64,
    /// Who accepted them, each once, in the order of the table.
    pub accepted_by: Vec<String>,
}

impl LostEvents {
    /// Nothing lost: the review's JSON leaves the field out.
    pub fn is_none(&self) -> bool {
        self.gaps == 0
    }
}

/// Everything the review shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Review {
    /// The calendar year reported on.
    pub year: i32,
    /// The province or unit code asked for; `None` for the whole country.
    pub scope: Option<String>,
    /// The scope in words, as the page's subtitle names it.
    pub(crate) scope_name: String,
    /// Riel per US$ of every US$ figure ([`RIEL_PER_USD`]).
    pub riel_per_usd: i64,
    /// The previous year has service figures (at the same table versions): changes are shown.
    pub previous_year_available: bool,
    /// FACTS.md's table: provincial, district, then all units.
    pub facts: Vec<FactsRow>,
    /// Sectors, most services delivered first.
    pub by_sector: Vec<SectorRow>,
    /// Provinces of the scope, by province code.
    pub by_province: Vec<ProvinceRow>,
    /// The twelve months, January first.
    pub monthly: Vec<MonthRow>,
    /// Processing times per sector, most deliveries first.
    pub processing: Vec<ProcessingRow>,
    /// Service standards: the share of requests delivered within their service's legal time
    /// limit, per sector, and the lowest units.
    pub standards: Standards,
    /// Completeness and timeliness: unit-days expected, closed, on time and reconciled, in
    /// total, per month and province, and the least complete units.
    pub reporting: Reporting,
    /// Units with reporting gaps, most gap days first, then by unit code.
    pub reporting_gaps: Vec<GapRow>,
    /// The lake table versions the figures were computed from (reproducible by time travel):
    /// the summary tables, and the raw tables the flagged events were counted in.
    pub lake_versions: owsu_lake::snapshot::Versions,
    /// The latest day with figures in the year.
    pub latest_day: Option<NaiveDate>,
    /// Events of the year in scope, counted in these figures, that carry a business-rule
    /// anomaly (a fee above the schedule, a complaint at a unit without an Ombudsman office…).
    pub flagged_events: u64,
    /// Events of unknown unit and day that no figure holds (accepted offset gaps).
    #[serde(skip_serializing_if = "LostEvents::is_none")]
    pub lost_events: LostEvents,
    /// Where the data-quality report that lists them is written by default (relative to the
    /// review's directory when the review is in its default place).
    pub(crate) quality_report: String,
}

fn pct_change(now: i64, before: i64) -> Option<f64> {
    // In i128: the difference of two i64 always fits.
    (before != 0).then(|| (i128::from(now) - i128::from(before)) as f64 * 100.0 / before as f64)
}

fn facts(s: &Summaries, ix: &Ix<'_>) -> Result<Vec<FactsRow>, Overflow> {
    let mut rows: Vec<FactsRow> = [Level::Provincial, Level::District]
        .iter()
        .map(|l| FactsRow {
            level: l.label().to_owned(),
            ..Default::default()
        })
        .collect();
    let idx = |unit: u16| usize::from(ix.level(unit) == Level::District);
    for r in &s.services {
        let f = &mut rows[idx(r.unit)];
        add(
            &mut f.services_delivered,
            r.delivered,
            "services_delivered",
            &f.level,
        )?;
        add(
            &mut f.revenue_riel,
            r.revenue_riel,
            "revenue_riel",
            &f.level,
        )?;
    }
    for c in &s.complaints {
        let f = &mut rows[idx(c.unit)];
        add_complaints(
            f,
            c.received,
            c.within,
            c.outside,
            c.undecided,
            c.resolved,
            c.more_info,
            c.open,
            c.withdrawn,
        )?;
    }
    let mut total = FactsRow {
        level: "All units".into(),
        ..Default::default()
    };
    for f in &mut rows {
        f.revenue_usd = f.revenue_riel as f64 / RIEL_PER_USD as f64;
        f.resolution_rate_pct = (f.within_jurisdiction > 0)
            .then(|| f.resolved as f64 * 100.0 / f.within_jurisdiction as f64);
        add(
            &mut total.services_delivered,
            f.services_delivered,
            "services_delivered",
            &total.level,
        )?;
        add(
            &mut total.revenue_riel,
            f.revenue_riel,
            "revenue_riel",
            &total.level,
        )?;
        add_complaints(
            &mut total,
            f.complaints_received,
            f.within_jurisdiction,
            f.outside_jurisdiction,
            f.jurisdiction_undecided,
            f.resolved,
            f.more_info_required,
            f.open,
            f.withdrawn,
        )?;
    }
    total.revenue_usd = total.revenue_riel as f64 / RIEL_PER_USD as f64;
    total.resolution_rate_pct = (total.within_jurisdiction > 0)
        .then(|| total.resolved as f64 * 100.0 / total.within_jurisdiction as f64);
    rows.push(total);
    Ok(rows)
}

/// Adds complaint counts to a facts row (received, within, outside, undecided, resolved, more
/// info, open, withdrawn).
#[allow(clippy::too_many_arguments)]
fn add_complaints(
    f: &mut FactsRow,
    received: i64,
    within: i64,
    outside: i64,
    undecided: i64,
    resolved: i64,
    more_info: i64,
    open: i64,
    withdrawn: i64,
) -> Result<(), Overflow> {
    let level = &f.level;
    add(
        &mut f.complaints_received,
        received,
        "complaints_received",
        level,
    )?;
    add(
        &mut f.within_jurisdiction,
        within,
        "within_jurisdiction",
        level,
    )?;
    add(
        &mut f.outside_jurisdiction,
        outside,
        "outside_jurisdiction",
        level,
    )?;
    add(
        &mut f.jurisdiction_undecided,
        undecided,
        "jurisdiction_undecided",
        level,
    )?;
    add(&mut f.resolved, resolved, "resolved", level)?;
    add(
        &mut f.more_info_required,
        more_info,
        "more_info_required",
        level,
    )?;
    add(&mut f.open, open, "open", level)?;
    add(&mut f.withdrawn, withdrawn, "withdrawn", level)?;
    Ok(())
}

/// Computes the review of `year` (and the previous year, when present, for the changes).
///
/// Fails when `scope` is not a unit or province code of the registry, when the year has no
/// service or complaint figure in scope, when a sum does not fit, or when the lake cannot be
/// read.
pub async fn compute(
    store: &Store,
    reference: &Reference,
    year: i32,
    scope: Option<&str>,
) -> anyhow::Result<Review> {
    compute_at(store, reference, year, scope, None).await
}

/// [`compute`] from the tables at the versions `at` (an approved review computed again: Delta
/// time travel), or at their latest when `None`.
pub async fn compute_at(
    store: &Store,
    reference: &Reference,
    year: i32,
    scope: Option<&str>,
    at: Option<&owsu_lake::snapshot::Versions>,
) -> anyhow::Result<Review> {
    let mut ix = Ix::new(reference);
    if let Some(s) = scope {
        anyhow::ensure!(
            reference.registry.get(s).is_some(),
            "--scope {s}: not a unit or province code in the registry"
        );
    }
    let (cur, prev) = load(store, &mut ix, year, scope, at).await?;
    let has_prev = !prev.services.is_empty();
    let mut facts_now = facts(&cur, &ix)?;
    if has_prev {
        for (f, p) in facts_now.iter_mut().zip(facts(&prev, &ix)?) {
            f.services_yoy_pct = pct_change(f.services_delivered, p.services_delivered);
            f.revenue_yoy_pct = pct_change(f.revenue_riel, p.revenue_riel);
            f.complaints_yoy_pct = pct_change(f.complaints_received, p.complaints_received);
        }
    }
    let reporting_gaps = reporting_gaps(reference, &cur, &ix, year)?;
    let through = cur
        .latest_day()
        .unwrap_or_else(|| NaiveDate::from_ymd_opt(year, 12, 31).expect("year"));
    let reporting =
        completeness::compute(reference, &cur, year, scope, through, Deadline::default());
    let (flagged_events, raw_versions) = flagged(store, reference, year, scope, at).await?;
    let (lost_events, gap_versions) = lost_events(store, at).await?;
    let mut lake_versions = cur.versions.clone();
    lake_versions.0.extend(raw_versions.0);
    lake_versions.0.extend(gap_versions.0);
    Ok(Review {
        flagged_events,
        lost_events,
        quality_report: format!(
            "../{}/quality.html",
            crate::cli::report_dir("quality", year, scope).trim_start_matches("reports/")
        ),
        year,
        scope: scope.map(str::to_owned),
        scope_name: scope_name(reference, scope),
        riel_per_usd: RIEL_PER_USD,
        previous_year_available: has_prev,
        facts: facts_now,
        by_sector: by_sector(&cur, &prev, &ix, year)?,
        by_province: by_province(reference, &cur, &prev, &ix, year, scope)?,
        monthly: monthly(&cur, year)?,
        processing: processing(&cur, &ix),
        standards: standards::compute(reference, &cur, &ix),
        reporting,
        reporting_gaps,
        latest_day: cur.latest_day(),
        lake_versions,
    })
}

/// The year's summaries (every table) and the previous year's services and complaints, at the
/// same table versions: one consistent picture. An empty year is refused, not reported as a
/// year of no activity.
async fn load(
    store: &Store,
    ix: &mut Ix<'_>,
    year: i32,
    scope: Option<&str>,
    at: Option<&owsu_lake::snapshot::Versions>,
) -> anyhow::Result<(Summaries, Summaries)> {
    let from = NaiveDate::from_ymd_opt(year, 1, 1).expect("year");
    let to = NaiveDate::from_ymd_opt(year, 12, 31).expect("year");
    let all = Want {
        services: true,
        complaints: true,
        unit_days: true,
        processing: true,
        closes: true,
    };
    let cur = data::load(store, ix, all, from, to, scope, at).await?;
    // An all-zero review of a year the lake knows nothing of would read as a year of no
    // activity: refuse it.
    anyhow::ensure!(
        !cur.services.is_empty() || !cur.complaints.is_empty(),
        "no service or complaint figures for {year}{} in the lake (tables {}): check --year, \
         --scope and --store",
        scope.map(|x| format!(" in {x}")).unwrap_or_default(),
        cur.versions,
    );
    let prev = data::load(
        store,
        ix,
        Want {
            services: true,
            complaints: true,
            ..Default::default()
        },
        NaiveDate::from_ymd_opt(year - 1, 1, 1).expect("year"),
        NaiveDate::from_ymd_opt(year - 1, 12, 31).expect("year"),
        scope,
        // The same table versions as this year's figures: one consistent picture.
        Some(&cur.versions),
    )
    .await?;
    Ok((cur, prev))
}

/// Services and revenue per sector, provincial and district, with the change on last year;
/// the busiest sector first.
fn by_sector(
    cur: &Summaries,
    prev: &Summaries,
    ix: &Ix<'_>,
    year: i32,
) -> anyhow::Result<Vec<SectorRow>> {
    let has_prev = !prev.services.is_empty();
    let mut sectors: BTreeMap<u16, (SectorRow, i64, i64)> = BTreeMap::new();
    for r in &cur.services {
        let si = ix.service_sector[r.service as usize];
        let e = sectors.entry(si).or_insert_with(|| {
            (
                SectorRow {
                    sector_code: ix.sector(si).code.clone(),
                    sector_name: ix.sector(si).name.clone(),
                    ..Default::default()
                },
                0,
                0,
            )
        });
        let (row, sector) = (&mut e.0, &ix.sector(si).code);
        add(
            &mut row.services_delivered,
            r.delivered,
            "services_delivered",
            sector,
        )?;
        add(
            &mut row.revenue_riel,
            r.revenue_riel,
            "revenue_riel",
            sector,
        )?;
        match ix.level(r.unit) {
            Level::Provincial => add(
                &mut row.services_provincial,
                r.delivered,
                "services_provincial",
                sector,
            )?,
            Level::District => add(
                &mut row.services_district,
                r.delivered,
                "services_district",
                sector,
            )?,
        }
    }
    for r in &prev.services {
        let si = ix.service_sector[r.service as usize];
        if let Some(e) = sectors.get_mut(&si) {
            let sector = &ix.sector(si).code;
            let prev_year = year - 1;
            add(
                &mut e.1,
                r.delivered,
                "services_delivered",
                &format_args!("{sector} in {prev_year}"),
            )?;
            add(
                &mut e.2,
                r.revenue_riel,
                "revenue_riel",
                &format_args!("{sector} in {prev_year}"),
            )?;
        }
    }
    let mut rows: Vec<SectorRow> = sectors
        .into_values()
        .map(|(mut s, ps, pr)| {
            if has_prev {
                s.services_yoy_pct = pct_change(s.services_delivered, ps);
                s.revenue_yoy_pct = pct_change(s.revenue_riel, pr);
            }
            s
        })
        .collect();
    rows.sort_by(|a, b| {
        b.services_delivered
            .cmp(&a.services_delivered)
            .then(a.sector_code.cmp(&b.sector_code))
    });

    Ok(rows)
}

/// Units, services, revenue and complaints per province of the scope, with the change in
/// services on last year.
fn by_province(
    reference: &Reference,
    cur: &Summaries,
    prev: &Summaries,
    ix: &Ix<'_>,
    year: i32,
    scope: Option<&str>,
) -> anyhow::Result<Vec<ProvinceRow>> {
    let has_prev = !prev.services.is_empty();
    let mut provinces: BTreeMap<String, (ProvinceRow, i64)> = BTreeMap::new();
    for p in reference.registry.provinces().filter(|p| {
        scope.is_none_or(|s| {
            p.province_code == s
                || reference
                    .registry
                    .get(s)
                    .is_some_and(|u| u.province_code == p.code)
        })
    }) {
        let units = reference
            .registry
            .units
            .iter()
            .filter(|u| {
                u.province_code == p.code
                    && scope.is_none_or(|s| u.province_code == s || u.code == s)
            })
            .count();
        provinces.insert(
            p.code.clone(),
            (
                ProvinceRow {
                    province_code: p.code.clone(),
                    province_name: p.province_name.clone(),
                    units,
                    ..Default::default()
                },
                0,
            ),
        );
    }
    for r in &cur.services {
        let province = ix.province(r.unit);
        if let Some(e) = provinces.get_mut(province) {
            add(
                &mut e.0.services_delivered,
                r.delivered,
                "services_delivered",
                &province,
            )?;
            add(
                &mut e.0.revenue_riel,
                r.revenue_riel,
                "revenue_riel",
                &province,
            )?;
        }
    }
    for c in &cur.complaints {
        let province = ix.province(c.unit);
        if let Some(e) = provinces.get_mut(province) {
            add(
                &mut e.0.complaints_received,
                c.received,
                "complaints_received",
                &province,
            )?;
        }
    }
    for r in &prev.services {
        let province = ix.province(r.unit);
        if let Some(e) = provinces.get_mut(province) {
            let prev_year = year - 1;
            add(
                &mut e.1,
                r.delivered,
                "services_delivered",
                &format_args!("{province} in {prev_year}"),
            )?;
        }
    }
    Ok(provinces
        .into_values()
        .map(|(mut p, prev_s)| {
            if has_prev {
                p.services_yoy_pct = pct_change(p.services_delivered, prev_s);
            }
            p
        })
        .collect())
}

/// Services, revenue and complaints per month of the year (all twelve, zero when empty).
fn monthly(cur: &Summaries, year: i32) -> anyhow::Result<Vec<MonthRow>> {
    let mut months: BTreeMap<u32, MonthRow> = (1..=12)
        .map(|m| {
            (
                m,
                MonthRow {
                    month: format!("{year}-{m:02}"),
                    ..Default::default()
                },
            )
        })
        .collect();
    for r in &cur.services {
        let m = months.get_mut(&r.date.month()).expect("month");
        add(
            &mut m.services_delivered,
            r.delivered,
            "services_delivered",
            &m.month,
        )?;
        add(
            &mut m.revenue_riel,
            r.revenue_riel,
            "revenue_riel",
            &m.month,
        )?;
    }
    for c in &cur.complaints {
        let m = months.get_mut(&c.date.month()).expect("month");
        add(
            &mut m.complaints_received,
            c.received,
            "complaints_received",
            &m.month,
        )?;
    }

    Ok(months.into_values().collect())
}

/// Median and 90th percentile of processing days per sector, the most delivered first.
fn processing(cur: &Summaries, ix: &Ix<'_>) -> Vec<ProcessingRow> {
    let mut per_sector: BTreeMap<u16, Vec<f64>> = BTreeMap::new();
    for p in &cur.processing {
        per_sector
            .entry(ix.service_sector[p.service as usize])
            .or_default()
            .push(p.days);
    }
    let mut processing: Vec<ProcessingRow> = per_sector
        .into_iter()
        .map(|(si, mut v)| {
            let (median, p90) = median_p90(&mut v);
            ProcessingRow {
                sector_code: ix.sector(si).code.clone(),
                sector_name: ix.sector(si).name.clone(),
                deliveries: v.len(),
                median_days: median,
                p90_days: p90,
            }
        })
        .collect();
    processing.sort_by_key(|p| std::cmp::Reverse(p.deliveries));

    processing
}

/// The units whose own closing counts disagreed with the events that arrived on some working
/// day of the year (most gap days first, then by code).
fn reporting_gaps(
    reference: &Reference,
    cur: &Summaries,
    ix: &Ix<'_>,
    year: i32,
) -> anyhow::Result<Vec<GapRow>> {
    let from = NaiveDate::from_ymd_opt(year, 1, 1).expect("year");
    let to = NaiveDate::from_ymd_opt(year, 12, 31).expect("year");
    let working = reference.holidays.working_days(from, to);
    let mut per_unit: BTreeMap<u16, (usize, usize, i64, Option<NaiveDate>)> = BTreeMap::new();
    let working_set: std::collections::HashSet<NaiveDate> = working.iter().copied().collect();
    for d in &cur.unit_days {
        let e = per_unit.entry(d.unit).or_default();
        if d.closed && working_set.contains(&d.date) {
            e.0 += 1;
        }
        if d.status == "missing_events" || d.status == "extra_events" {
            e.1 += 1;
            let unit = &ix.unit(d.unit).code;
            add(
                &mut e.2,
                d.services_gap.unwrap_or(0),
                "events_missing",
                unit,
            )?;
            add(
                &mut e.2,
                d.complaints_gap.unwrap_or(0),
                "events_missing",
                unit,
            )?;
            e.3 = Some(e.3.map_or(d.date, |f: NaiveDate| f.min(d.date)));
        }
    }
    let mut gaps: Vec<GapRow> = per_unit
        .iter()
        .filter(|(_, v)| v.1 > 0)
        .map(|(u, v)| GapRow {
            unit_code: ix.unit(*u).code.clone(),
            unit_name: ix.unit(*u).name.clone(),
            unit_days_closed: v.0,
            unit_days_expected: working.len(),
            days_with_gaps: v.1,
            events_missing: v.2,
            first_gap: v.3,
        })
        .collect();
    gaps.sort_by(|a, b| {
        b.days_with_gaps
            .cmp(&a.days_with_gaps)
            .then(a.unit_code.cmp(&b.unit_code))
    });
    Ok(gaps)
}

/// The scope as the page's subtitle names it.
fn scope_name(reference: &Reference, scope: Option<&str>) -> String {
    match scope {
        None => "Kingdom of Cambodia: all 228 reporting units".to_owned(),
        Some(s) => {
            let u = reference.registry.get(s).expect("checked");
            if u.level == Level::Provincial {
                format!("{} and its municipalities, districts and khans", u.name)
            } else {
                format!("{} ({})", u.name, u.province_name)
            }
        }
    }
}

/// Events of the year carrying a business-rule anomaly, and the raw tables' versions read.
///
/// Flagged events are read from the raw tables, opened after the summaries: they hold at least
/// every event the summaries count.
async fn flagged(
    store: &Store,
    reference: &Reference,
    year: i32,
    scope: Option<&str>,
    at: Option<&owsu_lake::snapshot::Versions>,
) -> anyhow::Result<(u64, owsu_lake::snapshot::Versions)> {
    let raw = owsu_lake::Snapshot::open(
        store,
        &[
            &owsu_lake::tables::RAW_SERVICE_EVENTS,
            &owsu_lake::tables::RAW_COMPLAINT_EVENTS,
        ],
        at,
    )
    .await?;
    let flagged_events = crate::quality::flagged_events(&raw, reference, year, scope).await?;
    Ok((flagged_events, raw.versions()))
}

/// The accepted offset gaps of `audit/offset_gaps` (at `at`, or its latest version) and the
/// version read. A review approved before any gap was recorded names no version of the table:
/// the gaps recorded since are not part of it (its restatements are).
async fn lost_events(
    store: &Store,
    at: Option<&owsu_lake::snapshot::Versions>,
) -> anyhow::Result<(LostEvents, owsu_lake::snapshot::Versions)> {
    let table = &owsu_lake::tables::OFFSET_GAPS;
    if at.is_some_and(|v| !v.0.contains_key(table.name)) {
        return Ok(Default::default());
    }
    let snapshot = owsu_lake::Snapshot::open(store, &[table], at).await?;
    let gaps = owsu_lake::audit::offset_gaps(&snapshot).await?;
    let mut lost = LostEvents {
        gaps: gaps.len(),
        ..LostEvents::default()
    };
    for g in gaps {
        lost.events = lost.events.checked_add(g.events_lost).ok_or_else(|| {
            anyhow::anyhow!("audit/offset_gaps: the events lost do not fit in i64")
        })?;
        if !lost.accepted_by.contains(&g.accepted_by) {
            lost.accepted_by.push(g.accepted_by);
        }
    }
    Ok((lost, snapshot.versions()))
}

/// Writes review.html, review.json and one CSV per table into `dir`, each replaced whole.
/// Returns the HTML path.
pub fn write(review: &Review, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    write_with_status(review, dir, None)
}

/// The bytes of review.json: what an approval's digest is taken over.
pub fn json(review: &Review) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec_pretty(review)?)
}

/// [`write()`], with the approval status line shown under the page's title (the figures files are
/// the same bytes either way).
pub fn write_with_status(
    review: &Review,
    dir: &Path,
    status: Option<&str>,
) -> anyhow::Result<std::path::PathBuf> {
    use crate::output::{write, write_csv};
    std::fs::create_dir_all(dir)?;
    write(&dir.join("review.json"), json(review)?)?;
    write_csv(&dir.join("facts.csv"), &review.facts)?;
    write_csv(&dir.join("by_sector.csv"), &review.by_sector)?;
    write_csv(&dir.join("by_province.csv"), &review.by_province)?;
    write_csv(&dir.join("monthly.csv"), &review.monthly)?;
    write_csv(&dir.join("processing_times.csv"), &review.processing)?;
    write_csv(
        &dir.join("service_standards_by_sector.csv"),
        &review.standards.by_sector,
    )?;
    write_csv(
        &dir.join("service_standards.csv"),
        &review.standards.by_unit,
    )?;
    write_csv(
        &dir.join("completeness.csv"),
        std::slice::from_ref(&review.reporting.total),
    )?;
    write_csv(
        &dir.join("completeness_monthly.csv"),
        &review.reporting.months,
    )?;
    write_csv(
        &dir.join("completeness_by_province.csv"),
        &review.reporting.provinces,
    )?;
    write_csv(
        &dir.join("least_complete_units.csv"),
        &review.reporting.least_complete,
    )?;
    write_csv(&dir.join("reporting_gaps.csv"), &review.reporting_gaps)?;
    let html = dir.join("review.html");
    write(&html, crate::html::review_page(review, status))?;
    Ok(html)
}

/// The FACTS.md-style table as terminal text: a title line, then the rows of
/// [`Review::facts`], US$ rounded to whole dollars.
pub fn facts_table(review: &Review) -> String {
    use crate::html::thousands;
    let mut t = owsu_runtime::table::new(
        &[
            "level",
            "services",
            "revenue US$",
            "complaints",
            "within",
            "outside",
            "undecided",
            "resolved",
            "more info",
            "open",
            "withdrawn",
            "rate",
        ],
        &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
    );
    for f in &review.facts {
        t.add_row(vec![
            f.level.clone(),
            thousands(f.services_delivered),
            thousands(f.revenue_usd.round() as i64),
            thousands(f.complaints_received),
            thousands(f.within_jurisdiction),
            thousands(f.outside_jurisdiction),
            thousands(f.jurisdiction_undecided),
            thousands(f.resolved),
            thousands(f.more_info_required),
            thousands(f.open),
            thousands(f.withdrawn),
            f.resolution_rate_pct
                .map(|r| format!("{r:.1}%"))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    format!(
        "{} — {} (US$ at {} riel)\n{}",
        review.year,
        review.scope_name,
        review.riel_per_usd,
        owsu_runtime::table::render(&t)
    )
}
