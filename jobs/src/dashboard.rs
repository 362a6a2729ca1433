//! The live oversight dashboard's content: a [`Board`] loaded from the lake (the year to date
//! of the latest day with figures), and its pages rendered as server-side HTML in English or
//! Khmer, with charts as inline SVG and no script.
//!
//! A page is scoped by its URL: `/` the nation, `/p/KH-PP` one province (nothing of another
//! province is on it), `/u/KH-PPDD` one unit. Each shows the day's and the year's figures,
//! services per month, the provinces or units below it, the inactive units with since when,
//! reporting completeness, and the anomalies of the quality report. Rendering reads only the
//! board in memory, so a page answers in milliseconds whatever the lake's size; the board is
//! loaded again in the background (see `crate::serve`).

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use maud::{html, PreEscaped, DOCTYPE};
use owsu_lake::Store;
use owsu_schemas::reference::{Reference, Unit};
use owsu_schemas::RIEL_PER_USD;

use crate::completeness::{self, Deadline, UnitMonth};
use crate::data::{self, Ix, Want};
use crate::html::{completeness_table_in, month_chart, thousands, STYLE};
use crate::inactive::{self, Flag, Rules};
use crate::quality::{self, UnitRule};

/// One unit's figures of one day.
#[derive(Debug, Clone, Copy, Default)]
struct DayFigures {
    delivered: i64,
    revenue_riel: i64,
    complaints: i64,
    resolved: i64,
}

/// Everything the pages show, loaded from the lake at one moment.
pub struct Board {
    /// The day the board is as of: the latest day with figures (or the one asked for).
    pub as_of: NaiveDate,
    /// The lake table versions read.
    pub versions: String,
    /// Per unit code, its figures per day of the year to date.
    days: BTreeMap<String, BTreeMap<NaiveDate, DayFigures>>,
    /// Completeness of every unit and month of the year to date.
    unit_months: Vec<UnitMonth>,
    /// The on-time rule.
    deadline: Deadline,
    /// The inactive-unit flags as of `as_of`.
    flags: Vec<Flag>,
    /// Anomalies per unit and rule of the year.
    anomalies: Vec<UnitRule>,
    /// Service standards of the year to date per unit and sector.
    standards: Vec<crate::standards::StandardRow>,
    /// Per unit code, services delivered in the year to date per service code.
    by_service: BTreeMap<String, BTreeMap<String, i64>>,
}

/// Loads the board: the year of `as_of` (default: the latest day with figures in the lake) up
/// to that day, its completeness, the inactive-unit flags and the quality report's anomalies.
pub async fn load(
    store: &Store,
    reference: &Reference,
    as_of: Option<NaiveDate>,
) -> anyhow::Result<Board> {
    let mut ix = Ix::new(reference);
    let want = Want {
        services: true,
        complaints: true,
        unit_days: true,
        closes: true,
        processing: true,
    };
    let as_of = match as_of {
        Some(d) => d,
        None => latest_day(store).await?,
    };
    let year = as_of.year();
    let from = NaiveDate::from_ymd_opt(year, 1, 1).expect("year");
    let s = data::load(store, &mut ix, want, from, as_of, None, None).await?;
    let mut days: BTreeMap<String, BTreeMap<NaiveDate, DayFigures>> = BTreeMap::new();
    let mut by_service: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for r in &s.services {
        let unit = &ix.unit(r.unit).code;
        let n = by_service
            .entry(unit.clone())
            .or_default()
            .entry(ix.service_code(r.service).to_owned())
            .or_default();
        *n = n.saturating_add(r.delivered);
        let d = days
            .entry(unit.clone())
            .or_default()
            .entry(r.date)
            .or_default();
        d.delivered = d.delivered.saturating_add(r.delivered);
        d.revenue_riel = d.revenue_riel.saturating_add(r.revenue_riel);
    }
    for r in &s.complaints {
        let d = days
            .entry(ix.unit(r.unit).code.clone())
            .or_default()
            .entry(r.date)
            .or_default();
        d.complaints = d.complaints.saturating_add(r.received);
        d.resolved = d.resolved.saturating_add(r.resolved);
    }
    let reporting = completeness::compute(reference, &s, year, None, as_of, Deadline::default());
    let standards = crate::standards::compute(reference, &s, &ix).by_unit;
    let flags = inactive::run(store, reference, as_of, None, &Rules::default())
        .await?
        .flags;
    let quality = quality::compute(store, reference, year, None).await?;
    Ok(Board {
        as_of,
        versions: s.versions.to_string(),
        days,
        unit_months: reporting.unit_months,
        deadline: Deadline::default(),
        flags,
        anomalies: quality.by_unit,
        standards,
        by_service,
    })
}

