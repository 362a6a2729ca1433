//! Approved yearly figures that stay put, and the restatements waiting against them.
//!
//! `approve` records, in the lake's append-only `audit/approvals` table, who approved a year's
//! review (national or scoped), when, the Delta version of every table it was computed from,
//! and a digest of its figures (sha256 of its review.json). From then on `review` computes that
//! year from those versions (Delta time travel) and checks the digest: the approved review is
//! the same bytes whatever arrived since. Late events and corrections still land in the lake;
//! `restatements` shows, per unit and figure, the approved and the current value and the events
//! that explain each difference. A new approval supersedes the old one; both stay in the table.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use owsu_lake::snapshot::Versions;
use owsu_lake::tables::{self, APPROVALS};
use owsu_lake::{LakeTable, Snapshot, Store};
use owsu_schemas::reference::Reference;
use polars::prelude::*;
use serde::Serialize;
use sha2::Digest;

use crate::data::{self, Ix, Want};
use crate::review::{self, Review};

/// One approval of a review.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Approval {
    /// The year reviewed.
    pub year: i32,
    /// Province or unit of a scoped review; `None`: national.
    pub scope: Option<String>,
    /// Who approved it.
    pub approved_by: String,
    /// When.
    pub approved_at: DateTime<Utc>,
    /// The table versions the figures were computed from.
    pub table_versions: Versions,
    /// `sha256:<hex>` of the review's review.json.
    pub digest: String,
    /// The digest of the approval this one replaced.
    pub supersedes: Option<String>,
}

/// `sha256:<hex>` of the review's review.json bytes.
pub fn digest(r: &Review) -> anyhow::Result<String> {
    Ok(format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(review::json(r)?))
    ))
}

/// Every approval of `year` and `scope`, oldest first (the last one holds).
pub async fn list(store: &Store, year: i32, scope: Option<&str>) -> anyhow::Result<Vec<Approval>> {
    let snap = Snapshot::open(store, &[&APPROVALS], None).await?;
    let df = snap.read(&APPROVALS, None, None).await?;
    if df.height() == 0 {
        return Ok(Vec::new());
    }
    let col_str = |c: &str| -> anyhow::Result<StringChunked> { Ok(df.column(c)?.str()?.clone()) };
    let years = df.column("year")?.i32()?.clone();
    let scopes = col_str("scope")?;
    let by = col_str("approved_by")?;
    let versions = col_str("table_versions")?;
    let digests = col_str("digest")?;
    let supersedes = col_str("supersedes")?;
    let at = df
        .column("approved_at")?
        .to_physical_repr()
        .cast(&DataType::Int64)?
        .i64()?
        .clone();
    let mut out = Vec::new();
    for i in 0..df.height() {
        if years.get(i) != Some(year) || scopes.get(i) != scope {
            continue;
        }
        let v: BTreeMap<String, i64> = serde_json::from_str(versions.get(i).unwrap_or("{}"))
            .map_err(|e| anyhow::anyhow!("audit/approvals: row {i}: table_versions: {e}"))?;
        out.push(Approval {
            year,
            scope: scope.map(str::to_owned),
            approved_by: by.get(i).unwrap_or_default().to_owned(),
            approved_at: DateTime::from_timestamp_micros(at.get(i).unwrap_or_default())
                .unwrap_or_default(),
            table_versions: Versions(v),
            digest: digests.get(i).unwrap_or_default().to_owned(),
            supersedes: supersedes.get(i).map(str::to_owned),
        });
    }
    out.sort_by_key(|a| a.approved_at);
    Ok(out)
}

