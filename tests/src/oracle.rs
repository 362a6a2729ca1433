//! The oracle: expected figures computed straight from an import file (JSON lines), with code
//! that shares nothing with the aggregator, so that the two can disagree. It follows DESIGN.md's
//! "Meaning of the figures" literally.
//!
//! Figures are compared per cell ([`ServiceKey`], [`ComplaintKey`]) by [`assert_matches`]. Every
//! function panics on unreadable input: the oracle is for tests only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use chrono::{DateTime, FixedOffset};
use polars::prelude::*;
use serde_json::Value;

/// A `services_daily` cell: (date `YYYY-MM-DD` in Cambodia time, unit, sector, service).
pub type ServiceKey = (String, String, String, String);
/// A `complaints_daily` cell: (date of receipt in Cambodia time, unit, sector or "").
pub type ComplaintKey = (String, String, String);

/// The figures of one service cell, as `services_daily` has them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServiceFigures {
    /// Requests whose first RECEIVED falls in the cell (`requests_received`).
    pub received: i64,
    /// Requests whose first DELIVERED falls in the cell (`services_delivered`).
    pub delivered: i64,
    /// Sum of FEE_PAID fees in the cell, refunds negative, in riel (`revenue_riel`).
    pub revenue_riel: i64,
}

/// The figures of one complaint cell, as `complaints_daily` has them: complaints received that
/// day, by latest jurisdiction decision and by latest status.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ComplaintFigures {
    /// Complaints with a RECEIVED event (`complaints_received`).
    pub received: i64,
    /// Latest decision WITHIN_JURISDICTION, or status RESOLVED (`within_jurisdiction`).
    pub within: i64,
    /// Latest decision OUTSIDE_JURISDICTION, not resolved (`outside_jurisdiction`).
    pub outside: i64,
    /// No decision yet, not resolved (`jurisdiction_undecided`).
    pub undecided: i64,
    /// Latest status RESOLVED (`resolved`).
    pub resolved: i64,
    /// Latest status MORE_INFO_REQUIRED (`more_info_required`).
    pub more_info: i64,
    /// No status event yet (`open`).
    pub open: i64,
    /// Latest status WITHDRAWN (`withdrawn`).
    pub withdrawn: i64,
}

/// Figures per cell: the oracle's ([`expected_from_lines`]) or the lake's ([`actual_from_url`]).
#[derive(Debug, Default)]
pub struct Expected {
    /// Service cells; cells whose figures are all zero are left out.
    pub services: BTreeMap<ServiceKey, ServiceFigures>,
    /// Complaint cells.
    pub complaints: BTreeMap<ComplaintKey, ComplaintFigures>,
    /// Distinct events by kind (service, complaint, unit_day). Only the oracle fills it:
    /// zero when read from the lake, and not compared by [`assert_matches`].
    pub distinct: [u64; 3],
}

fn cambodia_date(ts: &str) -> String {
    let t: DateTime<FixedOffset> = DateTime::parse_from_rfc3339(ts).expect("RFC 3339");
    t.with_timezone(&FixedOffset::east_opt(7 * 3600).unwrap())
        .format("%Y-%m-%d")
        .to_string()
}

fn s(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_owned()
}

/// Computes the expected figures of an import file (JSON lines; blank lines skipped).
pub fn expected_from_import(path: &Path) -> Expected {
    let text = std::fs::read_to_string(path).expect("read import file");
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    expected_from_lines(lines)
}