/// The latest day with service or complaint figures in the lake, from the files' statistics
/// (no row is read).
async fn latest_day(store: &Store) -> anyhow::Result<NaiveDate> {
    use owsu_lake::tables::{COMPLAINTS_DAILY, SERVICES_DAILY};
    let snapshot =
        owsu_lake::Snapshot::open(store, &[&SERVICES_DAILY, &COMPLAINTS_DAILY], None).await?;
    let mut latest = None;
    for def in [&SERVICES_DAILY, &COMPLAINTS_DAILY] {
        latest = latest.max(snapshot.latest_date(def).await?);
    }
    latest.ok_or_else(|| {
        anyhow::anyhow!(
            "the lake {} holds no figures yet: run the aggregator first",
            store.url()
        )
    })
}

/// The page's language: English, or Khmer (`?lang=km`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English.
    En,
    /// Khmer.
    Km,
}

impl Lang {
    /// `km` in the URL's query picks Khmer; anything else English.
    pub fn from_query(query: Option<&str>) -> Self {
        let km = query.is_some_and(|q| q.split('&').any(|kv| kv == "lang=km"));
        if km {
            Lang::Km
        } else {
            Lang::En
        }
    }

    fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Km => "km",
        }
    }

    fn labels(self) -> &'static Labels {
        match self {
            Lang::En => &EN,
            Lang::Km => &KM,
        }
    }

    /// A unit's name in this language (Khmer falls back to the registry's name).
    fn unit_name(self, u: &Unit) -> &str {
        match (self, &u.name_km) {
            (Lang::Km, Some(km)) => km,
            _ => &u.name,
        }
    }

    /// The name of a unit's province: the registry's in English; in Khmer, the Khmer name of
    /// its provincial administration without "provincial (capital) administration".
    fn province_name<'r>(self, reference: &'r Reference, u: &'r Unit) -> &'r str {
        let provincial = reference.registry.get(&u.province_code).unwrap_or(u);
        match (self, &provincial.name_km) {
            (Lang::Km, Some(km)) => km
                .strip_prefix("រដ្ឋបាលខេត្ត")
                .or_else(|| km.strip_prefix("រដ្ឋបាលរាជធានី"))
                .unwrap_or(km),
            _ => &u.province_name,
        }
    }

    /// An oversight rule's name (`owsu-jobs inactive`'s reason codes) in this language; an
    /// unknown code as it is.
    fn rule(self, code: &str) -> &str {
        let names: &[(&str, &str, &str)] = &[
            ("silent", "silent", "ស្ងាត់ (គ្មានសកម្មភាព)"),
            ("volume_collapse", "volume collapse", "ចំនួនសេវាធ្លាក់ចុះខ្លាំង"),
            (
                "stopped_service",
                "stopped recording a service",
                "ឈប់កត់ត្រាសេវា",
            ),
            (
                "reconciliation_gap",
                "reconciliation gap",
                "ចំនួនបិទថ្ងៃមិនត្រូវនឹងកំណត់ត្រា",
            ),
            (
                "complaints_open",
                "complaints left open",
                "ពាក្យបណ្តឹងមិនទាន់ដោះស្រាយហួសកំណត់",
            ),
        ];
        match names.iter().find(|(c, _, _)| *c == code) {
            Some((_, en, km)) => match self {
                Lang::En => en,
                Lang::Km => km,
            },
            None => code,
        }
    }

    /// The on-time rule in this language.
    fn deadline(self, d: Deadline) -> String {
        match self {
            Lang::En => d.describe(),
            Lang::Km => format!("បិទមុនម៉ោង {:02}:00 (ម៉ោងកម្ពុជា) នៃថ្ងៃធ្វើការបន្ទាប់", d.hour),
        }
    }
}

