//! The review as one self-contained HTML page: no CDN, no script; charts are inline SVG, and a
//! print stylesheet makes it print cleanly to PDF. Every piece of data passes through [`esc`].

use std::fmt::Write;

use crate::review::Review;

/// HTML-escapes text.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// 1234567 → "1,234,567".
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

fn pct(p: Option<f64>) -> String {
    match p {
        None => "–".into(),
        Some(v) => format!("{}{v:.1}%", if v > 0.0 { "+" } else { "" }),
    }
}

fn yoy_cell(p: Option<f64>) -> String {
    let class = match p {
        Some(v) if v > 0.05 => "up",
        Some(v) if v < -0.05 => "down",
        _ => "flat",
    };
    format!("<td class=\"num {class}\">{}</td>", pct(p))
}

/// Horizontal bar chart: one bar per (label, value).
fn bar_chart(title: &str, rows: &[(String, f64)], unit: &str) -> String {
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1.0);
    let (bar_h, gap, label_w, width) = (18.0, 6.0, 300.0, 760.0);
    let height = rows.len() as f64 * (bar_h + gap) + 30.0;
    let mut s = format!(
        "<figure><svg viewBox=\"0 0 {width} {height}\" width=\"100%\" role=\"img\" aria-label=\"{t}\" xmlns=\"http://www.w3.org/2000/svg\"><title>{t}</title>",
        t = esc(title)
    );
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = 10.0 + i as f64 * (bar_h + gap);
        let w = (width - label_w - 110.0) * v / max;
        let _ = write!(
            s,
            "<text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\" class=\"lbl\">{l}</text><rect x=\"{label_w}\" y=\"{y}\" width=\"{w:.1}\" height=\"{bar_h}\" class=\"bar\"/><text x=\"{vx:.1}\" y=\"{ty}\" class=\"val\">{val} {u}</text>",
            lx = label_w - 8.0,
            ty = y + 13.0,
            l = esc(&if label.chars().count() > 42 { format!("{}…", label.chars().take(41).collect::<String>()) } else { label.clone() }),
            vx = label_w + w + 6.0,
            val = esc(&thousands(v.round() as i64)),
            u = esc(unit)
        );
    }
    s.push_str("</svg>");
    let _ = write!(s, "<figcaption>{}</figcaption></figure>", esc(title));
    s
}

/// Monthly columns with a value label on each.
fn month_chart(title: &str, rows: &[(String, f64)]) -> String {
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1.0);
    let (width, height, left, bottom) = (760.0, 260.0, 20.0, 40.0);
    let col_w = (width - 2.0 * left) / rows.len().max(1) as f64;
    let mut s = format!(
        "<figure><svg viewBox=\"0 0 {width} {height}\" width=\"100%\" role=\"img\" aria-label=\"{t}\" xmlns=\"http://www.w3.org/2000/svg\"><title>{t}</title>",
        t = esc(title)
    );
    for (i, (label, v)) in rows.iter().enumerate() {
        let h = (height - bottom - 30.0) * v / max;
        let x = left + i as f64 * col_w + 4.0;
        let y = height - bottom - h;
        let _ = write!(
            s,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" class=\"bar\"/><text x=\"{cx:.1}\" y=\"{ly:.1}\" text-anchor=\"middle\" class=\"val\">{val}</text><text x=\"{cx:.1}\" y=\"{by:.1}\" text-anchor=\"middle\" class=\"lbl\">{l}</text>",
            w = col_w - 8.0,
            cx = x + (col_w - 8.0) / 2.0,
            ly = y - 5.0,
            by = height - bottom + 16.0,
            val = esc(&thousands(v.round() as i64)),
            l = esc(label)
        );
    }
    s.push_str("</svg>");
    let _ = write!(s, "<figcaption>{}</figcaption></figure>", esc(title));
    s
}

const STYLE: &str = r#"
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

