//! Inactive and anomalous units, for oversight: which units went silent, collapsed in volume,
//! stopped recording a service, disagree with their own day closures, or leave complaints open,
//! and since when, with the numbers behind each flag.
//!
//! Rules (all on working days of the holiday calendar, looking back from `--as-of`):
//! - **silent**: no day closure and no event for at least `silent_days` working days;
//! - **volume_collapse**: requests received over the recent window below `collapse_ratio` of the
//!   unit's own trailing-year rate; the window is the shortest (10 to 120 working days) in which
//!   the baseline expects at least 20 requests, so small units are judged on enough data; the
//!   "since" is the change point that makes the drop sharpest;
//! - **stopped_service**: a service the unit received at least 10 requests for whose silence since
//!   its last request spans at least 20 working days and `stopped_strength` (default 16) times
//!   its usual interval between requests, measured from the unit's first active day (a Poisson
//!   gap that long happens by chance with probability e^-16; at 12, `owsu bench` found 3 false
//!   flags in 10 simulated years, where demand is burstier than Poisson);
//! - **reconciliation_gap**: unit-days whose own closing count differs from what arrived;
//! - **complaints_open**: at least `min_open_complaints` complaints within jurisdiction still open
//!   more than `open_days` days after they were received.
//!
//! Only units with an OWSU are judged, and figures after `--as-of` are left out. A silent unit
//! gets that flag alone. An empty look-back window nationally is an error, not a list of every
//! unit: it means a wrong `--as-of` or `--store`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use chrono::{Days, NaiveDate};
use owsu_lake::Store;
use owsu_schemas::reference::Reference;
use serde::Serialize;

use crate::data::{self, Ix, Want};
use crate::sum::add;

/// Thresholds, with the defaults the CLI documents.
#[derive(Debug, Clone, clap::Args)]
pub struct Rules {
    /// Working days without any closure or event that make a unit silent.
    #[arg(long, default_value_t = 10)]
    pub(crate) silent_days: usize,
    /// Recent volume below this share of the unit's trailing-year rate is a collapse.
    #[arg(long, default_value_t = 0.4)]
    pub(crate) collapse_ratio: f64,
    /// A service is "stopped" when its silence lasts this many times its usual interval.
    #[arg(long, default_value_t = 16.0)]
    pub(crate) stopped_strength: f64,
    /// Complaints within jurisdiction open longer than this many days count as overdue.
    #[arg(long, default_value_t = 90)]
    pub(crate) open_days: u64,
    /// Flag a unit with at least this many overdue complaints.
    #[arg(long, default_value_t = 3)]
    pub(crate) min_open_complaints: i64,
    /// Days looked back from --as-of.
    #[arg(long, default_value_t = 400)]
    pub(crate) lookback_days: u64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            silent_days: 10,
            collapse_ratio: 0.4,
            stopped_strength: 16.0,
            open_days: 90,
            min_open_complaints: 3,
            lookback_days: 400,
        }
    }
}

/// One flag on one unit.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Flag {
    /// The unit's code (`KH-PP` or `KH-PPDD`).
    pub unit_code: String,
    /// The unit's name in the registry.
    pub(crate) unit_name: String,
    /// The unit's province (`KH-PP`).
    pub province_code: String,
    /// `provincial` or `district`.
    pub level: String,
    /// silent, volume_collapse, stopped_service, reconciliation_gap or complaints_open.
    pub reason: String,
    /// When it began: the first working day without activity (silent) or without a request
    /// for the service (stopped_service), the change point (volume_collapse), the first gap
    /// day read (reconciliation_gap), or the oldest overdue receipt day (complaints_open).
    pub since: NaiveDate,
    /// The service concerned (stopped_service).
    pub service_code: Option<String>,
    /// The numbers behind the flag, in words.
    pub(crate) evidence: String,
    /// Dates concerned (reconciliation_gap), at most 20.
    pub dates: Vec<NaiveDate>,
}

/// What the job found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The day judged from; figures after it are left out.
    pub as_of: NaiveDate,
    /// The province or unit code asked for; `None` for the whole country.
    pub scope: Option<String>,
    /// The lake table versions the list was computed from (reproducible by time travel).
    pub lake_versions: owsu_lake::snapshot::Versions,
    /// The latest day with any figure in the look-back window.
    pub latest_day: Option<NaiveDate>,
    /// Units in scope that have an OWSU: the units judged.
    pub units_checked: usize,
    /// The flags, by rule (in the order of the module's list), then unit, then since.
    pub flags: Vec<Flag>,
}

