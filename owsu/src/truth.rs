//! The oversight list held against the simulator's planted problems (`owsu demo` prints it; the
//! tests assert it). Kept here, beside the simulator's users, so the jobs know nothing of it.

use owsu_jobs::inactive::{Flag, Report};
use owsu_producer::simulate::Planted;
use serde::Serialize;

/// How a report compares with the simulator's planted problems.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TruthCheck {
    /// Problems the simulator planted.
    pub planted: usize,
    /// Planted problems the report flagged on their unit with their reason.
    pub found: usize,
    /// Planted problems the report missed, described.
    pub missed: Vec<String>,
    /// Units flagged that have no planted problem.
    pub unplanted_units: Vec<String>,
}

/// Checks a report against `--truth` of `owsu-producer simulate`: every planted problem must be
/// flagged on its unit with its reason (silent units with their exact first silent day).
pub fn check_truth(report: &Report, planted: &[Planted]) -> TruthCheck {
    let has = |unit: &str, reason: &str, ok: &dyn Fn(&Flag) -> bool| {
        report
            .flags
            .iter()
            .any(|f| f.unit_code == unit && f.reason == reason && ok(f))
    };
    let mut c = TruthCheck {
        planted: planted.len(),
        ..Default::default()
    };
    let mut planted_units = std::collections::HashSet::new();
    for p in planted {
        let (ok, what) = match p {
            Planted::Silent { unit_code, since } => {
                planted_units.insert(unit_code.clone());
                (
                    has(unit_code, "silent", &|f| f.since == *since),
                    format!("{unit_code} silent since {since}"),
                )
            }
            Planted::Collapse {
                unit_code, since, ..
            } => {
                planted_units.insert(unit_code.clone());
                (
                    has(unit_code, "volume_collapse", &|_| true),
                    format!("{unit_code} volume collapse since {since}"),
                )
            }
            Planted::StoppedService {
                unit_code,
                service_code,
                since,
            } => {
                planted_units.insert(unit_code.clone());
                (
                    has(unit_code, "stopped_service", &|f| {
                        f.service_code.as_deref() == Some(service_code.as_str())
                    }),
                    format!("{unit_code} stopped {service_code} since {since}"),
                )
            }
            Planted::ReconciliationGap {
                unit_code, date, ..
            } => {
                planted_units.insert(unit_code.clone());
                (
                    has(unit_code, "reconciliation_gap", &|f| f.dates.contains(date)),
                    format!("{unit_code} reconciliation gap on {date}"),
                )
            }
        };
        if ok {
            c.found += 1;
        } else {
            c.missed.push(what);
        }
    }
    let mut others: Vec<String> = report
        .flags
        .iter()
        .map(|f| f.unit_code.clone())
        .filter(|u| !planted_units.contains(u))
        .collect();
    others.sort();
    others.dedup();
    c.unplanted_units = others;
    c
}