/// The expected figures of import-format records, in the order they were sent. The first
/// record under an event id holds; a record without one gets an id of its own per occurrence.
/// Unit-day records count once per (unit, date).
pub fn expected_from_lines(lines: Vec<Value>) -> Expected {
    let mut by_id: HashMap<String, Value> = HashMap::new();
    let mut unit_days = HashSet::new();
    // A line without an event id is an event of its own, however many identical lines the
    // export holds (the producer derives an id from its content and occurrence).
    let mut occurrences: HashMap<String, u32> = HashMap::new();
    for mut v in lines {
        if v["kind"] != "unit_day" && v.get("event_id").is_none() {
            let content = v.to_string();
            let n = occurrences.entry(content.clone()).or_default();
            v["event_id"] = format!("derived:{content}#{n}").into();
            *n += 1;
        }
        match v["kind"].as_str() {
            Some("unit_day") => {
                unit_days.insert((s(&v, "unit_code"), s(&v, "date")));
            }
            _ => {
                // The first line under an id holds; a later one with other content is a
                // conflicting duplicate (and an identical one a replay).
                by_id.entry(s(&v, "event_id")).or_insert(v);
            }
        }
    }
    // Corrections, judged from the whole file at once (the aggregator decides event by event):
    // a correction counts only if the chain of events it names reaches an original of its own
    // unit and kind; of all counted corrections of one original, the one recorded last wins
    // (ties: the larger event id; canonical UUID text sorts as the number does), and the
    // original and every other correction are replaced. A correction whose chain is broken by
    // a missing event waits; one that meets another unit's or kind's event is refused.
    let target_of = |v: &Value| {
        v.get("supersedes_event_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    // The original a correction's chain starts from, if the chain is whole and honest.
    let root_of = |id: &str| -> Option<String> {
        let me = &by_id[id];
        let mut cur = id.to_owned();
        for _ in 0..=by_id.len() {
            let v = &by_id[&cur];
            let Some(t) = target_of(v) else {
                return Some(cur);
            };
            let tv = by_id.get(&t)?;
            if tv["kind"] != me["kind"] || s(tv, "unit_code") != s(me, "unit_code") {
                return None;
            }
            cur = t;
        }
        None // a cycle of ids: only a forger can make one
    };
    let mut winners: HashMap<String, (i64, String)> = HashMap::new();
    let mut superseded: HashSet<String> = HashSet::new();
    for (id, v) in &by_id {
        if target_of(v).is_none() {
            continue;
        }
        let Some(root) = root_of(id) else {
            superseded.insert(id.clone()); // waiting or refused: counted nowhere
            continue;
        };
        superseded.insert(root.clone());
        // recorded_at defaults to occurred_at on import.
        let at = v
            .get("recorded_at")
            .and_then(Value::as_str)
            .unwrap_or_else(|| v["occurred_at"].as_str().expect("occurred_at"));
        let recorded = owsu_schemas::time::parse_rfc3339(at).expect("time");
        let me = (recorded, id.clone());
        match winners.get(&root) {
            Some(w) if *w >= me => {
                superseded.insert(id.clone());
            }
            Some(w) => {
                superseded.insert(w.1.clone());
                winners.insert(root, me);
            }
            None => {
                winners.insert(root, me);
            }
        }
    }
    let mut requests: HashMap<(String, String), Vec<&Value>> = HashMap::new();
    let mut complaints: HashMap<(String, String), Vec<&Value>> = HashMap::new();
    let mut exp = Expected::default();
    for (id, v) in &by_id {
        match v["kind"].as_str() {
            Some("service") => {
                exp.distinct[0] += 1;
                if !superseded.contains(id) {
                    requests
                        .entry((s(v, "unit_code"), s(v, "request_id")))
                        .or_default()
                        .push(v);
                }
            }
            Some("complaint") => {
                exp.distinct[1] += 1;
                if !superseded.contains(id) {
                    complaints
                        .entry((s(v, "unit_code"), s(v, "complaint_id")))
                        .or_default()
                        .push(v);
                }
            }
            _ => {}
        }
    }
    exp.distinct[2] = unit_days.len() as u64;
    let order = |v: &&Value| {
        (
            DateTime::parse_from_rfc3339(&s(v, "occurred_at")).unwrap(),
            // recorded_at defaults to occurred_at on import.
            DateTime::parse_from_rfc3339(
                v.get("recorded_at")
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| v["occurred_at"].as_str().expect("occurred_at")),
            )
            .unwrap(),
            s(v, "event_id"),
        )
    };
    for evs in requests.values_mut() {
        evs.sort_by_key(order);
        let key = |e: &Value| {
            (
                cambodia_date(&s(e, "occurred_at")),
                s(e, "unit_code"),
                s(e, "sector_code"),
                s(e, "service_code"),
            )
        };
        if let Some(e) = evs.iter().find(|e| e["stage"] == "RECEIVED") {
            exp.services.entry(key(e)).or_default().received += 1;
        }
        if let Some(e) = evs.iter().find(|e| e["stage"] == "DELIVERED") {
            exp.services.entry(key(e)).or_default().delivered += 1;
        }
        for e in evs.iter().filter(|e| e["stage"] == "FEE_PAID") {
            exp.services.entry(key(e)).or_default().revenue_riel +=
                e["fee_riel"].as_i64().unwrap_or(0);
        }
    }
    for evs in complaints.values_mut() {
        evs.sort_by_key(order);
        let Some(rcv) = evs.iter().find(|e| e["stage"] == "RECEIVED") else {
            continue;
        };
        let sector = evs
            .iter()
            .find_map(|e| e.get("sector_code").and_then(Value::as_str))
            .unwrap_or("")
            .to_owned();
        let last = |stages: &[&str]| {
            evs.iter()
                .rev()
                .find(|e| stages.contains(&e["stage"].as_str().unwrap()))
                .map(|e| e["stage"].as_str().unwrap().to_owned())
        };
        let status = last(&["RESOLVED", "MORE_INFO_REQUIRED", "WITHDRAWN"]);
        let juris = if status.as_deref() == Some("RESOLVED") {
            Some("WITHIN_JURISDICTION".to_owned())
        } else {
            last(&["WITHIN_JURISDICTION", "OUTSIDE_JURISDICTION"])
        };
        let f = exp
            .complaints
            .entry((
                cambodia_date(&s(rcv, "occurred_at")),
                s(rcv, "unit_code"),
                sector,
            ))
            .or_default();
        f.received += 1;
        match juris.as_deref() {
            Some("WITHIN_JURISDICTION") => f.within += 1,
            Some(_) => f.outside += 1,
            None => f.undecided += 1,
        }
        match status.as_deref() {
            Some("RESOLVED") => f.resolved += 1,
            Some("MORE_INFO_REQUIRED") => f.more_info += 1,
            Some(_) => f.withdrawn += 1,
            None => f.open += 1,
        }
    }
    exp.services.retain(|_, f| *f != ServiceFigures::default());
    exp
}

/// Reads a table (by short name) of a local store at its latest version, through the lake's
/// snapshot (only the files the Delta log lists as active: replaced files stay on disk until
/// vacuum). The store must exist; a table never written reads as empty.
pub fn read_table(store_dir: &Path, table: &str) -> DataFrame {
    read_table_at(store_dir.to_str().expect("utf-8 path"), table)
}

/// Like [`read_table`], for a store given by URL (a directory or `s3://…`).
pub fn read_table_at(store_url: &str, table: &str) -> DataFrame {
    let def = owsu_lake::tables::by_name(table).unwrap_or_else(|| panic!("no table {table}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = owsu_lake::Store::open_existing(store_url).expect("store");
        let snap = owsu_lake::Snapshot::open(&store, &[def], None)
            .await
            .expect("snapshot");
        snap.read(def, None, None).await.expect("read table")
    })
}

fn strs(df: &DataFrame, c: &str) -> Vec<String> {
    let col = df.column(c).unwrap();
    if let Ok(d) = col.date() {
        return d
            .physical()
            .iter()
            .map(|v| owsu_schemas::time::epoch_day_to_date(v.unwrap()).to_string())
            .collect();
    }
    col.str()
        .unwrap()
        .iter()
        .map(|v| v.unwrap_or("").to_owned())
        .collect()
}

fn ints(df: &DataFrame, c: &str) -> Vec<i64> {
    df.column(c)
        .unwrap()
        .i64()
        .unwrap()
        .iter()
        .map(|v| v.unwrap_or(0))
        .collect()
}

/// The aggregator's figures, in the oracle's shape: `services_daily` and `complaints_daily`
/// of a local store, all-zero service cells left out.
pub fn actual_from_store(store_dir: &Path) -> Expected {
    actual_from_url(store_dir.to_str().expect("utf-8 path"))
}

/// Like [`actual_from_store`], for a store given by URL.
pub fn actual_from_url(store_url: &str) -> Expected {
    let mut a = Expected::default();
    add_frames(
        &mut a,
        &read_table_at(store_url, "services_daily"),
        &read_table_at(store_url, "complaints_daily"),
    );
    a.services.retain(|_, f| *f != ServiceFigures::default());
    a
}

/// Adds the rows of a `services_daily` and a `complaints_daily` frame to `a`, summing into cells
/// it has. A null count reads as 0, a null string key as "".
pub fn add_frames(a: &mut Expected, services: &DataFrame, complaints: &DataFrame) {
    let df = services;
    if df.height() > 0 {
        let (d, u, se, sv) = (
            strs(df, "date"),
            strs(df, "unit_code"),
            strs(df, "sector_code"),
            strs(df, "service_code"),
        );
        let (r, dl, rev) = (
            ints(df, "requests_received"),
            ints(df, "services_delivered"),
            ints(df, "revenue_riel"),
        );
        for i in 0..df.height() {
            let f = a
                .services
                .entry((d[i].clone(), u[i].clone(), se[i].clone(), sv[i].clone()))
                .or_default();
            f.received += r[i];
            f.delivered += dl[i];
            f.revenue_riel += rev[i];
        }
    }
    let df = complaints;
    if df.height() > 0 {
        let (d, u, se) = (
            strs(df, "date"),
            strs(df, "unit_code"),
            strs(df, "sector_code"),
        );
        let cols: Vec<Vec<i64>> = [
            "complaints_received",
            "within_jurisdiction",
            "outside_jurisdiction",
            "jurisdiction_undecided",
            "resolved",
            "more_info_required",
            "open",
            "withdrawn",
        ]
        .iter()
        .map(|c| ints(df, c))
        .collect();
        for i in 0..df.height() {
            let f = a
                .complaints
                .entry((d[i].clone(), u[i].clone(), se[i].clone()))
                .or_default();
            f.received += cols[0][i];
            f.within += cols[1][i];
            f.outside += cols[2][i];
            f.undecided += cols[3][i];
            f.resolved += cols[4][i];
            f.more_info += cols[5][i];
            f.open += cols[6][i];
            f.withdrawn += cols[7][i];
        }
    }
}

/// How the lake's figures differ from the oracle's.
#[derive(Debug, Default)]
pub struct Differences {
    /// Cells (service or complaint) whose figures differ, or that only one side has.
    pub cells: usize,
    /// Requests received, services delivered and complaints received that the lake is short of.
    pub missing: u64,
    /// The same counts that the lake has too many of (counted twice).
    pub surplus: u64,
    /// The first 15 differing cells, readable.
    pub first: Vec<String>,
}

impl Differences {
    fn cell(&mut self, what: String, counts: &[(i64, i64)]) {
        self.cells += 1;
        for &(e, a) in counts {
            if a > e {
                self.surplus += (a - e) as u64;
            } else {
                self.missing += (e - a) as u64;
            }
        }
        if self.first.len() < 15 {
            self.first.push(what);
        }
    }
}

/// The lake's figures against the oracle's, cell by cell (services and complaints, not
/// [`Expected::distinct`]).
pub fn differences(expected: &Expected, actual: &Expected) -> Differences {
    let mut d = Differences::default();
    let zero_s = ServiceFigures::default();
    for (k, e) in &expected.services {
        let a = actual.services.get(k);
        if a != Some(e) {
            let a0 = a.unwrap_or(&zero_s);
            d.cell(
                format!("services {k:?}: expected {e:?}, got {a:?}"),
                &[(e.received, a0.received), (e.delivered, a0.delivered)],
            );
        }
    }
    for (k, a) in &actual.services {
        if !expected.services.contains_key(k) {
            d.cell(
                format!("services {k:?}: unexpected {a:?}"),
                &[(0, a.received), (0, a.delivered)],
            );
        }
    }
    let zero_c = ComplaintFigures::default();
    for (k, e) in &expected.complaints {
        let a = actual.complaints.get(k);
        if a != Some(e) {
            let a0 = a.unwrap_or(&zero_c);
            d.cell(
                format!("complaints {k:?}: expected {e:?}, got {a:?}"),
                &[(e.received, a0.received)],
            );
        }
    }
    for (k, a) in &actual.complaints {
        if !expected.complaints.contains_key(k) {
            d.cell(
                format!("complaints {k:?}: unexpected {a:?}"),
                &[(0, a.received)],
            );
        }
    }
    d
}

/// Asserts the aggregator's figures equal the oracle's, cell by cell, with a readable diff (the
/// first 15 differences). Compares services and complaints, not [`Expected::distinct`].
pub fn assert_matches(expected: &Expected, actual: &Expected) {
    let d = differences(expected, actual);
    assert!(
        d.cells == 0,
        "{} of {} service cells and {} complaint cells differ; first ones:\n{}",
        d.cells,
        expected.services.len(),
        expected.complaints.len(),
        d.first.join("\n")
    );
}

/// Asserts that no Kafka offset was committed twice: in every raw table, each
/// (kafka_partition, kafka_offset) appears once among the active rows.
pub fn assert_no_offset_twice(store_dir: &Path) {
    for def in owsu_lake::tables::RAW {
        let df = read_table(store_dir, def.name);
        let rows = df.height();
        let distinct = df
            .select(["kafka_partition", "kafka_offset"])
            .unwrap()
            .unique_stable(None, UniqueKeepStrategy::First, None)
            .unwrap()
            .height();
        assert_eq!(
            rows, distinct,
            "{}: {} rows but {} distinct Kafka positions: a batch was committed twice",
            def.name, rows, distinct
        );
    }
}

/// Parquet files on disk directly under a table of a local store (active or not: before
/// vacuum, files replaced by later commits are still there). `table_path` is relative to the
/// store root, e.g. [`owsu_lake::tables::TableDef::path`].
pub fn files_on_disk(store_dir: &Path, table_path: &str) -> usize {
    std::fs::read_dir(store_dir.join(table_path))
        .unwrap_or_else(|e| panic!("{table_path}: {e}"))
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "parquet"))
        })
        .count()
}

/// Commits in a local store so far: the entries of every table's Delta log, less each table's
/// creation. A test that kills or faults a running aggregator waits for this to grow, whatever
/// the machine's speed.
pub fn lake_commits(store_dir: &Path) -> usize {
    owsu_lake::tables::ALL
        .iter()
        .map(|def| {
            std::fs::read_dir(store_dir.join(def.path).join("_delta_log"))
                .map(|d| {
                    d.filter(|e| {
                        e.as_ref()
                            .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
                    })
                    .count()
                })
                .unwrap_or(0)
                .saturating_sub(1)
        })
        .sum()
}