impl Flag {
    /// The numbers behind the flag, in words.
    pub fn evidence(&self) -> &str {
        &self.evidence
    }
}

impl Report {
    /// Distinct units with at least one flag.
    pub fn units_flagged(&self) -> usize {
        self.flags
            .iter()
            .map(|f| &f.unit_code)
            .collect::<std::collections::HashSet<_>>()
            .len()
    }
}

/// Looks at the `rules.lookback_days` before `as_of` for every unit in `scope` and flags the
/// inactive and anomalous ones, each flag with its evidence (expected vs observed, since when).
///
/// In order: load the window's summaries, lay out its working days, gather each unit's
/// evidence (activity, volume, requests per service, reconciliation gaps, overdue complaints),
/// apply the rules unit by unit, sort the flags by rule and unit.
///
/// Fails when the window holds no figure nationally, when it has no working day, when a sum
/// does not fit, or when the lake cannot be read.
pub async fn run(
    store: &Store,
    reference: &Reference,
    as_of: NaiveDate,
    scope: Option<&str>,
    rules: &Rules,
) -> anyhow::Result<Report> {
    let mut ix = Ix::new(reference);
    let start = as_of
        .checked_sub_days(Days::new(rules.lookback_days))
        .expect("date");
    let s = load_window(store, &mut ix, start, as_of, scope).await?;
    let days = WorkingDays::new(reference, start, as_of)?;
    let units: Vec<u16> = (0..reference.registry.units.len() as u16)
        .filter(|u| {
            let unit = ix.unit(*u);
            unit.has_owsu && scope.is_none_or(|s| unit.province_code == s || unit.code == s)
        })
        .collect();
    let ev = Evidence::gather(&s, &ix, &units, &days, as_of, rules)?;
    let mut flags = Vec::new();
    for &u in &units {
        flags.extend(unit_flags(u, &ix, &ev, &days, rules)?);
    }
    sort_flags(&mut flags);
    Ok(Report {
        as_of,
        scope: scope.map(str::to_owned),
        lake_versions: s.versions.clone(),
        latest_day: s.latest_day(),
        units_checked: units.len(),
        flags,
    })
}

/// The window's summaries (processing times play no part in activity).
///
/// Nothing at all in the window, nationally, is not 228 inactive units but a wrong --as-of or
/// --store: refused. (A silent province in a lake that has figures elsewhere is flagged as such.)
async fn load_window(
    store: &Store,
    ix: &mut Ix<'_>,
    start: NaiveDate,
    as_of: NaiveDate,
    scope: Option<&str>,
) -> anyhow::Result<data::Summaries> {
    let want = Want {
        services: true,
        complaints: true,
        unit_days: true,
        ..Want::default()
    };
    let s = data::load(store, ix, want, start, as_of, scope, None).await?;
    let empty = |s: &data::Summaries| {
        s.services.is_empty() && s.complaints.is_empty() && s.unit_days.is_empty()
    };
    if empty(&s) {
        let national = match scope {
            None => true,
            Some(_) => {
                let all =
                    data::load(store, ix, want, start, as_of, None, Some(&s.versions)).await?;
                empty(&all)
            }
        };
        anyhow::ensure!(
            !national,
            "no figures from {start} to {as_of} in the lake (tables {}): is --as-of within the \
             period the lake holds?",
            s.versions,
        );
    }
    Ok(s)
}

/// The working days of the window, in order; the rules count in working days.
struct WorkingDays {
    dates: Vec<NaiveDate>,
    index: HashMap<NaiveDate, usize>,
}

impl WorkingDays {
    fn new(reference: &Reference, start: NaiveDate, as_of: NaiveDate) -> anyhow::Result<Self> {
        let dates = reference.holidays.working_days(start, as_of);
        anyhow::ensure!(
            !dates.is_empty(),
            "no working days between {start} and {as_of}"
        );
        let index = dates.iter().enumerate().map(|(i, d)| (*d, i)).collect();
        Ok(WorkingDays { dates, index })
    }

