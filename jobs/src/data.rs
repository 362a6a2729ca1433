//! Reading the aggregator's summaries back from the lake: every table at one version (a
//! snapshot, whose versions each report states), only the files whose date statistics overlap
//! the range asked for, filtered to the range and, for decentralised views, one province's units.
//!
//! Units, sectors and services become small indexes ([`Ix`]). A sector or service the
//! catalogue does not know is numbered and kept under its own code; a row of a unit the
//! registry does not know is left out, and the unit is named in [`Ix::unknown_units`] and in a
//! warning. A null count reads as 0.

use std::collections::HashMap;

use chrono::NaiveDate;
use owsu_lake::snapshot::Versions;
use owsu_lake::tables::{self, TableDef};
use owsu_lake::{Snapshot, Store};
use owsu_schemas::reference::{Level, Reference};
use owsu_schemas::time::epoch_day_to_date;
use polars::prelude::*;

/// Codes of the reference data as small indexes.
pub(crate) struct Ix<'r> {
    /// The reference data the indexes point into.
    pub reference: &'r Reference,
    unit: HashMap<&'r str, u16>,
    service: HashMap<String, u16>,
    /// Sector index of each service.
    pub service_sector: Vec<u16>,
    service_codes: Vec<String>,
    /// Sectors met in the summaries that the catalogue does not know (numbered after the
    /// catalogue's): their figures are reported under their own code, never dropped.
    extra_sectors: Vec<owsu_schemas::reference::Sector>,
    /// Unit codes met in the summaries that the registry does not know (a unit renamed or
    /// closed since): their rows cannot be placed in a province or level, so the jobs say so.
    pub unknown_units: std::collections::BTreeSet<String>,
}

impl<'r> Ix<'r> {
    /// Indexes the registry's units and the catalogue's services, in file order.
    pub(crate) fn new(reference: &'r Reference) -> Self {
        let unit = reference
            .registry
            .units
            .iter()
            .enumerate()
            .map(|(i, u)| (u.code.as_str(), i as u16))
            .collect();
        let mut service = HashMap::new();
        let mut service_sector = Vec::new();
        let mut service_codes = Vec::new();
        for (si, s) in reference.catalogue.sectors.iter().enumerate() {
            for v in &s.services {
                service.insert(v.code.clone(), service_sector.len() as u16);
                service_sector.push(si as u16);
                service_codes.push(v.code.clone());
            }
        }
        Ix {
            reference,
            unit,
            service,
            service_sector,
            service_codes,
            extra_sectors: Vec::new(),
            unknown_units: Default::default(),
        }
    }

    /// Index of a sector code, numbering one the catalogue does not know.
    pub(crate) fn sector_index(&mut self, code: &str) -> u16 {
        let sectors = &self.reference.catalogue.sectors;
        if let Some(i) = sectors.iter().position(|s| s.code == code) {
            return i as u16;
        }
        let extra = match self.extra_sectors.iter().position(|s| s.code == code) {
            Some(i) => i,
            None => {
                self.extra_sectors.push(owsu_schemas::reference::Sector {
                    code: code.to_owned(),
                    name: format!("{code} (not in the catalogue)"),
                    name_km: None,
                    services: Vec::new(),
                });
                self.extra_sectors.len() - 1
            }
        };
        (sectors.len() + extra) as u16
    }

    /// Index of a service code, numbering one the catalogue does not know. A known service
    /// keeps its catalogue sector; `sector` is used only for an unknown one.
    pub(crate) fn service_index(&mut self, code: &str, sector: &str) -> u16 {
        if let Some(i) = self.service.get(code) {
            return *i;
        }
        let si = self.sector_index(sector);
        let i = self.service_codes.len() as u16;
        self.service.insert(code.to_owned(), i);
        self.service_codes.push(code.to_owned());
        self.service_sector.push(si);
        i
    }
    /// The registry's unit at index `i`. Panics on an index this `Ix` did not give.
    pub(crate) fn unit(&self, i: u16) -> &'r owsu_schemas::Unit {
        &self.reference.registry.units[i as usize]
    }
    /// The sector at index `i`: the catalogue's, or one numbered by [`Ix::sector_index`]
    /// (named "CODE (not in the catalogue)"). Panics on an index this `Ix` did not give.
    pub(crate) fn sector(&self, i: u16) -> &owsu_schemas::reference::Sector {
        let sectors = &self.reference.catalogue.sectors;
        sectors
            .get(usize::from(i))
            .unwrap_or_else(|| &self.extra_sectors[usize::from(i) - sectors.len()])
    }
    /// The code of service index `i`, or `"?"` for an index this `Ix` did not give.
    pub(crate) fn service_code(&self, i: u16) -> &str {
        self.service_codes
            .get(usize::from(i))
            .map_or("?", String::as_str)
    }
    /// The level (provincial or district) of unit index `unit`.
    pub(crate) fn level(&self, unit: u16) -> Level {
        self.unit(unit).level
    }
    /// The province code (`KH-PP`) of unit index `unit`.
    pub(crate) fn province(&self, unit: u16) -> &'r str {
        &self.unit(unit).province_code
    }
}

