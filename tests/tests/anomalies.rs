//! An office export with business-rule anomalies a real office could honestly record — fees
//! above the legal schedule, complaints at units the registry lists without an Ombudsman
//! office, a delivery recorded before its request — goes through the real pipeline: nothing is
//! refused, every figure equals the oracle that counts every record, and the quality report
//! lists each anomaly, ranks the units above the schedule and the review states the count.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use owsu_schemas::Reference;
use owsu_tests::oracle;
use serde_json::Value;

/// What was planted, to compare with the report.
#[derive(Default)]
struct Planted {
    /// Unit → FEE_PAID events raised above the schedule.
    fees_above: BTreeMap<String, u64>,
    /// Complaint events moved to a unit without an Ombudsman office (distinct ids).
    complaints_moved: BTreeSet<String>,
    /// Requests delivered before they were received.
    delivered_before: BTreeSet<String>,
}

/// Rewrites a simulated export with anomalies; returns what it planted.
fn plant(input: &Path, output: &Path, reference: &Reference) -> Planted {
    let lines: Vec<Value> = std::fs::read_to_string(input)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let s = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
    // Events named by a correction, and corrections, are left alone: the report (rightly)
    // counts an anomaly on the event that stands, and these would blur the comparison.
    let corrected: HashSet<String> = lines.iter().map(|v| s(v, "supersedes_event_id")).collect();
    let untouchable = |v: &Value| {
        corrected.contains(&s(v, "event_id")) || !s(v, "supersedes_event_id").is_empty()
    };
    let no_ombudsman: Vec<String> = reference
        .registry
        .units
        .iter()
        .filter(|u| !u.has_ombudsman)
        .map(|u| u.code.clone())
        .collect();
    assert!(
        !no_ombudsman.is_empty(),
        "the registry has units without an Ombudsman office"
    );
    // Complaints to move: every event of every 4th complaint, so none is split across units.
    let complaint_ids: BTreeSet<String> = lines
        .iter()
        .filter(|v| v["kind"] == "complaint")
        .map(|v| s(v, "complaint_id"))
        .collect();
    let moved: BTreeMap<String, String> = complaint_ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 4 == 0)
        .map(|(i, c)| (c.clone(), no_ombudsman[i % no_ombudsman.len()].clone()))
        .collect();
    let first_received: BTreeMap<String, String> = lines
        .iter()
        .filter(|v| v["stage"] == "RECEIVED" && v["kind"] == "service")
        .map(|v| (s(v, "request_id"), s(v, "occurred_at")))
        .collect();
    // Events are chosen by id (a duplicate line of an event gets the same change): every 40th
    // fee payment is raised to three times the schedule's maximum, and every 500th delivery
    // is moved to an hour before its request was received.
    let distinct = |stage: &str| -> Vec<String> {
        let mut seen = HashSet::new();
        lines
            .iter()
            .filter(|v| v["kind"] == "service" && v["stage"] == stage && !untouchable(v))
            .map(|v| s(v, "event_id"))
            .filter(|id| seen.insert(id.clone()))
            .collect()
    };
    let raised: HashSet<String> = distinct("FEE_PAID")
        .into_iter()
        .step_by(40)
        .skip(1)
        .collect();
    let early: HashSet<String> = distinct("DELIVERED")
        .into_iter()
        .step_by(500)
        .skip(1)
        .collect();
    let mut planted = Planted::default();
    let mut counted = HashSet::new();
    let mut out = String::new();
    for mut v in lines.iter().cloned() {
        let id = s(&v, "event_id");
        if raised.contains(&id) {
            let (_, service) = reference.catalogue.service(&s(&v, "service_code")).unwrap();
            v["fee_riel"] = Value::from(service.fee_max_riel.max(1_000) * 3);
            if counted.insert(id.clone()) {
                *planted.fees_above.entry(s(&v, "unit_code")).or_default() += 1;
            }
        }
        if early.contains(&id) {
            let request = s(&v, "request_id");
            let rec = &first_received[&request];
            let at =
                chrono::DateTime::parse_from_rfc3339(rec).unwrap() - chrono::Duration::hours(1);
            v["occurred_at"] = Value::from(at.to_rfc3339());
            planted.delivered_before.insert(request);
        }
        if v["kind"] == "complaint" {
            if let Some(unit) = moved.get(&s(&v, "complaint_id")) {
                v["unit_code"] = Value::from(unit.clone());
                if !untouchable(&v) {
                    planted.complaints_moved.insert(id);
                }
            }
        }
        out.push_str(&v.to_string());
        out.push('\n');
    }
    std::fs::write(output, out).unwrap();
    planted
}