    /// Position of a date among working days (a record on a day off counts on the next working
    /// day).
    fn pos(&self, d: NaiveDate) -> usize {
        self.index.get(&d).copied().unwrap_or_else(|| {
            self.dates
                .partition_point(|w| *w < d)
                .min(self.dates.len() - 1)
        })
    }
}

/// What the rules look at, per unit of the scope, by working day.
struct Evidence {
    /// Whether the unit closed its day or recorded anything, per working day.
    active: HashMap<u16, Vec<bool>>,
    /// Requests received per working day.
    volume: HashMap<u16, Vec<f64>>,
    /// Requests received per (unit, service) and working day.
    per_service: HashMap<(u16, u16), Vec<u32>>,
    /// Unit-days whose closing count disagreed with the events that arrived, with the gap.
    gaps: BTreeMap<u16, Vec<(NaiveDate, i64)>>,
    /// Complaints within jurisdiction still open past `rules.open_days`, and the oldest's date.
    overdue: BTreeMap<u16, (i64, NaiveDate)>,
}

impl Evidence {
    fn gather(
        s: &data::Summaries,
        ix: &Ix<'_>,
        units: &[u16],
        days: &WorkingDays,
        as_of: NaiveDate,
        rules: &Rules,
    ) -> anyhow::Result<Self> {
        let n = days.dates.len();
        let pos = |d: NaiveDate| days.pos(d);
        let mut active: HashMap<u16, Vec<bool>> =
            units.iter().map(|u| (*u, vec![false; n])).collect();
        let mut volume: HashMap<u16, Vec<f64>> = units.iter().map(|u| (*u, vec![0.0; n])).collect();
        let mut per_service: HashMap<(u16, u16), Vec<u32>> = HashMap::new();
        let mut gaps: BTreeMap<u16, Vec<(NaiveDate, i64)>> = BTreeMap::new();
        for d in &s.unit_days {
            if let Some(a) = active.get_mut(&d.unit) {
                // In i128: the sum of two i64 always fits.
                if d.closed || i128::from(d.arrived_services) + i128::from(d.arrived_complaints) > 0
                {
                    a[pos(d.date)] = true;
                }
            }
            if d.status == "missing_events" || d.status == "extra_events" {
                let mut gap = d.services_gap.unwrap_or(0);
                let at = format_args!("{} on {}", ix.unit(d.unit).code, d.date);
                add(
                    &mut gap,
                    d.complaints_gap.unwrap_or(0),
                    "events_missing",
                    &at,
                )?;
                gaps.entry(d.unit).or_default().push((d.date, gap));
            }
        }
        for r in &s.services {
            let p = pos(r.date);
            if let Some(v) = volume.get_mut(&r.unit) {
                v[p] += r.received as f64;
            }
            if let Some(a) = active.get_mut(&r.unit) {
                a[p] = true;
            }
            // Requests, not events: a request's several stages are one piece of evidence, not several.
            if r.received > 0 {
                let slot = &mut per_service
                    .entry((r.unit, r.service))
                    .or_insert_with(|| vec![0; n])[p];
                let at = format_args!(
                    "{}, {}, {}",
                    ix.unit(r.unit).code,
                    ix.service_code(r.service),
                    r.date
                );
                add(slot, r.received, "requests_received", &at)?;
            }
        }
        let mut overdue: BTreeMap<u16, (i64, NaiveDate)> = BTreeMap::new();
        let overdue_before = as_of
            .checked_sub_days(Days::new(rules.open_days))
            .expect("date");
        for c in s
            .complaints
            .iter()
            .filter(|c| c.open_within > 0 && c.date < overdue_before)
        {
            let e = overdue.entry(c.unit).or_insert((0, c.date));
            add(
                &mut e.0,
                c.open_within,
                "open_within_jurisdiction",
                &ix.unit(c.unit).code,
            )?;
            e.1 = e.1.min(c.date);
        }
        Ok(Evidence {
            active,
            volume,
            per_service,
            gaps,
            overdue,
        })
    }
}

/// A flag of `unit` for `reason`.
fn new_flag(
    unit: &owsu_schemas::Unit,
    reason: &str,
    since: NaiveDate,
    service: Option<String>,
    evidence: String,
    dates: Vec<NaiveDate>,
) -> Flag {
    Flag {
        unit_code: unit.code.clone(),
        unit_name: unit.name.clone(),
        province_code: unit.province_code.clone(),
        level: unit.level.as_str().to_owned(),
        reason: reason.to_owned(),
        since,
        service_code: service,
        evidence,
        dates,
    }
}