/// A row of `services_daily`: one unit, day and service.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SvcRow {
    /// Day in Cambodia time.
    pub date: NaiveDate,
    /// Unit index (see [`Ix::unit`]).
    pub unit: u16,
    /// Service index (see [`Ix::service_code`]).
    pub service: u16,
    /// Requests whose first RECEIVED falls on this day.
    pub received: i64,
    /// Requests whose first DELIVERED falls on this day (services provided).
    pub delivered: i64,
    /// Requests rejected on this day.
    pub rejected: i64,
    /// Requests cancelled on this day.
    pub cancelled: i64,
    /// FEE_PAID events with a positive fee.
    pub fee_payments: i64,
    /// FEE_PAID events with a negative fee.
    pub refunds: i64,
    /// Fees paid on this day, refunds negative, in riel.
    pub revenue_riel: i64,
}

/// A row of `complaints_daily`: one unit, day of receipt and sector (the jobs use no
/// complaint figure by sector, so the sector is not read).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CmpRow {
    /// Day the complaints were received, in Cambodia time.
    pub date: NaiveDate,
    /// Unit index (see [`Ix::unit`]).
    pub unit: u16,
    /// Complaints received on this day.
    pub received: i64,
    /// Of those, latest jurisdiction decision within (or resolved).
    pub within: i64,
    /// Of those, latest decision outside jurisdiction.
    pub outside: i64,
    /// Of those, no jurisdiction decision yet.
    pub undecided: i64,
    /// Of those, latest status RESOLVED.
    pub resolved: i64,
    /// Of those, latest status MORE_INFO_REQUIRED.
    pub more_info: i64,
    /// Of those, no status event yet.
    pub open: i64,
    /// Of those, latest status WITHDRAWN.
    pub withdrawn: i64,
    /// Of those, open and within jurisdiction: answers owed.
    pub open_within: i64,
}

/// A row of `unit_days`: whether one unit closed one day, and its own counts against what
/// arrived.
#[derive(Debug, Clone, Default)]
pub(crate) struct DayRow {
    /// The day, in Cambodia time.
    pub date: NaiveDate,
    /// Unit index (see [`Ix::unit`]).
    pub unit: u16,
    /// A UnitDayClosed arrived for this day (null reads as `false`).
    pub closed: bool,
    /// Distinct service events recorded on this day that arrived.
    pub arrived_services: i64,
    /// Distinct complaint events recorded on this day that arrived.
    pub arrived_complaints: i64,
    /// The unit's own service count − arrived; positive: events missing. `None` if not closed.
    pub services_gap: Option<i64>,
    /// The unit's own complaint count − arrived. `None` if not closed.
    pub complaints_gap: Option<i64>,
    /// `ok`, `missing_events`, `extra_events` or `not_closed` (empty when null).
    pub status: String,
}

/// A row of `raw/unit_days`: one close of a unit's day as it arrived (a unit may close a day
/// again with new counts).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CloseRow {
    /// The day closed.
    pub date: NaiveDate,
    /// Unit index (see [`Ix::unit`]).
    pub unit: u16,
    /// When this close was recorded, ms since the epoch.
    pub closed_at: owsu_schemas::time::Millis,
}

/// A row of `processing_times`: one delivered request.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProcRow {
    /// Day of delivery, in Cambodia time.
    pub date: NaiveDate,
    /// Unit index (see [`Ix::unit`]).
    pub unit: u16,
    /// Service index (see [`Ix::service_code`]).
    pub service: u16,
    /// First DELIVERED − first RECEIVED, in calendar days with fractions (null reads as 0).
    pub days: f64,
    /// Day of the first RECEIVED, Cambodia time (`None` in rows an older aggregator wrote).
    pub received: Option<NaiveDate>,
}

/// Which tables to load.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Want {
    /// Load `services_daily`.
    pub services: bool,
    /// Load `complaints_daily`.
    pub complaints: bool,
    /// Load `unit_days`.
    pub unit_days: bool,
    /// Load `processing_times`.
    pub processing: bool,
    /// Load the closes of `raw/unit_days` (when each unit-day was closed).
    pub closes: bool,
}