/// The fixed texts of a page.
struct Labels {
    title: &'static str,
    nation: &'static str,
    as_of: &'static str,
    today: &'static str,
    year_to_date: &'static str,
    services: &'static str,
    revenue: &'static str,
    complaints: &'static str,
    resolved: &'static str,
    per_month: &'static str,
    provinces: &'static str,
    units: &'static str,
    inactive: &'static str,
    none: &'static str,
    reason: &'static str,
    since: &'static str,
    evidence: &'static str,
    completeness: &'static str,
    month: &'static str,
    least_complete: &'static str,
    anomalies: &'static str,
    standards: &'static str,
    by_service: &'static str,
    service: &'static str,
    sector: &'static str,
    delivered: &'static str,
    within: &'static str,
    rule: &'static str,
    count: &'static str,
    other_language: &'static str,
    back: &'static str,
    expected: &'static str,
    closed: &'static str,
    on_time: &'static str,
    reconciled: &'static str,
}

const EN: Labels = Labels {
    title: "One Window Service Units — oversight",
    nation: "Kingdom of Cambodia",
    as_of: "as of",
    today: "that day",
    year_to_date: "year to date",
    services: "services provided",
    revenue: "revenue (riel)",
    complaints: "complaints received",
    resolved: "complaints resolved",
    per_month: "Services provided per month",
    provinces: "Capital and provinces",
    units: "Units",
    inactive: "Inactive and anomalous units",
    none: "None.",
    reason: "Reason",
    since: "Since",
    evidence: "Evidence",
    completeness: "Reporting completeness",
    month: "Month",
    least_complete: "Least complete units",
    anomalies: "Anomalies in the records (counted in the figures)",
    standards: "Service standards: delivered within the legal time",
    by_service: "Services provided by type, year to date",
    service: "Service",
    sector: "Sector",
    delivered: "Delivered",
    within: "Within the legal time",
    rule: "Rule",
    count: "Count",
    other_language: "ភាសាខ្មែរ",
    back: "National view",
    expected: "Expected",
    closed: "Closed",
    on_time: "On time",
    reconciled: "Reconciled",
};

const KM: Labels = Labels {
    title: "ការិយាល័យច្រកចេញចូលតែមួយ — ការត្រួតពិនិត្យ",
    nation: "ព្រះរាជាណាចក្រកម្ពុជា",
    as_of: "គិតត្រឹម",
    today: "ថ្ងៃនោះ",
    year_to_date: "ពីដើមឆ្នាំ",
    services: "សេវាបានផ្តល់",
    revenue: "ចំណូល (រៀល)",
    complaints: "ពាក្យបណ្តឹងបានទទួល",
    resolved: "ពាក្យបណ្តឹងបានដោះស្រាយ",
    per_month: "សេវាបានផ្តល់ប្រចាំខែ",
    provinces: "រាជធានី និងខេត្ត",
    units: "អង្គភាព",
    inactive: "អង្គភាពអសកម្ម និងមិនប្រក្រតី",
    none: "គ្មាន។",
    reason: "មូលហេតុ",
    since: "ចាប់ពី",
    evidence: "ភស្តុតាង",
    completeness: "ភាពពេញលេញនៃរបាយការណ៍",
    month: "ខែ",
    least_complete: "អង្គភាពរាយការណ៍មិនពេញលេញបំផុត",
    anomalies: "ភាពមិនប្រក្រតីក្នុងកំណត់ត្រា (រាប់បញ្ចូលក្នុងតួលេខ)",
    standards: "ស្តង់ដារសេវា៖ ផ្តល់ជូនក្នុងរយៈពេលកំណត់ដោយច្បាប់",
    by_service: "សេវាបានផ្តល់តាមប្រភេទ ពីដើមឆ្នាំ",
    service: "សេវា",
    sector: "វិស័យ",
    delivered: "បានផ្តល់",
    within: "ក្នុងរយៈពេលកំណត់",
    rule: "ច្បាប់",
    count: "ចំនួន",
    other_language: "English",
    back: "ថ្នាក់ជាតិ",
    expected: "ថ្ងៃត្រូវរាយការណ៍",
    closed: "បានបិទ",
    on_time: "ទាន់ពេល",
    reconciled: "ផ្ទៀងផ្ទាត់ត្រូវ",
};