/// Every rule applied to one unit: a silent unit gets that flag alone (its other "anomalies"
/// are the silence itself); any other may get several.
fn unit_flags(
    u: u16,
    ix: &Ix<'_>,
    ev: &Evidence,
    days: &WorkingDays,
    rules: &Rules,
) -> anyhow::Result<Vec<Flag>> {
    let unit = ix.unit(u);
    let flag =
        |reason: &str,
         since: NaiveDate,
         service: Option<String>,
         evidence: String,
         dates: Vec<NaiveDate>| new_flag(unit, reason, since, service, evidence, dates);
    let (working, n) = (&days.dates, days.dates.len());
    let Evidence {
        active,
        volume,
        per_service,
        gaps,
        overdue,
    } = ev;
    let mut flags = Vec::new();
    let a = &active[&u];
    let last = a.iter().rposition(|x| *x);
    let silent = match last {
        None => n >= rules.silent_days,
        Some(l) => n - 1 - l >= rules.silent_days,
    };
    if silent {
        let since = last.map_or(working[0], |l| working[l + 1]);
        let evidence = match last {
            Some(l) => format!(
                "no day closure and no event for {} working days; last activity {}",
                n - 1 - l,
                working[l]
            ),
            None => format!("no day closure and no event in the {n} working days looked at"),
        };
        flags.push(flag("silent", since, None, evidence, vec![]));
        return Ok(flags); // a silent unit's other "anomalies" are the silence itself
    }

    if let Some(f) = collapse(&volume[&u], working, rules) {
        flags.push(flag("volume_collapse", f.0, None, f.1, vec![]));
    }
    // Services that stopped. The usual rate is measured from the unit's first active day (not
    // the service's first record, which would overstate a rare service's rate).
    let unit_start = a.iter().position(|x| *x).unwrap_or(0);
    let mut stopped: Vec<(u16, usize, f64, usize)> = Vec::new();
    for ((_, svc), series) in per_service.iter().filter(|((x, _), _)| *x == u) {
        let Some(last) = series.iter().rposition(|x| *x > 0) else {
            continue;
        };
        // u64: the sum of u32 counts of at most a few thousand working days cannot wrap.
        let count: u64 = series[..=last].iter().map(|c| u64::from(*c)).sum();
        let rate = count as f64 / (last + 1 - unit_start.min(last)) as f64;
        let gap = n - 1 - last;
        if count >= 10 && gap >= 20 && rate * gap as f64 >= rules.stopped_strength {
            stopped.push((*svc, last, rate, gap));
        }
    }
    stopped.sort_by_key(|s| s.0);
    for (svc, last, rate, gap) in stopped {
        let evidence = format!(
            "{:.2} requests per working day until {}, then none for {} working days",
            rate, working[last], gap
        );
        flags.push(flag(
            "stopped_service",
            working[last + 1],
            Some(ix.service_code(svc).to_owned()),
            evidence,
            vec![],
        ));
    }

    if let Some(g) = gaps.get(&u) {
        let mut missing = 0i64;
        for x in g {
            add(&mut missing, x.1, "events_missing", &unit.code)?;
        }
        let evidence = format!("{} unit-days whose own closing count differs from the events that arrived ({} events net missing)", g.len(), missing);
        flags.push(flag(
            "reconciliation_gap",
            g[0].0,
            None,
            evidence,
            g.iter().take(20).map(|x| x.0).collect(),
        ));
    }
    if let Some((count, oldest)) = overdue.get(&u).filter(|o| o.0 >= rules.min_open_complaints) {
        let evidence = format!(
            "{count} complaints within jurisdiction still open more than {} days after receipt",
            rules.open_days
        );
        flags.push(flag("complaints_open", *oldest, None, evidence, vec![]));
    }
    Ok(flags)
}