/// The rows [`load`] kept: in the date range, in scope, of units the registry knows. A table
/// not wanted, or not in the store, leaves its list empty.
#[derive(Debug, Default)]
pub(crate) struct Summaries {
    /// The table versions these rows were read from.
    pub versions: Versions,
    /// Rows of `services_daily`.
    pub services: Vec<SvcRow>,
    /// Rows of `complaints_daily`.
    pub complaints: Vec<CmpRow>,
    /// Rows of `unit_days`.
    pub unit_days: Vec<DayRow>,
    /// Rows of `processing_times`.
    pub processing: Vec<ProcRow>,
    /// Rows of `raw/unit_days`.
    pub closes: Vec<CloseRow>,
}

impl Summaries {
    /// The latest day with any service or complaint figure (what a report says it includes).
    pub(crate) fn latest_day(&self) -> Option<NaiveDate> {
        self.services
            .iter()
            .map(|r| r.date)
            .chain(self.complaints.iter().map(|r| r.date))
            .max()
    }
}

/// Loads the wanted tables for `[from, to]`, keeping only units in `scope` (a province code
/// or unit code) when given; at the tables' versions `at` (another read of the same report) or
/// their latest.
///
/// Fails when the store holds none of the wanted tables, or a table lacks a column the jobs
/// read or has it with another type.
pub(crate) async fn load(
    store: &Store,
    ix: &mut Ix<'_>,
    want: Want,
    from: NaiveDate,
    to: NaiveDate,
    scope: Option<&str>,
    at: Option<&Versions>,
) -> anyhow::Result<Summaries> {
    let in_scope =
        |unit: &owsu_schemas::Unit| scope.is_none_or(|s| unit.province_code == s || unit.code == s);
    let wanted: Vec<&'static TableDef> = [
        (&tables::SERVICES_DAILY, want.services),
        (&tables::COMPLAINTS_DAILY, want.complaints),
        (&tables::UNIT_DAYS, want.unit_days),
        (&tables::PROCESSING_TIMES, want.processing),
        (&tables::RAW_UNIT_DAYS, want.closes),
    ]
    .into_iter()
    .filter(|(_, w)| *w)
    .map(|(t, _)| t)
    .collect();
    let snapshot = Snapshot::open(store, &wanted, at).await?;
    anyhow::ensure!(
        !snapshot.versions().0.is_empty(),
        "store {} holds none of the summary tables ({}): run the aggregator first, or check \
         --store",
        store.url(),
        wanted.iter().map(|d| d.name).collect::<Vec<_>>().join(", "),
    );
    let mut out = Summaries {
        versions: snapshot.versions(),
        ..Summaries::default()
    };
    for def in wanted {
        let df = snapshot.read(def, Some(from), Some(to)).await?;
        anyhow::Context::with_context(
            read_frame(def.name, &df, ix, from, to, &in_scope, &mut out),
            || format!("reading table {} ({})", def.name, snapshot.versions()),
        )?;
    }
    if !ix.unknown_units.is_empty() {
        tracing::warn!(
            units = ?ix.unknown_units,
            "the summaries hold units the registry does not know (renamed or closed since?): \
             their figures cannot be placed in a province or level and are left out of this \
             report; update the reference data"
        );
    }
    Ok(out)
}