/// What a page is about: the nation, a province (`KH-PP`) or a unit (`KH-PPDD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Every unit.
    Nation,
    /// A province and its districts.
    Province(&'a str),
    /// One unit.
    Unit(&'a str),
}

impl Scope<'_> {
    fn holds(&self, u: &Unit) -> bool {
        match self {
            Scope::Nation => true,
            Scope::Province(p) => u.province_code == *p,
            Scope::Unit(c) => u.code == *c,
        }
    }

    fn holds_code(&self, reference: &Reference, code: &str) -> bool {
        reference.registry.get(code).is_some_and(|u| self.holds(u))
    }

    fn path(&self) -> String {
        match self {
            Scope::Nation => "/".into(),
            Scope::Province(p) => format!("/p/{p}"),
            Scope::Unit(c) => format!("/u/{c}"),
        }
    }
}

/// Sums of [`DayFigures`] (wide, so no sum can wrap).
#[derive(Debug, Clone, Copy, Default)]
struct Totals {
    delivered: i128,
    revenue_riel: i128,
    complaints: i128,
    resolved: i128,
}

impl Totals {
    fn add(&mut self, d: &DayFigures) {
        self.delivered += i128::from(d.delivered);
        self.revenue_riel += i128::from(d.revenue_riel);
        self.complaints += i128::from(d.complaints);
        self.resolved += i128::from(d.resolved);
    }
}

fn big(n: i128) -> String {
    i64::try_from(n).map_or_else(|_| n.to_string(), thousands)
}

