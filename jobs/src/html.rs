//! The review as one self-contained HTML page: no CDN, no script; charts are inline SVG, and a
//! print stylesheet makes it print cleanly to PDF.
//!
//! The page is a maud template: its markup is checked when the crate compiles, and every value
//! put into it is HTML-escaped unless it is the fixed stylesheet, so no unit or sector name can
//! break the page or inject markup.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::review::Review;

/// Digits grouped by three with commas, sign kept: 1234567 → "1,234,567", -1000 → "-1,000".
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// A year-on-year change: "+4.2%", "-1.0%", or "–" when there is no previous year.
fn pct(p: Option<f64>) -> String {
    match p {
        None => "–".into(),
        Some(v) => format!("{}{v:.1}%", if v > 0.0 { "+" } else { "" }),
    }
}

/// A table cell with a year-on-year change, coloured up, down or flat (within ±0.05 %).
fn yoy_cell(p: Option<f64>) -> Markup {
    let class = match p {
        Some(v) if v > 0.05 => "num up",
        Some(v) if v < -0.05 => "num down",
        _ => "num flat",
    };
    html! { td class=(class) { (pct(p)) } }
}

/// A label cut to 42 characters for a chart.
fn short(label: &str) -> String {
    if label.chars().count() > 42 {
        format!("{}…", label.chars().take(41).collect::<String>())
    } else {
        label.to_owned()
    }
}

/// Horizontal bar chart: one bar per (label, value).
fn bar_chart(title: &str, rows: &[(String, f64)], unit: &str) -> Markup {
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1.0);
    let (bar_h, gap, label_w, width) = (18.0, 6.0, 300.0, 760.0);
    let height = rows.len() as f64 * (bar_h + gap) + 30.0;
    html! {
        figure {
            svg viewBox=(format!("0 0 {width} {height}")) width="100%" role="img" aria-label=(title)
                xmlns="http://www.w3.org/2000/svg" {
                title { (title) }
                @for (i, (label, v)) in rows.iter().enumerate() {
                    @let y = 10.0 + i as f64 * (bar_h + gap);
                    @let w = (width - label_w - 110.0) * v / max;
                    text x=(label_w - 8.0) y=(y + 13.0) text-anchor="end" class="lbl" { (short(label)) }
                    rect x=(label_w) y=(y) width=(format!("{w:.1}")) height=(bar_h) class="bar" {}
                    text x=(format!("{:.1}", label_w + w + 6.0)) y=(y + 13.0) class="val" {
                        (thousands(v.round() as i64)) " " (unit)
                    }
                }
            }
            figcaption { (title) }
        }
    }
}

/// Monthly columns with a value label on each.
pub(crate) fn month_chart(title: &str, rows: &[(String, f64)]) -> Markup {
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1.0);
    let (width, height, left, bottom) = (760.0, 260.0, 20.0, 40.0);
    let col_w = (width - 2.0 * left) / rows.len().max(1) as f64;
    let f1 = |v: f64| format!("{v:.1}");
    html! {
        figure {
            svg viewBox=(format!("0 0 {width} {height}")) width="100%" role="img" aria-label=(title)
                xmlns="http://www.w3.org/2000/svg" {
                title { (title) }
                @for (i, (label, v)) in rows.iter().enumerate() {
                    @let h = (height - bottom - 30.0) * v / max;
                    @let x = left + i as f64 * col_w + 4.0;
                    @let y = height - bottom - h;
                    @let cx = x + (col_w - 8.0) / 2.0;
                    rect x=(f1(x)) y=(f1(y)) width=(f1(col_w - 8.0)) height=(f1(h)) class="bar" {}
                    text x=(f1(cx)) y=(f1(y - 5.0)) text-anchor="middle" class="val" { (thousands(v.round() as i64)) }
                    text x=(f1(cx)) y=(f1(height - bottom + 16.0)) text-anchor="middle" class="lbl" { (label) }
                }
            }
            figcaption { (title) }
        }
    }
}