fn read_frame(
    table: &str,
    df: &DataFrame,
    ix: &mut Ix<'_>,
    from: NaiveDate,
    to: NaiveDate,
    in_scope: &dyn Fn(&owsu_schemas::Unit) -> bool,
    out: &mut Summaries,
) -> anyhow::Result<()> {
    let dates: Vec<NaiveDate> = df
        .column("date")?
        .date()?
        .physical()
        .iter()
        .map(|d| epoch_day_to_date(d.unwrap_or(0)))
        .collect();
    let units: Vec<Option<u16>> = df
        .column("unit_code")?
        .str()?
        .iter()
        .map(|u| {
            let u = u.unwrap_or_default();
            let i = ix.unit.get(u).copied();
            if i.is_none() {
                ix.unknown_units.insert(u.to_owned());
            }
            i
        })
        .collect();
    let ints = |c: &str| -> anyhow::Result<Vec<i64>> {
        Ok(df
            .column(c)?
            .i64()?
            .iter()
            .map(|v| v.unwrap_or(0))
            .collect())
    };
    let services = |ix: &mut Ix<'_>| -> anyhow::Result<Vec<u16>> {
        let sectors = df.column("sector_code")?.str()?;
        Ok(df
            .column("service_code")?
            .str()?
            .iter()
            .zip(sectors.iter())
            .map(|(s, sector)| ix.service_index(s.unwrap_or("?"), sector.unwrap_or("?")))
            .collect())
    };
    let keep: Vec<Option<(usize, u16)>> = (0..df.height())
        .map(|i| {
            units[i]
                .filter(|u| dates[i] >= from && dates[i] <= to && in_scope(ix.unit(*u)))
                .map(|u| (i, u))
        })
        .collect();
    match table {
        "services_daily" => {
            let sv = services(ix)?;
            let c: Vec<Vec<i64>> = [
                "requests_received",
                "services_delivered",
                "requests_rejected",
                "requests_cancelled",
                "fee_payments",
                "refunds",
                "revenue_riel",
            ]
            .iter()
            .map(|n| ints(n))
            .collect::<anyhow::Result<_>>()?;
            out.services
                .extend(keep.into_iter().flatten().map(|(i, unit)| SvcRow {
                    date: dates[i],
                    unit,
                    service: sv[i],
                    received: c[0][i],
                    delivered: c[1][i],
                    rejected: c[2][i],
                    cancelled: c[3][i],
                    fee_payments: c[4][i],
                    refunds: c[5][i],
                    revenue_riel: c[6][i],
                }));
        }
        "complaints_daily" => {
            let c: Vec<Vec<i64>> = [
                "complaints_received",
                "within_jurisdiction",
                "outside_jurisdiction",
                "jurisdiction_undecided",
                "resolved",
                "more_info_required",
                "open",
                "withdrawn",
                "open_within_jurisdiction",
            ]
            .iter()
            .map(|n| ints(n))
            .collect::<anyhow::Result<_>>()?;
            out.complaints
                .extend(keep.into_iter().flatten().map(|(i, unit)| CmpRow {
                    date: dates[i],
                    unit,
                    received: c[0][i],
                    within: c[1][i],
                    outside: c[2][i],
                    undecided: c[3][i],
                    resolved: c[4][i],
                    more_info: c[5][i],
                    open: c[6][i],
                    withdrawn: c[7][i],
                    open_within: c[8][i],
                }));
        }
        "unit_days" => {
            let closed: Vec<bool> = df
                .column("closed")?
                .bool()?
                .iter()
                .map(|v| v.unwrap_or(false))
                .collect();
            let (s, c) = (ints("arrived_services")?, ints("arrived_complaints")?);
            let sg: Vec<Option<i64>> = df.column("services_gap")?.i64()?.iter().collect();
            let cg: Vec<Option<i64>> = df.column("complaints_gap")?.i64()?.iter().collect();
            let status: Vec<String> = df
                .column("status")?
                .str()?
                .iter()
                .map(|v| v.unwrap_or("").to_owned())
                .collect();
            out.unit_days
                .extend(keep.into_iter().flatten().map(|(i, unit)| DayRow {
                    date: dates[i],
                    unit,
                    closed: closed[i],
                    arrived_services: s[i],
                    arrived_complaints: c[i],
                    services_gap: sg[i],
                    complaints_gap: cg[i],
                    status: status[i].clone(),
                }));
        }
        "raw_unit_days" => {
            let at = df.column("closed_at")?.datetime()?.physical().clone();
            out.closes
                .extend(keep.into_iter().flatten().filter_map(|(i, unit)| {
                    Some(CloseRow {
                        date: dates[i],
                        unit,
                        // The lake keeps timestamps in microseconds.
                        closed_at: at.get(i)?.div_euclid(1000),
                    })
                }));
        }
        _ => {
            let sv = services(ix)?;
            let days: Vec<f64> = df
                .column("processing_days")?
                .f64()?
                .iter()
                .map(|v| v.unwrap_or(0.0))
                .collect();
            let received: Vec<Option<NaiveDate>> = df
                .column("received_date")?
                .date()?
                .physical()
                .iter()
                .map(|d| d.map(epoch_day_to_date))
                .collect();
            out.processing
                .extend(keep.into_iter().flatten().map(|(i, unit)| ProcRow {
                    date: dates[i],
                    unit,
                    service: sv[i],
                    days: days[i],
                    received: received[i],
                }));
        }
    }
    Ok(())
}

/// Median (mean of the two middle values for an even count) and 90th percentile (nearest rank).
/// Sorts `values` in place; `(None, None)` when it is empty.
pub(crate) fn median_p90(values: &mut [f64]) -> (Option<f64>, Option<f64>) {
    if values.is_empty() {
        return (None, None);
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    let rank = ((0.9 * n as f64).ceil() as usize).clamp(1, n);
    (Some(median), Some(values[rank - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        assert_eq!(median_p90(&mut [3.0, 1.0, 2.0]), (Some(2.0), Some(3.0)));
        assert_eq!(
            median_p90(&mut [4.0, 1.0, 2.0, 3.0]),
            (Some(2.5), Some(4.0))
        );
        let mut v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(median_p90(&mut v), (Some(5.5), Some(9.0)));
        assert_eq!(median_p90(&mut []), (None, None));
    }
}