/// Approves the review of `year` (and `scope`) as it stands now, as `by`: appends the approval
/// and returns it with the review it fixes.
pub async fn approve(
    store: &Store,
    reference: &Reference,
    year: i32,
    scope: Option<&str>,
    by: &str,
) -> anyhow::Result<(Approval, Review)> {
    anyhow::ensure!(!by.trim().is_empty(), "--by: say who approves");
    let r = review::compute(store, reference, year, scope).await?;
    let previous = list(store, year, scope).await?.pop();
    let a = Approval {
        year,
        scope: scope.map(str::to_owned),
        approved_by: by.to_owned(),
        approved_at: Utc::now(),
        table_versions: r.lake_versions.clone(),
        digest: digest(&r)?,
        supersedes: previous.map(|p| p.digest),
    };
    let df = DataFrame::new_infer_height(vec![
        Column::new("year".into(), [a.year]),
        Column::new("scope".into(), [a.scope.clone()]),
        Column::new("approved_by".into(), [a.approved_by.clone()]),
        Column::new("approved_at".into(), [a.approved_at.timestamp_micros()]),
        Column::new(
            "table_versions".into(),
            [serde_json::to_string(&a.table_versions.0)?],
        ),
        Column::new("digest".into(), [a.digest.clone()]),
        Column::new("supersedes".into(), [a.supersedes.clone()]),
    ])?;
    LakeTable::append(store, &APPROVALS, df).await?;
    Ok((a, r))
}

/// The review `review` shows: the approved one when the year is approved (computed again
/// from its versions, its digest checked), else the current one; with the approval.
pub async fn review_as_approved(
    store: &Store,
    reference: &Reference,
    year: i32,
    scope: Option<&str>,
) -> anyhow::Result<(Review, Option<Approval>)> {
    let Some(a) = list(store, year, scope).await?.pop() else {
        return Ok((review::compute(store, reference, year, scope).await?, None));
    };
    let r = review::compute_at(store, reference, year, scope, Some(&a.table_versions)).await?;
    let d = digest(&r)?;
    anyhow::ensure!(
        d == a.digest,
        "the review of {year} approved on {} by {} cannot be computed again from its tables ({}): \
         its digest is {d}, the approval's {}. Were files of those versions vacuumed? \
         (vacuum --retain-hours must reach back to the oldest approval in force)",
        a.approved_at.format("%Y-%m-%d %H:%M UTC"),
        a.approved_by,
        a.table_versions,
        a.digest
    );
    Ok((r, Some(a)))
}

/// One figure of one unit that changed since the approval.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Restatement {
    /// The unit.
    pub unit_code: String,
    /// Its name.
    pub unit_name: String,
    /// `services_received`, `services_delivered`, `revenue_riel`, `complaints_received` or
    /// `complaints_resolved`.
    pub figure: &'static str,
    /// Value in the approved review's tables.
    pub approved: i64,
    /// Value in the tables now.
    pub current: i64,
    /// current − approved.
    pub difference: i64,
}

/// An event that reached the lake after the approval and touches a restated unit's year.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LateEvent {
    /// The unit.
    pub unit_code: String,
    /// `service` or `complaint`.
    pub kind: &'static str,
    /// Its id.
    pub event_id: String,
    /// Its stage (RECEIVED, FEE_PAID, ...).
    pub stage: String,
    /// Its day (Cambodia time).
    pub event_date: NaiveDate,
    /// The event it corrects, for a correction.
    pub supersedes_event_id: Option<String>,
    /// Kafka partition it was read from.
    pub kafka_partition: i32,
    /// Kafka offset it was read from.
    pub kafka_offset: i64,
}

/// What changed in a year since its approval.
#[derive(Debug, Clone, Serialize)]
pub struct Restatements {
    /// The approval the figures are compared with.
    pub approval: Approval,
    /// The table versions of the current figures.
    pub current_versions: Versions,
    /// Per unit and figure, those that differ, by unit code then figure.
    pub restated: Vec<Restatement>,
    /// The events that explain them, by unit, day and offset.
    pub events: Vec<LateEvent>,
}

/// Per unit: the five restated figures.
type UnitFigures = BTreeMap<u16, [i64; 5]>;

const FIGURES: [&str; 5] = [
    "services_received",
    "services_delivered",
    "revenue_riel",
    "complaints_received",
    "complaints_resolved",
];

