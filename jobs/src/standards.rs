//! Service standards: where the catalogue states a legal time limit for a service
//! (`legal_days`, working days from receipt to delivery), the share of its requests delivered
//! within it, per unit and sector.
//!
//! A request counts when it was delivered in the period, its service has a legal limit, and its
//! day of receipt is known (`processing_times.received_date`; rows an older aggregator wrote have
//! none and are left out, and said so by the counts). Working days between receipt and delivery
//! are those after the day of receipt up to and including the day of delivery (Monday to Friday
//! less the public holidays of `holidays.csv`): a request received and delivered the same day
//! took 0.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use owsu_schemas::reference::Reference;
use serde::Serialize;

use crate::data::{Ix, Summaries};

/// Units shown in a report's list of the lowest shares.
pub const LOWEST_SHOWN: usize = 15;
/// Deliveries a unit and sector needs before it is ranked (a share of 2 says little).
pub const MIN_RANKED: usize = 10;

/// One unit (or the whole scope) and sector.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StandardRow {
    /// The unit's code; empty for a row of the whole scope.
    pub unit_code: String,
    /// The unit's name; empty for a row of the whole scope.
    pub unit_name: String,
    /// The sector's code.
    pub sector_code: String,
    /// The sector's name.
    pub sector_name: String,
    /// Requests delivered whose service has a legal limit and whose receipt day is known.
    pub delivered: usize,
    /// Of those, delivered within the limit.
    pub within: usize,
    /// within ÷ delivered, in percent (0 when none was delivered).
    pub within_pct: f64,
}

impl StandardRow {
    fn finish(mut self) -> Self {
        self.within_pct = if self.delivered == 0 {
            0.0
        } else {
            self.within as f64 * 100.0 / self.delivered as f64
        };
        self
    }
}

/// The service standards of a period in scope.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Standards {
    /// Services in the catalogue with a legal limit.
    pub services_with_limit: usize,
    /// Per sector, over the scope, by sector code.
    pub by_sector: Vec<StandardRow>,
    /// The lowest shares of units and sectors with at least [`MIN_RANKED`] deliveries.
    pub lowest: Vec<StandardRow>,
    /// Every unit and sector (service_standards.csv; not part of the review's JSON).
    #[serde(skip)]
    pub by_unit: Vec<StandardRow>,
}

/// Working days counted from a first day: `count(a, b)` is the working days after `a` up to
/// and including `b`.
struct WorkingDays {
    first: NaiveDate,
    /// Working days in `[first, first + i]`.
    upto: Vec<u32>,
}

impl WorkingDays {
    fn new(reference: &Reference, first: NaiveDate, last: NaiveDate) -> Self {
        let mut upto = Vec::new();
        let mut n = 0;
        for d in first.iter_days().take_while(|d| *d <= last) {
            if !reference.holidays.working_days(d, d).is_empty() {
                n += 1;
            }
            upto.push(n);
        }
        WorkingDays { first, upto }
    }

    fn count(&self, a: NaiveDate, b: NaiveDate) -> u32 {
        let at = |d: NaiveDate| {
            usize::try_from((d - self.first).num_days())
                .ok()
                .and_then(|i| self.upto.get(i))
                .copied()
                .unwrap_or(0)
        };
        at(b).saturating_sub(at(a))
    }
}