#[test]
fn anomalies_are_counted_flagged_and_reported() {
    let prefix = owsu_tests::random_prefix("anomalies");
    owsu_tests::create_topics(&prefix, 4);
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    owsu_schemas::ids::write_secret_file(
        &dir.path().join("secret"),
        b"anomaly-test-secret-0123456789",
    )
    .unwrap();
    common::simulate_2021(&p("year.jsonl"), "0.01", "11");
    let reference = Reference::builtin();
    let planted = plant(
        Path::new(&p("year.jsonl")),
        Path::new(&p("export.jsonl")),
        &reference,
    );
    let fees_above: u64 = planted.fees_above.values().sum();
    assert!(
        fees_above >= 10,
        "planted {fees_above} fees above the schedule"
    );
    assert!(
        planted.complaints_moved.len() >= 10,
        "{}",
        planted.complaints_moved.len()
    );
    assert!(!planted.delivered_before.is_empty());

    // Nothing is refused: exit 0 means no rejects file.
    assert_eq!(
        common::publish(&prefix, &p("export.jsonl"), &p("secret"), &p("outbox"), &[]),
        0,
        "an export whose only faults are business anomalies publishes in full"
    );
    assert!(!Path::new(&format!("{}.rejects.jsonl", p("export.jsonl"))).exists());
    assert_eq!(
        common::aggregate(&prefix, Path::new(&p("store"))).unwrap(),
        0
    );

    // Every record counted: the oracle counts every line of the export.
    let expected = oracle::expected_from_import(Path::new(&p("export.jsonl")));
    oracle::assert_matches(
        &expected,
        &oracle::actual_from_store(Path::new(&p("store"))),
    );

    // The quality report lists each anomaly.
    let out = dir.path().join("quality");
    assert_eq!(
        common::jobs(&[
            "--store",
            &p("store"),
            "quality",
            "--year",
            "2021",
            "--out",
            out.to_str().unwrap(),
        ]),
        0
    );
    let q: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("quality.json")).unwrap()).unwrap();
    let rule = |code: &str| -> u64 {
        q["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rule"] == code)
            .map_or(0, |r| r["count"].as_u64().unwrap())
    };
    assert_eq!(rule("FEE_ABOVE_SCHEDULE"), fees_above, "{:#}", q["rules"]);
    assert_eq!(
        rule("COMPLAINT_WITHOUT_OMBUDSMAN"),
        planted.complaints_moved.len() as u64,
        "{:#}",
        q["rules"]
    );
    assert_eq!(
        rule("DELIVERED_BEFORE_RECEIVED"),
        planted.delivered_before.len() as u64,
        "{:#}",
        q["rules"]
    );
    // Overcharging ranked by unit: exactly the units planted, each with its count.
    let ranked: BTreeMap<String, u64> = q["overcharging"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["unit_code"].as_str().unwrap().to_owned(),
                o["payments"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ranked, planted.fees_above);
    let excess: Vec<i64> = q["overcharging"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["excess_riel"].as_i64().unwrap())
        .collect();
    assert!(
        excess.windows(2).all(|w| w[0] >= w[1]),
        "ranked by excess: {excess:?}"
    );
    let csv = std::fs::read_to_string(out.join("anomalies.csv")).unwrap();
    assert!(csv.contains("FEE_ABOVE_SCHEDULE") && csv.contains("COMPLAINT_WITHOUT_OMBUDSMAN"));
    let html = std::fs::read_to_string(out.join("quality.html")).unwrap();
    assert!(
        html.contains("possible overcharging"),
        "the HTML ranks the units"
    );

    // The review says how many flagged events its figures include, and links to the report.
    let review = dir.path().join("review");
    assert_eq!(
        common::jobs(&[
            "--store",
            &p("store"),
            "review",
            "--year",
            "2021",
            "--out",
            review.to_str().unwrap(),
        ]),
        0
    );
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(review.join("review.json")).unwrap())
            .unwrap();
    assert_eq!(
        r["flagged_events"].as_u64().unwrap(),
        q["events_flagged"].as_u64().unwrap()
    );
    assert!(
        r["flagged_events"].as_u64().unwrap() >= fees_above + planted.complaints_moved.len() as u64
    );
    let page = std::fs::read_to_string(review.join("review.html")).unwrap();
    assert!(
        page.contains("quality-2021/quality.html"),
        "the review links to the report"
    );
}