/// The page of `scope` in `lang`; `None` when the scope names no unit or province the registry
/// knows (the server answers 404).
pub fn page(board: &Board, reference: &Reference, scope: Scope<'_>, lang: Lang) -> Option<String> {
    let l = lang.labels();
    let scope_name = match scope {
        Scope::Nation => l.nation.to_owned(),
        Scope::Province(code) => {
            let u = reference
                .registry
                .get(code)
                .filter(|u| u.code == u.province_code)?;
            lang.province_name(reference, u).to_owned()
        }
        Scope::Unit(code) => lang.unit_name(reference.registry.get(code)?).to_owned(),
    };
    let units: Vec<&Unit> = reference
        .registry
        .units
        .iter()
        .filter(|u| u.has_owsu && scope.holds(u))
        .collect();
    // Today, the year to date and each month, over the units in scope.
    let (mut day, mut year) = (Totals::default(), Totals::default());
    let mut months = [0i128; 12];
    for u in &units {
        for (date, f) in board.days.get(&u.code).into_iter().flatten() {
            year.add(f);
            months[date.month0() as usize] += i128::from(f.delivered);
            if *date == board.as_of {
                day.add(f);
            }
        }
    }
    let month_rows: Vec<(String, f64)> = (0..board.as_of.month0() as usize + 1)
        .map(|m| (format!("{:02}", m + 1), months[m] as f64))
        .collect();
    // The level below: provinces of the nation, units of a province.
    let below: Vec<(&Unit, Totals, completeness::Row)> = match scope {
        Scope::Nation => reference
            .registry
            .provinces()
            .map(|p| (p, Scope::Province(&p.code)))
            .map(|(p, s)| {
                let name = lang.province_name(reference, p).to_owned();
                (
                    p,
                    totals_of(board, reference, s),
                    completeness_of(board, reference, s, p, name),
                )
            })
            .collect(),
        Scope::Province(_) => units
            .iter()
            .map(|u| {
                let s = Scope::Unit(&u.code);
                let name = lang.unit_name(u).to_owned();
                (
                    *u,
                    totals_of(board, reference, s),
                    completeness_of(board, reference, s, u, name),
                )
            })
            .collect(),
        Scope::Unit(_) => Vec::new(),
    };
    let flags: Vec<&Flag> = board
        .flags
        .iter()
        .filter(|f| scope.holds_code(reference, &f.unit_code))
        .collect();
    let months_completeness = completeness_months(board, reference, scope);
    let mut anomalies: BTreeMap<&str, u64> = BTreeMap::new();
    for a in board
        .anomalies
        .iter()
        .filter(|a| scope.holds_code(reference, &a.unit_code))
    {
        *anomalies.entry(a.rule.as_str()).or_default() += a.count;
    }
    let other = match lang {
        Lang::En => format!("{}?lang=km", scope.path()),
        Lang::Km => scope.path(),
    };
    let link = |path: String| match lang {
        Lang::En => path,
        Lang::Km => format!("{path}?lang=km"),
    };
    let usd = |riel: i128| riel as f64 / RIEL_PER_USD as f64;
    let markup = html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content="60";
                title { (l.title) " — " (scope_name) }
                style { (PreEscaped(STYLE)) (PreEscaped(DASH_STYLE)) }
            }
            body { main {
                header {
                    nav class="sub" {
                        @if scope != Scope::Nation { a href=(link("/".into())) { (l.back) } " · " }
                        a href=(other) hreflang=(if lang == Lang::En { "km" } else { "en" }) { (l.other_language) }
                    }
                    h1 { (l.title) }
                    p class="sub" { b { (scope_name) } " — " (l.as_of) " " (board.as_of) }
                }
                section class="kpis" {
                    @for (label, d, y) in [
                        (l.services, day.delivered, year.delivered),
                        (l.revenue, day.revenue_riel, year.revenue_riel),
                        (l.complaints, day.complaints, year.complaints),
                        (l.resolved, day.resolved, year.resolved),
                    ] {
                        div class="kpi" {
                            b { (big(y)) }
                            span { (label) ", " (l.year_to_date) " · " (big(d)) " " (l.today) }
                        }
                    }
                }
                p class="note" {
                    "US$" (big(usd(year.revenue_riel).round() as i128)) " (" (thousands(RIEL_PER_USD)) " riel) · " (board.versions)
                }
                (month_chart(l.per_month, &month_rows))
                @if !below.is_empty() {
                    h2 { (if scope == Scope::Nation { l.provinces } else { l.units }) }
                    div class="grid" {
                        @for (u, t, c) in &below {
                            a class="tile" href=(link(if scope == Scope::Nation { format!("/p/{}", u.code) } else { format!("/u/{}", u.code) })) {
                                b { (if scope == Scope::Nation { lang.province_name(reference, u) } else { lang.unit_name(u) }) } br;
                                span { (big(t.delivered)) " " (l.services) } br;
                                span class=(if c.closed_pct < 90.0 { "low" } else { "ok" }) {
                                    (format!("{:.1}%", c.closed_pct)) " " (l.completeness)
                                }
                            }
                        }
                    }
                }
                h2 { (l.inactive) }
                @if flags.is_empty() { p { (l.none) } } @else {
                    table {
                        thead { tr { th { (l.units) } th { (l.reason) } th { (l.since) } th { (l.evidence) } } }
                        tbody { @for f in &flags {
                            tr {
                                td { a href=(link(format!("/u/{}", f.unit_code))) {
                                    (reference.registry.get(&f.unit_code).map(|u| lang.unit_name(u)).unwrap_or(&f.unit_code))
                                } " " span class="note" { (f.unit_code) } }
                                td { (lang.rule(&f.reason)) @if let Some(s) = &f.service_code { ": " (service_name(reference, lang, s)) " " span class="note" { (s) } } }
                                td { (f.since) }
                                td class="note" { (f.evidence) }
                            }
                        } }
                    }
                }
                h2 { (l.completeness) }
                p class="note" { (lang.deadline(board.deadline)) }
                (completeness_table_in([l.month, l.expected, l.closed, l.on_time, l.reconciled], &months_completeness))
                @let least = least_complete(&below);
                @if !least.is_empty() {
                    h3 { (l.least_complete) }
                    (completeness_table_in([l.units, l.expected, l.closed, l.on_time, l.reconciled], &least))
                }
                h2 { (l.standards) }
                @let standards = crate::standards::by_sector_of(&board.standards, |c| scope.holds_code(reference, c));
                table {
                    thead { tr { th { (l.sector) } th class="num" { (l.delivered) } th class="num" { (l.within) } } }
                    tbody { @for r in &standards {
                        tr {
                            td { (sector_name(reference, lang, &r.sector_code, &r.sector_name)) }
                            td class="num" { (thousands(r.delivered as i64)) }
                            td class="num" { (format!("{:.1}%", r.within_pct)) }
                        }
                    } }
                }
                h2 { (l.by_service) }
                @let services = services_of(board, reference, scope);
                @if services.is_empty() { p { (l.none) } } @else {
                    table {
                        thead { tr { th { (l.service) } th { (l.sector) } th class="num" { (l.delivered) } } }
                        tbody { @for (code, n) in services.iter().take(if matches!(scope, Scope::Unit(_)) { usize::MAX } else { SERVICES_SHOWN }) {
                            tr {
                                td { (service_name(reference, lang, code)) " " span class="note" { (code) } }
                                td { @if let Some((sector, _)) = reference.catalogue.service(code) { (sector_name(reference, lang, &sector.code, &sector.name)) } }
                                td class="num" { (thousands(*n)) }
                            }
                        } }
                    }
                }
                h2 { (l.anomalies) }
                @if anomalies.is_empty() { p { (l.none) } } @else {
                    table {
                        thead { tr { th { (l.rule) } th class="num" { (l.count) } } }
                        tbody { @for (rule, n) in &anomalies {
                            tr { td { (rule) } td class="num" { (thousands(*n as i64)) } }
                        } }
                    }
                }
            } }
        }
    };
    let mut out = markup.into_string();
    out.push('\n');
    Some(out)
}