/// The standards of the deliveries in `s` (its `processing` rows: the period and scope it was
/// loaded for).
pub(crate) fn compute(reference: &Reference, s: &Summaries, ix: &Ix<'_>) -> Standards {
    let limit = |service: u16| {
        reference
            .catalogue
            .service(ix.service_code(service))
            .and_then(|(sector, svc)| Some((sector, svc.legal_days?)))
    };
    let dated: Vec<(&crate::data::ProcRow, NaiveDate)> = s
        .processing
        .iter()
        .filter_map(|p| Some((p, p.received?)))
        .collect();
    let (Some(first), Some(last)) = (
        dated.iter().map(|(_, r)| *r).min(),
        dated.iter().map(|(p, _)| p.date).max(),
    ) else {
        return Standards {
            services_with_limit: with_limit(reference),
            ..Standards::default()
        };
    };
    let days = WorkingDays::new(reference, first, last);
    let mut cells: BTreeMap<(u16, &str), (usize, usize, &str)> = BTreeMap::new();
    for (p, received) in dated {
        let Some((sector, legal)) = limit(p.service) else {
            continue;
        };
        let c = cells
            .entry((p.unit, sector.code.as_str()))
            .or_insert((0, 0, sector.name.as_str()));
        c.0 += 1;
        if days.count(received, p.date) <= legal {
            c.1 += 1;
        }
    }
    let mut sectors: BTreeMap<&str, StandardRow> = BTreeMap::new();
    let mut by_unit = Vec::new();
    for ((unit, sector), (delivered, within, name)) in cells {
        let t = sectors.entry(sector).or_insert_with(|| StandardRow {
            sector_code: sector.to_owned(),
            sector_name: name.to_owned(),
            ..StandardRow::default()
        });
        t.delivered += delivered;
        t.within += within;
        let u = ix.unit(unit);
        by_unit.push(
            StandardRow {
                unit_code: u.code.clone(),
                unit_name: u.name.clone(),
                sector_code: sector.to_owned(),
                sector_name: name.to_owned(),
                delivered,
                within,
                within_pct: 0.0,
            }
            .finish(),
        );
    }
    let mut lowest: Vec<StandardRow> = by_unit
        .iter()
        .filter(|r| r.delivered >= MIN_RANKED)
        .cloned()
        .collect();
    lowest.sort_by(|a, b| {
        a.within_pct
            .total_cmp(&b.within_pct)
            .then(b.delivered.cmp(&a.delivered))
            .then(a.unit_code.cmp(&b.unit_code))
            .then(a.sector_code.cmp(&b.sector_code))
    });
    lowest.truncate(LOWEST_SHOWN);
    Standards {
        services_with_limit: with_limit(reference),
        by_sector: sectors.into_values().map(StandardRow::finish).collect(),
        lowest,
        by_unit,
    }
}

/// Services of the catalogue with a legal limit.
fn with_limit(reference: &Reference) -> usize {
    reference
        .catalogue
        .services()
        .filter(|(_, s)| s.legal_days.is_some())
        .count()
}

/// Rows of `by_unit` summed per sector over the units `keep` accepts (the dashboard's scopes).
pub(crate) fn by_sector_of(
    by_unit: &[StandardRow],
    keep: impl Fn(&str) -> bool,
) -> Vec<StandardRow> {
    let mut sectors: BTreeMap<&str, StandardRow> = BTreeMap::new();
    for r in by_unit.iter().filter(|r| keep(&r.unit_code)) {
        let t = sectors
            .entry(&r.sector_code)
            .or_insert_with(|| StandardRow {
                sector_code: r.sector_code.clone(),
                sector_name: r.sector_name.clone(),
                ..StandardRow::default()
            });
        t.delivered += r.delivered;
        t.within += r.within;
    }
    sectors.into_values().map(StandardRow::finish).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_days_after_receipt_up_to_delivery() {
        let reference = Reference::load(None).unwrap();
        let d = |m, day| NaiveDate::from_ymd_opt(2021, m, day).unwrap();
        let w = WorkingDays::new(&reference, d(3, 1), d(3, 31));
        assert_eq!(w.count(d(3, 2), d(3, 2)), 0, "the same day");
        assert_eq!(w.count(d(3, 2), d(3, 3)), 1);
        // Friday 5 March to Tuesday 9 March: Monday 8 March is International Women's Day.
        assert_eq!(w.count(d(3, 5), d(3, 9)), 1);
        assert_eq!(w.count(d(3, 1), d(3, 31)), 21);
    }
}
