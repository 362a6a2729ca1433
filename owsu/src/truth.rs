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
            Planted::OverdueComplaints {
                unit_code, since, ..
            } => {
                planted_units.insert(unit_code.clone());
                (
                    has(unit_code, "complaints_open", &|_| true),
                    format!("{unit_code} complaints unanswered since {since}"),
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

/// One rule's score over one or more reports: how many planted problems of its kind it found
/// (recall), and how many of its flags a planted problem explains (precision).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RuleScore {
    /// Problems of this kind the simulator planted.
    pub planted: usize,
    /// Of those, flagged by the rule on their unit (and service, or day).
    pub found: usize,
    /// Flags the rule raised.
    pub flags: usize,
    /// Of those, flags a planted problem of this kind explains.
    pub true_flags: usize,
}

impl RuleScore {
    /// found ÷ planted (`None` when nothing of the kind was planted).
    pub fn recall(&self) -> Option<f64> {
        (self.planted > 0).then(|| self.found as f64 / self.planted as f64)
    }
    /// true flags ÷ flags (`None` when the rule raised none).
    pub fn precision(&self) -> Option<f64> {
        (self.flags > 0).then(|| self.true_flags as f64 / self.flags as f64)
    }
    /// Adds another report's score.
    pub fn add(&mut self, o: RuleScore) {
        self.planted += o.planted;
        self.found += o.found;
        self.flags += o.flags;
        self.true_flags += o.true_flags;
    }
}

/// The rules of `owsu-jobs inactive`, as its flags name them.
pub const RULES: [&str; 5] = [
    "silent",
    "volume_collapse",
    "stopped_service",
    "reconciliation_gap",
    "complaints_open",
];

/// Whether flag `f` finds planted problem `p` (see [`score`]).
pub fn finds(f: &Flag, p: &Planted) -> bool {
    match p {
        Planted::Silent { unit_code, since } => {
            f.reason == "silent" && f.unit_code == *unit_code && f.since == *since
        }
        Planted::Collapse { unit_code, .. } => {
            f.reason == "volume_collapse" && f.unit_code == *unit_code
        }
        Planted::StoppedService {
            unit_code,
            service_code,
            ..
        } => {
            f.reason == "stopped_service"
                && f.unit_code == *unit_code
                && f.service_code.as_deref() == Some(service_code.as_str())
        }
        Planted::OverdueComplaints { unit_code, .. } => {
            f.reason == "complaints_open" && f.unit_code == *unit_code
        }
        Planted::ReconciliationGap {
            unit_code, date, ..
        } => {
            f.reason == "reconciliation_gap" && f.unit_code == *unit_code && f.dates.contains(date)
        }
    }
}

/// Per rule ([`RULES`]), `report` scored against the planted problems: a planted problem is
/// found when a flag of its rule names its unit (a silent unit's with its exact first silent
/// day, a stopped service's with its service, a gap's with its day among the flag's dates); a
/// flag is true when it finds a planted problem.
pub fn score(report: &Report, planted: &[Planted]) -> Vec<(&'static str, RuleScore)> {
    let kind = |p: &Planted| match p {
        Planted::Silent { .. } => "silent",
        Planted::Collapse { .. } => "volume_collapse",
        Planted::StoppedService { .. } => "stopped_service",
        Planted::OverdueComplaints { .. } => "complaints_open",
        Planted::ReconciliationGap { .. } => "reconciliation_gap",
    };
    RULES
        .iter()
        .map(|&rule| {
            let mine: Vec<&Planted> = planted.iter().filter(|p| kind(p) == rule).collect();
            let flags: Vec<&Flag> = report.flags.iter().filter(|f| f.reason == rule).collect();
            let s = RuleScore {
                planted: mine.len(),
                found: mine
                    .iter()
                    .filter(|p| flags.iter().any(|f| finds(f, p)))
                    .count(),
                flags: flags.len(),
                true_flags: flags
                    .iter()
                    .filter(|f| mine.iter().any(|p| finds(f, p)))
                    .count(),
            };
            (rule, s)
        })
        .collect()
}