/// A sector's name in `lang` (Khmer from the catalogue, else `name`).
fn sector_name<'a>(reference: &'a Reference, lang: Lang, code: &str, name: &'a str) -> &'a str {
    match lang {
        Lang::Km => reference
            .catalogue
            .sectors
            .iter()
            .find(|s| s.code == code)
            .and_then(|s| s.name_km.as_deref())
            .unwrap_or(name),
        Lang::En => name,
    }
}

/// A service's name in `lang` (Khmer from the catalogue, else its English name; the code when
/// the catalogue does not know it).
fn service_name<'a>(reference: &'a Reference, lang: Lang, code: &'a str) -> &'a str {
    match reference.catalogue.service(code) {
        Some((_, s)) => match (lang, &s.name_km) {
            (Lang::Km, Some(km)) => km,
            _ => &s.name,
        },
        None => code,
    }
}

/// Services listed on a province's or the nation's page (a unit's page lists all it provided).
const SERVICES_SHOWN: usize = 10;

/// Services delivered in the year to date by the units in `scope`, most delivered first (ties
/// by code).
fn services_of(board: &Board, reference: &Reference, scope: Scope<'_>) -> Vec<(String, i64)> {
    let mut sum: BTreeMap<&str, i64> = BTreeMap::new();
    for (unit, services) in &board.by_service {
        if scope.holds_code(reference, unit) {
            for (code, n) in services {
                let t = sum.entry(code).or_default();
                *t = t.saturating_add(*n);
            }
        }
    }
    let mut v: Vec<(String, i64)> = sum
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| (c.to_owned(), n))
        .collect();
    // Stable: ties stay in code order.
    v.sort_by_key(|b| std::cmp::Reverse(b.1));
    v
}

fn totals_of(board: &Board, reference: &Reference, scope: Scope<'_>) -> Totals {
    let mut t = Totals::default();
    for (code, days) in &board.days {
        if scope.holds_code(reference, code) {
            days.values().for_each(|d| t.add(d));
        }
    }
    t
}

/// The year to date's completeness of the units in `scope`, as one row of `u`'s code named
/// `name`.
fn completeness_of(
    board: &Board,
    reference: &Reference,
    scope: Scope<'_>,
    u: &Unit,
    name: String,
) -> completeness::Row {
    let rows: Vec<&UnitMonth> = board
        .unit_months
        .iter()
        .filter(|m| scope.holds_code(reference, &m.unit_code))
        .collect();
    completeness::row_of(u.code.clone(), name, rows)
}

/// Per month, the completeness of the units in `scope`.
fn completeness_months(
    board: &Board,
    reference: &Reference,
    scope: Scope<'_>,
) -> Vec<completeness::Row> {
    let mut by_month: BTreeMap<&str, Vec<&UnitMonth>> = BTreeMap::new();
    for m in board
        .unit_months
        .iter()
        .filter(|m| scope.holds_code(reference, &m.unit_code))
    {
        by_month.entry(&m.month).or_default().push(m);
    }
    by_month
        .into_iter()
        .map(|(m, rows)| completeness::row_of(m.to_owned(), m.to_owned(), rows))
        .collect()
}

/// The rows of `below` least complete first (at most [`completeness::LEAST_COMPLETE_SHOWN`]),
/// leaving out the complete ones.
fn least_complete(below: &[(&Unit, Totals, completeness::Row)]) -> Vec<completeness::Row> {
    let mut rows: Vec<completeness::Row> = below.iter().map(|(_, _, c)| c.clone()).collect();
    completeness::rank_least_complete(&mut rows);
    rows
}

const DASH_STYLE: &str = r#"
nav a { color: var(--accent); }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 8px; }
.tile { display: block; border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; color: var(--ink); text-decoration: none; font-size: 12px; }
.tile b { font-size: 13px; } .tile .low { color: var(--down); } .tile .ok { color: var(--up); }
"#;