async fn unit_figures(
    store: &Store,
    ix: &mut Ix<'_>,
    year: i32,
    scope: Option<&str>,
    at: Option<&Versions>,
) -> anyhow::Result<(UnitFigures, Versions)> {
    let from = NaiveDate::from_ymd_opt(year, 1, 1).expect("year");
    let to = NaiveDate::from_ymd_opt(year, 12, 31).expect("year");
    let want = Want {
        services: true,
        complaints: true,
        ..Want::default()
    };
    let s = data::load(store, ix, want, from, to, scope, at).await?;
    let mut out = UnitFigures::new();
    let overflow = |f: &str, u: u16| anyhow::anyhow!("{f} of unit index {u} does not fit in i64");
    for r in &s.services {
        let f = out.entry(r.unit).or_default();
        for (i, v) in [(0, r.received), (1, r.delivered), (2, r.revenue_riel)] {
            f[i] = f[i]
                .checked_add(v)
                .ok_or_else(|| overflow(FIGURES[i], r.unit))?;
        }
    }
    for r in &s.complaints {
        let f = out.entry(r.unit).or_default();
        for (i, v) in [(3, r.received), (4, r.resolved)] {
            f[i] = f[i]
                .checked_add(v)
                .ok_or_else(|| overflow(FIGURES[i], r.unit))?;
        }
    }
    Ok((out, s.versions))
}

/// Compares the latest approval of `year` (and `scope`) with the lake now. Fails when the year
/// has no approval.
pub async fn restatements(
    store: &Store,
    reference: &Reference,
    year: i32,
    scope: Option<&str>,
) -> anyhow::Result<Restatements> {
    let approval = list(store, year, scope).await?.pop().ok_or_else(|| {
        anyhow::anyhow!(
            "the review of {year}{} has not been approved: `owsu-jobs approve --year {year} --by NAME` first",
            scope.map(|s| format!(" ({s})")).unwrap_or_default()
        )
    })?;
    let mut ix = Ix::new(reference);
    let (before, _) =
        unit_figures(store, &mut ix, year, scope, Some(&approval.table_versions)).await?;
    let (now, current_versions) = unit_figures(store, &mut ix, year, scope, None).await?;
    let mut restated = Vec::new();
    let units: BTreeSet<u16> = before.keys().chain(now.keys()).copied().collect();
    let mut changed_units = HashSet::new();
    for u in units {
        let (a, c) = (
            before.get(&u).copied().unwrap_or_default(),
            now.get(&u).copied().unwrap_or_default(),
        );
        for i in 0..FIGURES.len() {
            if a[i] != c[i] {
                let unit = ix.unit(u);
                changed_units.insert(unit.code.clone());
                restated.push(Restatement {
                    unit_code: unit.code.clone(),
                    unit_name: unit.name.clone(),
                    figure: FIGURES[i],
                    approved: a[i],
                    current: c[i],
                    difference: c[i] - a[i],
                });
            }
        }
    }
    restated.sort_by(|x, y| (&x.unit_code, x.figure).cmp(&(&y.unit_code, y.figure)));
    let events = late_events(store, &approval.table_versions, year, &changed_units).await?;
    Ok(Restatements {
        approval,
        current_versions,
        restated,
        events,
    })
}