/// The volume-collapse rule: the recent rate of requests against the trailing year's, over the
/// shortest recent window with enough expected requests to tell; returns the change point (the
/// split that makes after ÷ before smallest) and the evidence.
fn collapse(v: &[f64], working: &[NaiveDate], rules: &Rules) -> Option<(NaiveDate, String)> {
    let n = working.len();
    let mut prefix = vec![0.0; n + 1];
    for i in 0..n {
        prefix[i + 1] = prefix[i] + v[i];
    }
    let mean = |a: usize, b: usize| {
        if b > a {
            (prefix[b] - prefix[a]) / (b - a) as f64
        } else {
            0.0
        }
    };
    let mut recent = 10usize;
    loop {
        let base_start = n.saturating_sub(recent + 250);
        let base_rate = mean(base_start, n - recent);
        if (n - recent - base_start) < 60 {
            break;
        }
        if base_rate * recent as f64 >= 20.0 {
            let observed = prefix[n] - prefix[n - recent];
            if observed < rules.collapse_ratio * base_rate * recent as f64 {
                // Change point: the split that makes after/before smallest.
                let (mut best, mut best_ratio) = (n - recent, f64::MAX);
                for d in (base_start + 20)..(n - 5) {
                    let before = mean(d.saturating_sub(120).max(base_start), d);
                    let after = mean(d, n);
                    if before > 0.0 && after / before < best_ratio - 1e-9 {
                        best_ratio = after / before;
                        best = d;
                    }
                }
                let evidence = format!(
                    "{:.1} requests per working day over the last {} working days, {:.0}% of its trailing-year rate of {:.1}",
                    observed / recent as f64,
                    recent,
                    observed * 100.0 / (base_rate * recent as f64),
                    base_rate
                );
                return Some((working[best], evidence));
            }
            break;
        }
        recent += 5;
        if recent > 120 {
            break;
        }
    }
    None
}

/// Flags by rule (silent first), then unit, then since.
fn sort_flags(flags: &mut [Flag]) {
    let order = |r: &str| {
        [
            "silent",
            "volume_collapse",
            "stopped_service",
            "reconciliation_gap",
            "complaints_open",
        ]
        .iter()
        .position(|x| *x == r)
        .unwrap_or(9)
    };
    flags.sort_by(|a, b| {
        order(&a.reason)
            .cmp(&order(&b.reason))
            .then(a.unit_code.cmp(&b.unit_code))
            .then(a.since.cmp(&b.since))
    });
}

/// Writes inactive.json (the whole report) and inactive.csv (one row per flag, dates
/// space-separated) into `dir`, each replaced whole; returns (csv, json) paths.
pub fn write(report: &Report, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let json = dir.join("inactive.json");
    crate::output::write(&json, serde_json::to_vec_pretty(report)?)?;
    let csv_path = dir.join("inactive.csv");
    crate::output::atomically(&csv_path, |tmp| {
        let mut w = csv::Writer::from_path(tmp)?;
        w.write_record([
            "unit_code",
            "unit_name",
            "province_code",
            "level",
            "reason",
            "since",
            "service_code",
            "evidence",
            "dates",
        ])?;
        for f in &report.flags {
            let dates: Vec<String> = f.dates.iter().map(|d| d.to_string()).collect();
            w.write_record([
                f.unit_code.as_str(),
                &f.unit_name,
                &f.province_code,
                &f.level,
                &f.reason,
                &f.since.to_string(),
                f.service_code.as_deref().unwrap_or(""),
                &f.evidence,
                &dates.join(" "),
            ])?;
        }
        w.flush()?;
        Ok(())
    })?;
    Ok((csv_path, json))
}

/// The terminal table: a title line with the counts, one row per flag, and the table versions.
pub fn table(report: &Report) -> String {
    let mut t = owsu_runtime::table::new(&["unit", "name", "reason", "since", "evidence"], &[]);
    for f in &report.flags {
        let what = match &f.service_code {
            Some(sv) => format!("{sv}: {}", f.evidence),
            None => f.evidence.clone(),
        };
        t.add_row(vec![
            f.unit_code.clone(),
            f.unit_name.clone(),
            f.reason.to_string(),
            f.since.to_string(),
            what,
        ]);
    }
    format!(
        "Oversight list as of {}{}: {} of {} units flagged\n{}Computed from the lake's tables {}; latest day with figures: {}.\n",
        report.as_of,
        report
            .scope
            .as_deref()
            .map(|x| format!(" ({x})"))
            .unwrap_or_default(),
        report.units_flagged(),
        report.units_checked,
        owsu_runtime::table::render(&t),
        report.lake_versions,
        report
            .latest_day
            .map_or_else(|| "none".to_owned(), |d| d.to_string())
    )
}