/// The whole page.
pub fn review_page(r: &Review) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let usd = |riel: i64| riel as f64 / r.riel_per_usd as f64;
    let total = r.facts.last().cloned().unwrap_or_default();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>One Window Service Units — yearly review {y}</title><style>{STYLE}</style></head><body><main>\
         <header><h1>One Window Service Units — yearly review {y}</h1><p class=\"sub\">{scope}. Ministry of Interior. \
         Figures from the OWSU national pipeline; money in riel, US$ at {rate} riel.</p></header>",
        y = r.year,
        scope = esc(&r.scope_name),
        rate = thousands(r.riel_per_usd)
    );
    let _ = write!(
        h,
        "<section class=\"kpis\"><div class=\"kpi\"><b>{}</b><span>services provided</span></div>\
         <div class=\"kpi\"><b>US${:.1}M</b><span>service revenue ({} riel)</span></div>\
         <div class=\"kpi\"><b>{}</b><span>complaints received</span></div>\
         <div class=\"kpi\"><b>{}</b><span>resolution rate (resolved ÷ within jurisdiction)</span></div></section>",
        thousands(total.services_delivered),
        total.revenue_usd / 1e6,
        thousands(total.revenue_riel),
        thousands(total.complaints_received),
        total.resolution_rate_pct.map(|v| format!("{v:.1}%")).unwrap_or_else(|| "–".into())
    );

    let _ = write!(
        h,
        "<p class=\"sub\">{} events in these figures carry a business-rule anomaly (a fee above the schedule, a complaint \
         at a unit without an Ombudsman office, …); they are counted as the offices recorded them. \
         <a href=\"{}\">The data-quality report</a> (<code>owsu-jobs quality --year {}</code>) lists them.</p>",
        thousands(r.flagged_events as i64),
        esc(&r.quality_report),
        r.year
    );
    // The table as FACTS.md reads it: services and revenue, then complaints on their two axes.
    h.push_str("<h2>The year at a glance</h2><table><thead><tr><th>Level</th><th class=\"num\">Services provided</th><th class=\"num\">Revenue (US$)</th><th class=\"num\">Revenue (riel)</th><th class=\"num\">Complaints received</th><th class=\"num\">Resolution rate</th></tr></thead><tbody>");
    for (i, f) in r.facts.iter().enumerate() {
        let _ = write!(
            h,
            "<tr{}><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            if i + 1 == r.facts.len() { " class=\"total\"" } else { "" },
            esc(&f.level),
            thousands(f.services_delivered),
            thousands(f.revenue_usd.round() as i64),
            thousands(f.revenue_riel),
            thousands(f.complaints_received),
            f.resolution_rate_pct.map(|v| format!("{v:.1}%")).unwrap_or_else(|| "–".into()),
        );
    }
    h.push_str("</tbody></table><h2>Complaints to the Ombudsman offices</h2><table><thead><tr><th rowspan=\"2\">Level</th><th class=\"num\" rowspan=\"2\">Received</th><th colspan=\"3\" style=\"text-align:center\">Jurisdiction</th><th colspan=\"4\" style=\"text-align:center\">Status</th></tr><tr><th class=\"num\">Within</th><th class=\"num\">Outside</th><th class=\"num\">Undecided</th><th class=\"num\">Resolved</th><th class=\"num\">More info required</th><th class=\"num\">Open</th><th class=\"num\">Withdrawn</th></tr></thead><tbody>");
    for (i, f) in r.facts.iter().enumerate() {
        let _ = write!(
            h,
            "<tr{}><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            if i + 1 == r.facts.len() { " class=\"total\"" } else { "" },
            esc(&f.level),
            thousands(f.complaints_received),
            thousands(f.within_jurisdiction),
            thousands(f.outside_jurisdiction),
            thousands(f.jurisdiction_undecided),
            thousands(f.resolved),
            thousands(f.more_info_required),
            thousands(f.open),
            thousands(f.withdrawn),
        );
    }
    h.push_str("</tbody></table><p class=\"note\">Services provided: requests delivered in the year. Revenue: fees paid in the year, refunds deducted. \
        Complaints are counted in the year they were received, on two axes: jurisdiction (latest decision) and status (latest status event). \
        Resolution rate = resolved ÷ within jurisdiction, as in the ministry's published figures.</p>");
    if r.previous_year_available {
        let _ = write!(h, "<h2>Change on {}</h2><table><thead><tr><th>Level</th><th class=\"num\">Services</th><th class=\"num\">Revenue</th><th class=\"num\">Complaints</th></tr></thead><tbody>", r.year - 1);
        for f in &r.facts {
            let _ = write!(
                h,
                "<tr><td>{}</td>{}{}{}</tr>",
                esc(&f.level),
                yoy_cell(f.services_yoy_pct),
                yoy_cell(f.revenue_yoy_pct),
                yoy_cell(f.complaints_yoy_pct)
            );
        }
        h.push_str("</tbody></table>");
    } else {
        let _ = write!(
            h,
            "<p class=\"note\">No {} figures in the store: year-on-year change is not shown.</p>",
            r.year - 1
        );
    }

    h.push_str("<h2>Services by sector</h2>");
    h.push_str(&bar_chart(
        "Services provided by sector",
        &r.by_sector
            .iter()
            .map(|s| (s.sector_name.clone(), s.services_delivered as f64))
            .collect::<Vec<_>>(),
        "",
    ));
    h.push_str("<table><thead><tr><th>Sector</th><th class=\"num\">Capital/provincial</th><th class=\"num\">District level</th><th class=\"num\">Services</th><th class=\"num\">Revenue (US$)</th><th class=\"num\">Services vs last year</th><th class=\"num\">Revenue vs last year</th></tr></thead><tbody>");
    for s in &r.by_sector {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>{}{}</tr>",
            esc(&s.sector_name),
            thousands(s.services_provincial),
            thousands(s.services_district),
            thousands(s.services_delivered),
            thousands(usd(s.revenue_riel).round() as i64),
            yoy_cell(s.services_yoy_pct),
            yoy_cell(s.revenue_yoy_pct)
        );
    }
    h.push_str("</tbody></table>");

    h.push_str("<h2>Services by province</h2>");
    h.push_str(&bar_chart(
        "Revenue by province (US$)",
        &r.by_province
            .iter()
            .map(|p| (p.province_name.clone(), usd(p.revenue_riel)))
            .collect::<Vec<_>>(),
        "US$",
    ));
    h.push_str("<table><thead><tr><th>Province</th><th class=\"num\">Units</th><th class=\"num\">Services</th><th class=\"num\">Revenue (US$)</th><th class=\"num\">Complaints</th><th class=\"num\">Services vs last year</th></tr></thead><tbody>");
    for p in &r.by_province {
        let _ = write!(
            h,
            "<tr><td>{} <span class=\"note\">{}</span></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>{}</tr>",
            esc(&p.province_name),
            esc(&p.province_code),
            p.units,
            thousands(p.services_delivered),
            thousands(usd(p.revenue_riel).round() as i64),
            thousands(p.complaints_received),
            yoy_cell(p.services_yoy_pct)
        );
    }
    h.push_str("</tbody></table>");

    h.push_str("<h2>Monthly trend</h2>");
    h.push_str(&month_chart(
        "Services provided per month",
        &r.monthly
            .iter()
            .map(|m| (m.month[5..].to_owned(), m.services_delivered as f64))
            .collect::<Vec<_>>(),
    ));
    h.push_str(&month_chart(
        "Revenue per month (US$)",
        &r.monthly
            .iter()
            .map(|m| (m.month[5..].to_owned(), usd(m.revenue_riel)))
            .collect::<Vec<_>>(),
    ));

    h.push_str("<h2>Processing time by sector</h2><table><thead><tr><th>Sector</th><th class=\"num\">Deliveries</th><th class=\"num\">Median days</th><th class=\"num\">90th percentile days</th></tr></thead><tbody>");
    for p in &r.processing {
        let d = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "–".into());
        let _ = write!(h, "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>", esc(&p.sector_name), thousands(p.deliveries as i64), d(p.median_days), d(p.p90_days));
    }
    h.push_str("</tbody></table><p class=\"note\">Processing time: from the request's receipt to its delivery, in calendar days (weekends and holidays included).</p>");

    let c = &r.completeness;
    let _ = write!(
        h,
        "<h2>Reporting completeness</h2><p>{} of {} expected unit-days were closed by their unit ({:.1}%): {} units × {} working days. \
         {} units had {} unit-days whose own closing count disagreed with the events that arrived.</p>",
        thousands(c.closed_unit_days as i64),
        thousands(c.expected_unit_days as i64),
        c.closed_pct,
        c.units,
        c.working_days,
        c.units_with_gaps,
        c.unit_days_with_gaps
    );
    if !r.reporting_gaps.is_empty() {
        h.push_str("<table><thead><tr><th>Unit</th><th class=\"num\">Days closed</th><th class=\"num\">Days with gaps</th><th class=\"num\">Events missing</th><th>First gap</th></tr></thead><tbody>");
        for g in r.reporting_gaps.iter().take(40) {
            let _ = write!(
                h,
                "<tr><td>{} <span class=\"note\">{}</span></td><td class=\"num\">{} / {}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                esc(&g.unit_name),
                esc(&g.unit_code),
                g.unit_days_closed,
                g.unit_days_expected,
                g.days_with_gaps,
                g.events_missing,
                g.first_gap.map(|d| d.to_string()).unwrap_or_default()
            );
        }
        h.push_str("</tbody></table>");
    }
    let _ = writeln!(
        h,
        "<p class=\"note\">Every table of this page is also in review.json and in one CSV file per table beside it. \
         Computed from the lake's tables {versions}; latest day with figures: {latest}.</p></main></body></html>",
        versions = esc(&r.lake_versions.to_string()),
        latest = r.latest_day.map_or_else(|| "none".to_owned(), |d| d.to_string()),
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_numbers() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(-1000), "-1,000");
        assert_eq!(thousands(12), "12");
    }
}