/// Raw events of `units` that the tables hold now and did not at `approved`: of the year, or a
/// correction of any later day (a correction lands on the day of the event it corrects).
async fn late_events(
    store: &Store,
    approved: &Versions,
    year: i32,
    units: &HashSet<String>,
) -> anyhow::Result<Vec<LateEvent>> {
    let from = NaiveDate::from_ymd_opt(year, 1, 1).expect("year");
    let to = NaiveDate::from_ymd_opt(year, 12, 31).expect("year");
    let defs = [
        ("service", &tables::RAW_SERVICE_EVENTS),
        ("complaint", &tables::RAW_COMPLAINT_EVENTS),
    ];
    let raw_defs: Vec<&'static owsu_lake::tables::TableDef> =
        defs.iter().map(|(_, d)| *d).collect();
    let then = Snapshot::open(store, &raw_defs, Some(approved)).await?;
    let now = Snapshot::open(store, &raw_defs, None).await?;
    let cols = [
        "unit_code",
        "event_id",
        "stage",
        "event_date",
        "supersedes_event_id",
        "kafka_partition",
        "kafka_offset",
    ];
    let position_cols = ["unit_code", "kafka_partition", "kafka_offset"];
    let mut out = Vec::new();
    for (kind, def) in defs {
        if units.is_empty() {
            break;
        }
        let old = then
            .read_columns(def, Some(from), None, Some(&position_cols))
            .await?;
        let known: HashSet<(i32, i64)> = old
            .column("kafka_partition")?
            .i32()?
            .iter()
            .zip(old.column("kafka_offset")?.i64()?.iter())
            .filter_map(|(p, o)| Some((p?, o?)))
            .collect();
        let df = now.read_columns(def, Some(from), None, Some(&cols)).await?;
        let unit = df.column("unit_code")?.str()?;
        let id = df.column("event_id")?.str()?;
        let stage = df.column("stage")?.str()?;
        let day = df.column("event_date")?.date()?.physical().clone();
        let sup = df.column("supersedes_event_id")?.str()?;
        let part = df.column("kafka_partition")?.i32()?;
        let off = df.column("kafka_offset")?.i64()?;
        for i in 0..df.height() {
            let (Some(u), Some(p), Some(o), Some(d)) =
                (unit.get(i), part.get(i), off.get(i), day.get(i))
            else {
                continue;
            };
            let date = owsu_schemas::time::epoch_day_to_date(d);
            let correction = sup.get(i).is_some();
            if !units.contains(u) || known.contains(&(p, o)) || (date > to && !correction) {
                continue;
            }
            out.push(LateEvent {
                unit_code: u.to_owned(),
                kind,
                event_id: id.get(i).unwrap_or_default().to_owned(),
                stage: stage.get(i).unwrap_or_default().to_owned(),
                event_date: date,
                supersedes_event_id: sup.get(i).map(str::to_owned),
                kafka_partition: p,
                kafka_offset: o,
            });
        }
    }
    out.sort_by(|a, b| {
        (
            &a.unit_code,
            a.event_date,
            a.kafka_partition,
            a.kafka_offset,
        )
            .cmp(&(
                &b.unit_code,
                b.event_date,
                b.kafka_partition,
                b.kafka_offset,
            ))
    });
    Ok(out)
}

/// The status line a review shows: the approval and what waits against it, or "not approved".
pub fn status_line(approval: Option<&Approval>, pending: usize, year: i32) -> String {
    match approval {
        Some(a) => format!(
            "Approved on {} by {}; {pending} restatement{} pending (owsu-jobs restatements --year {year}).",
            a.approved_at.format("%Y-%m-%d %H:%M UTC"),
            a.approved_by,
            if pending == 1 { "" } else { "s" }
        ),
        None => format!(
            "Not approved: current figures, which change as late events and corrections arrive (owsu-jobs approve --year {year} --by NAME)."
        ),
    }
}

/// Writes restatements.json, restatements.csv and late_events.csv into `dir`; returns the CSV
/// of restatements.
pub fn write(r: &Restatements, dir: &Path) -> anyhow::Result<PathBuf> {
    use crate::output::{write, write_csv};
    std::fs::create_dir_all(dir)?;
    write(
        &dir.join("restatements.json"),
        serde_json::to_vec_pretty(r)?,
    )?;
    let csv = dir.join("restatements.csv");
    write_csv(&csv, &r.restated)?;
    write_csv(&dir.join("late_events.csv"), &r.events)?;
    Ok(csv)
}

/// The restatements as a terminal table.
pub fn table(r: &Restatements) -> String {
    let mut t = owsu_runtime::table::new(
        &["unit", "figure", "approved", "current", "difference"],
        &[2, 3, 4],
    );
    for x in &r.restated {
        t.add_row(vec![
            x.unit_code.clone(),
            x.figure.to_owned(),
            x.approved.to_string(),
            x.current.to_string(),
            format!("{:+}", x.difference),
        ]);
    }
    format!(
        "{} restated figures since the approval of {} by {} ({}); {} late events explain them\n{}",
        r.restated.len(),
        r.approval.approved_at.format("%Y-%m-%d %H:%M UTC"),
        r.approval.approved_by,
        r.approval.digest,
        r.events.len(),
        owsu_runtime::table::render(&t)
    )
}

/// The approvals of a year as a terminal table, oldest first.
pub fn approvals_table(list: &[Approval]) -> String {
    let mut t = owsu_runtime::table::new(
        &["approved at", "by", "digest", "supersedes", "tables"],
        &[],
    );
    for a in list {
        t.add_row(vec![
            a.approved_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            a.approved_by.clone(),
            a.digest.clone(),
            a.supersedes.clone().unwrap_or_else(|| "-".into()),
            a.table_versions.to_string(),
        ]);
    }
    owsu_runtime::table::render(&t)
}