/// The stylesheet of every page (the review's and the dashboard's).
pub(crate) const STYLE: &str = r#"
:root { --ink:#1d2733; --muted:#5b6775; --line:#d9dee4; --accent:#1f5f8b; --up:#17702f; --down:#a3261b; }
* { box-sizing: border-box; }
body { font: 14px/1.45 "Segoe UI", Roboto, "Noto Sans", "Noto Sans Khmer", Arial, sans-serif; color: var(--ink); margin: 0; background: #f6f7f9; }
main { max-width: 1040px; margin: 0 auto; padding: 28px 32px 60px; background: #fff; }
header { border-bottom: 3px solid var(--accent); margin-bottom: 18px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; color: var(--accent); }
.sub { color: var(--muted); margin: 0 0 12px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 7px; text-align: left; vertical-align: top; }
th { font-size: 12px; color: var(--muted); font-weight: 600; background: #fafbfc; }
td.num, th.num { text-align: right; white-space: nowrap; }
tr.total td { font-weight: 700; border-top: 2px solid var(--ink); }
.up { color: var(--up); } .down { color: var(--down); } .flat { color: var(--muted); }
.note { color: var(--muted); font-size: 12px; }
.kpis { display: grid; grid-template-columns: repeat(4, 1fr); gap: 12px; margin: 12px 0; }
.kpi { border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; }
.kpi b { display: block; font-size: 22px; } .kpi span { color: var(--muted); font-size: 12px; }
figure { margin: 8px 0 16px; } figcaption { color: var(--muted); font-size: 12px; }
svg .bar { fill: var(--accent); } svg .lbl { font-size: 11px; fill: var(--ink); } svg .val { font-size: 10px; fill: var(--muted); }
@media print {
  body { background: #fff; font-size: 11px; } main { max-width: none; padding: 0; }
  h2 { break-after: avoid; } table, figure { break-inside: avoid; } .kpis { grid-template-columns: repeat(4, 1fr); }
  @page { size: A4; margin: 14mm; }
}
"#;

/// A rate in per cent with one decimal, or "–" when undefined (nothing within jurisdiction).
fn rate(p: Option<f64>) -> String {
    p.map(|v| format!("{v:.1}%")).unwrap_or_else(|| "–".into())
}

/// Days with one decimal, or "–".
fn days(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "–".into())
}

/// The whole page; `status` (the approval and pending restatements, or "not approved") is
/// shown under the title.
/// A completeness table: per row (a month, province or unit), the unit-days expected and the
/// shares closed, on time and reconciled (the review's and the dashboard's).
pub(crate) fn completeness_table(first: &str, rows: &[crate::completeness::Row]) -> Markup {
    completeness_table_in([first, "Expected", "Closed", "On time", "Reconciled"], rows)
}

/// [`completeness_table`] with the five column headings given (another language's).
pub(crate) fn completeness_table_in(
    headings: [&str; 5],
    rows: &[crate::completeness::Row],
) -> Markup {
    let [first, expected, closed, on_time, reconciled] = headings;
    html! {
        table {
            thead { tr {
                th { (first) } th class="num" { (expected) } th class="num" { (closed) }
                th class="num" { (on_time) } th class="num" { (reconciled) }
            } }
            tbody { @for r in rows {
                tr {
                    td { (r.name) @if r.name != r.code { " " span class="note" { (r.code) } } }
                    td class="num" { (thousands(r.expected as i64)) }
                    td class="num" { (format!("{:.1}%", r.closed_pct)) }
                    td class="num" { (format!("{:.1}%", r.on_time_pct)) }
                    td class="num" { (format!("{:.1}%", r.reconciled_pct)) }
                }
            } }
        }
    }
}

/// A service-standards table: per row (a sector, or a unit and sector), requests delivered with
/// a legal limit and the share within it.
pub(crate) fn standards_table(
    first: &str,
    rows: &[crate::standards::StandardRow],
    units: bool,
) -> Markup {
    html! {
        table {
            thead { tr {
                th { (first) } @if units { th { "Sector" } }
                th class="num" { "Delivered" } th class="num" { "Within the legal time" }
            } }
            tbody { @for r in rows {
                tr {
                    @if units { td { (r.unit_name) " " span class="note" { (r.unit_code) } } }
                    td { (r.sector_name) }
                    td class="num" { (thousands(r.delivered as i64)) }
                    td class="num" { (format!("{:.1}%", r.within_pct)) }
                }
            } }
        }
    }
}

pub(crate) fn review_page(r: &Review, status: Option<&str>) -> String {
    let usd = |riel: i64| riel as f64 / r.riel_per_usd as f64;
    let total = r.facts.last().cloned().unwrap_or_default();
    let last_row = r.facts.len().saturating_sub(1);
    let title = format!("One Window Service Units — yearly review {}", r.year);
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { main {
                header {
                    h1 { (title) }
                    p class="sub" {
                        (r.scope_name) ". Ministry of Interior. Figures from the OWSU national pipeline; money in riel, US$ at "
                        (thousands(r.riel_per_usd)) " riel."
                    }
                    @if let Some(st) = status {
                        p class="sub" { b { (st) } }
                    }
                }
                section class="kpis" {
                    div class="kpi" { b { (thousands(total.services_delivered)) } span { "services provided" } }
                    div class="kpi" {
                        b { "US$" (format!("{:.1}", total.revenue_usd / 1e6)) "M" }
                        span { "service revenue (" (thousands(total.revenue_riel)) " riel)" }
                    }
                    div class="kpi" { b { (thousands(total.complaints_received)) } span { "complaints received" } }
                    div class="kpi" {
                        b { (rate(total.resolution_rate_pct)) }
                        span { "resolution rate (resolved ÷ within jurisdiction)" }
                    }
                }
                p class="sub" {
                    (thousands(r.flagged_events as i64))
                    " events in these figures carry a business-rule anomaly (a fee above the schedule, a complaint \
                     at a unit without an Ombudsman office, …); they are counted as the offices recorded them. "
                    a href=(r.quality_report) { "The data-quality report" }
                    " (" code { "owsu-jobs quality --year " (r.year) } ") lists them."
                }
                @if !r.lost_events.is_none() {
                    p class="sub" { b {
                        (thousands(r.lost_events.events)) " events are in no figure: Kafka deleted them (retention)                          before the lake held them, in " (r.lost_events.gaps) " gap(s) accepted by "
                        (r.lost_events.accepted_by.join(", "))
                        " (the lake's audit/offset_gaps table). Which units and days they were of is not known."
                    } }
                }
                // The table as FACTS.md reads it: services and revenue, then complaints on their two axes.
                h2 { "The year at a glance" }
                table {
                    thead { tr {
                        th { "Level" } th class="num" { "Services provided" } th class="num" { "Revenue (US$)" }
                        th class="num" { "Revenue (riel)" } th class="num" { "Complaints received" }
                        th class="num" { "Resolution rate" }
                    } }
                    tbody { @for (i, f) in r.facts.iter().enumerate() {
                        tr class=[(i == last_row).then_some("total")] {
                            td { (f.level) }
                            td class="num" { (thousands(f.services_delivered)) }
                            td class="num" { (thousands(f.revenue_usd.round() as i64)) }
                            td class="num" { (thousands(f.revenue_riel)) }
                            td class="num" { (thousands(f.complaints_received)) }
                            td class="num" { (rate(f.resolution_rate_pct)) }
                        }
                    } }
                }
                h2 { "Complaints to the Ombudsman offices" }
                table {
                    thead {
                        tr {
                            th rowspan="2" { "Level" } th class="num" rowspan="2" { "Received" }
                            th colspan="3" style="text-align:center" { "Jurisdiction" }
                            th colspan="4" style="text-align:center" { "Status" }
                        }
                        tr {
                            th class="num" { "Within" } th class="num" { "Outside" } th class="num" { "Undecided" }
                            th class="num" { "Resolved" } th class="num" { "More info required" }
                            th class="num" { "Open" } th class="num" { "Withdrawn" }
                        }
                    }
                    tbody { @for (i, f) in r.facts.iter().enumerate() {
                        tr class=[(i == last_row).then_some("total")] {
                            td { (f.level) }
                            @for n in [f.complaints_received, f.within_jurisdiction, f.outside_jurisdiction,
                                       f.jurisdiction_undecided, f.resolved, f.more_info_required, f.open, f.withdrawn] {
                                td class="num" { (thousands(n)) }
                            }
                        }
                    } }
                }
                p class="note" {
                    "Services provided: requests delivered in the year. Revenue: fees paid in the year, refunds deducted. \
                     Complaints are counted in the year they were received, on two axes: jurisdiction (latest decision) and status (latest status event). \
                     Resolution rate = resolved ÷ within jurisdiction, as in the ministry's published figures."
                }
                @if r.previous_year_available {
                    h2 { "Change on " (r.year - 1) }
                    table {
                        thead { tr {
                            th { "Level" } th class="num" { "Services" } th class="num" { "Revenue" }
                            th class="num" { "Complaints" }
                        } }
                        tbody { @for f in &r.facts {
                            tr {
                                td { (f.level) }
                                (yoy_cell(f.services_yoy_pct)) (yoy_cell(f.revenue_yoy_pct)) (yoy_cell(f.complaints_yoy_pct))
                            }
                        } }
                    }
                } @else {
                    p class="note" { "No " (r.year - 1) " figures in the store: year-on-year change is not shown." }
                }

                h2 { "Services by sector" }
                (bar_chart(
                    "Services provided by sector",
                    &r.by_sector.iter().map(|s| (s.sector_name.clone(), s.services_delivered as f64)).collect::<Vec<_>>(),
                    "",
                ))
                table {
                    thead { tr {
                        th { "Sector" } th class="num" { "Capital/provincial" } th class="num" { "District level" }
                        th class="num" { "Services" } th class="num" { "Revenue (US$)" }
                        th class="num" { "Services vs last year" } th class="num" { "Revenue vs last year" }
                    } }
                    tbody { @for s in &r.by_sector {
                        tr {
                            td { (s.sector_name) }
                            td class="num" { (thousands(s.services_provincial)) }
                            td class="num" { (thousands(s.services_district)) }
                            td class="num" { (thousands(s.services_delivered)) }
                            td class="num" { (thousands(usd(s.revenue_riel).round() as i64)) }
                            (yoy_cell(s.services_yoy_pct)) (yoy_cell(s.revenue_yoy_pct))
                        }
                    } }
                }

                h2 { "Services by province" }
                (bar_chart(
                    "Revenue by province (US$)",
                    &r.by_province.iter().map(|p| (p.province_name.clone(), usd(p.revenue_riel))).collect::<Vec<_>>(),
                    "US$",
                ))
                table {
                    thead { tr {
                        th { "Province" } th class="num" { "Units" } th class="num" { "Services" }
                        th class="num" { "Revenue (US$)" } th class="num" { "Complaints" }
                        th class="num" { "Services vs last year" }
                    } }
                    tbody { @for p in &r.by_province {
                        tr {
                            td { (p.province_name) " " span class="note" { (p.province_code) } }
                            td class="num" { (p.units) }
                            td class="num" { (thousands(p.services_delivered)) }
                            td class="num" { (thousands(usd(p.revenue_riel).round() as i64)) }
                            td class="num" { (thousands(p.complaints_received)) }
                            (yoy_cell(p.services_yoy_pct))
                        }
                    } }
                }

                h2 { "Monthly trend" }
                (month_chart(
                    "Services provided per month",
                    &r.monthly.iter().map(|m| (m.month[5..].to_owned(), m.services_delivered as f64)).collect::<Vec<_>>(),
                ))
                (month_chart(
                    "Revenue per month (US$)",
                    &r.monthly.iter().map(|m| (m.month[5..].to_owned(), usd(m.revenue_riel))).collect::<Vec<_>>(),
                ))

                h2 { "Processing time by sector" }
                table {
                    thead { tr {
                        th { "Sector" } th class="num" { "Deliveries" } th class="num" { "Median days" }
                        th class="num" { "90th percentile days" }
                    } }
                    tbody { @for p in &r.processing {
                        tr {
                            td { (p.sector_name) }
                            td class="num" { (thousands(p.deliveries as i64)) }
                            td class="num" { (days(p.median_days)) }
                            td class="num" { (days(p.p90_days)) }
                        }
                    } }
                }
                p class="note" {
                    "Processing time: from the request's receipt to its delivery, in calendar days (weekends and holidays included)."
                }

                h2 { "Service standards" }
                p {
                    "The share of requests delivered within their service's legal time limit (working days from receipt \
                     to delivery; " (r.standards.services_with_limit) " services of the catalogue state one)."
                }
                (standards_table("Sector", &r.standards.by_sector, false))
                @if !r.standards.lowest.is_empty() {
                    h3 { "Lowest units" }
                    (standards_table("Unit", &r.standards.lowest, true))
                }

                @let c = &r.reporting;
                h2 { "Reporting completeness and timeliness" }
                p {
                    (thousands(c.total.closed as i64)) " of " (thousands(c.total.expected as i64))
                    " expected unit-days were closed by their unit (" (format!("{:.1}", c.total.closed_pct)) "%), "
                    (thousands(c.total.on_time as i64)) " on time (" (format!("{:.1}", c.total.on_time_pct)) "%) and "
                    (thousands(c.total.reconciled as i64)) " reconciled (" (format!("{:.1}", c.total.reconciled_pct)) "%)"
                    @if let Some(t) = c.through { ", working days through " (t) } ". "
                    "On time: " (c.deadline) ". Reconciled: the unit's own count equals the events that arrived. "
                    (r.reporting_gaps.len()) " units had "
                    (r.reporting_gaps.iter().map(|g| g.days_with_gaps).sum::<usize>())
                    " unit-days whose own closing count disagreed with the events that arrived."
                }
                (completeness_table("Month", &c.months))
                @if c.provinces.len() > 1 {
                    h3 { "By province" }
                    (completeness_table("Province", &c.provinces))
                }
                @if !c.least_complete.is_empty() {
                    h3 { "Least complete units" }
                    (completeness_table("Unit", &c.least_complete))
                }
                @if !r.reporting_gaps.is_empty() {
                    table {
                        thead { tr {
                            th { "Unit" } th class="num" { "Days closed" } th class="num" { "Days with gaps" }
                            th class="num" { "Events missing" } th { "First gap" }
                        } }
                        tbody { @for g in r.reporting_gaps.iter().take(40) {
                            tr {
                                td { (g.unit_name) " " span class="note" { (g.unit_code) } }
                                td class="num" { (g.unit_days_closed) " / " (g.unit_days_expected) }
                                td class="num" { (g.days_with_gaps) }
                                td class="num" { (g.events_missing) }
                                td { (g.first_gap.map(|d| d.to_string()).unwrap_or_default()) }
                            }
                        } }
                    }
                }
                p class="note" {
                    "Every table of this page is also in review.json and in one CSV file per table beside it. \
                     Computed from the lake's tables " (r.lake_versions) "; latest day with figures: "
                    (r.latest_day.map_or_else(|| "none".to_owned(), |d| d.to_string())) "."
                }
            } }
        }
    };
    let mut out = page.into_string();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_escaping() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(-1000), "-1,000");
        assert_eq!(thousands(12), "12");
        let chart = bar_chart("<b>&'\"", &[("<script>".into(), 3.0)], "US$").into_string();
        assert!(
            chart.contains("&lt;script&gt;") && !chart.contains("<script>"),
            "{chart}"
        );
        assert!(!chart.contains("<b>"), "{chart}");
    }
}
