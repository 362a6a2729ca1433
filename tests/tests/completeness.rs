//! Completeness and timeliness (issue 13) through the real pipeline: four units of Banteay
//! Meanchey close January 2021 (19 working days: 21 weekdays less New Year's Day and Victory
//! over Genocide Day), one of them silent on three known days, one late twice, one
//! mis-reconciled twice; `owsu-jobs completeness` and the review count exactly that.

mod common;

use std::path::Path;

use serde_json::{json, Value};

/// January 2021's working days in the holiday calendar.
const WORKING: [u32; 19] = [
    4, 5, 6, 8, 11, 12, 13, 14, 15, 18, 19, 20, 21, 22, 25, 26, 27, 28, 29,
];

fn close(unit: &str, day: u32, services: u32, at: &str) -> Value {
    json!({"kind": "unit_day", "unit_code": unit, "date": format!("2021-01-{day:02}"),
           "services_recorded": services, "complaints_recorded": 0, "closed_at": at})
}

fn evening(day: u32) -> String {
    format!("2021-01-{day:02}T17:30:00+07:00")
}

fn received(unit: &str, day: u32, request: &str) -> Value {
    let at = format!("2021-01-{day:02}T09:00:00+07:00");
    json!({"kind": "service", "unit_code": unit, "request_id": request, "sector_code": "COM",
           "service_code": "COM-TRADE-LIC", "stage": "RECEIVED", "occurred_at": at,
           "recorded_at": at})
}

/// The export: what each unit recorded and how it closed its days.
fn january() -> Vec<Value> {
    let mut lines = Vec::new();
    // KH-0101 closes every working day that evening, and also the holiday of 7 January and
    // Saturday 9 January, which no one expects.
    for d in WORKING.iter().copied().chain([7, 9]) {
        lines.push(close("KH-0101", d, 0, &evening(d)));
    }
    // KH-0102 is silent on 5, 13 and 25 January.
    for d in WORKING.iter().copied().filter(|d| ![5, 13, 25].contains(d)) {
        lines.push(close("KH-0102", d, 0, &evening(d)));
    }
    // KH-0103 closes every day, two of them late: Friday 8 January on Monday 11 at 12:30
    // (due 12:00) and 13 January on the 15th. Wednesday 6 January closed on Friday 8 at 11:00
    // is on time (the 7th is a holiday), and 20 January closed that evening then again on the
    // 25th keeps its first, timely close.
    for d in WORKING {
        let at = match d {
            8 => "2021-01-11T12:30:00+07:00".to_owned(),
            13 => "2021-01-15T09:00:00+07:00".to_owned(),
            6 => "2021-01-08T11:00:00+07:00".to_owned(),
            _ => evening(d),
        };
        lines.push(close("KH-0103", d, 0, &at));
    }
    lines.push(close("KH-0103", 20, 0, "2021-01-25T10:00:00+07:00"));
    // KH-0104 closes every day on time; its own count disagrees on the 12th (2 recorded, 1
    // arrived) and on the 14th (0 recorded, 1 arrived), and agrees on the 29th.
    for d in WORKING {
        let services = match d {
            12 => 2,
            29 => 1,
            _ => 0,
        };
        lines.push(close("KH-0104", d, services, &evening(d)));
    }
    lines.push(received("KH-0104", 12, "R-12"));
    lines.push(received("KH-0104", 14, "R-14"));
    lines.push(received("KH-0104", 29, "R-29"));
    lines
}

#[test]
fn silent_late_and_unreconciled_days_are_counted_exactly() {
    let prefix = owsu_tests::random_prefix("complete");
    owsu_tests::create_topics(&prefix, 3);
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    owsu_schemas::ids::write_secret_file(&dir.path().join("secret"), b"completeness-0123456789")
        .unwrap();
    let export: String = january().iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(p("january.jsonl"), export).unwrap();
    assert_eq!(
        common::publish(
            &prefix,
            &p("january.jsonl"),
            &p("secret"),
            &p("outbox"),
            &[]
        ),
        0
    );
    assert_eq!(
        common::aggregate(&prefix, Path::new(&p("store"))).unwrap(),
        0
    );

    let store = p("store");
    let jobs = |args: &[&str]| {
        let mut v = vec!["--store", store.as_str()];
        v.extend_from_slice(args);
        common::jobs(&v)
    };
    let out = p("completeness");
    assert_eq!(
        jobs(&[
            "completeness",
            "--year",
            "2021",
            "--scope",
            "KH-01",
            "--out",
            &out
        ]),
        0
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(Path::new(&out).join("completeness.json")).unwrap())
            .unwrap();
    let rows = std::fs::read_to_string(Path::new(&out).join("completeness.csv")).unwrap();
    let row = |unit: &str| -> Vec<String> {
        rows.lines()
            .find(|l| l.starts_with("2021-01,") && l.contains(&format!(",{unit},")))
            .unwrap_or_else(|| panic!("no January row of {unit}:\n{rows}"))
            .rsplit(',')
            .take(4)
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect()
    };
    // expected, closed, on time, reconciled
    for (unit, want) in [
        ("KH-0101", ["19", "19", "19", "19"]),
        ("KH-0102", ["19", "16", "16", "16"]),
        ("KH-0103", ["19", "19", "17", "19"]),
        ("KH-0104", ["19", "19", "19", "17"]),
        ("KH-0105", ["19", "0", "0", "0"]),
    ] {
        assert_eq!(row(unit), want, "{unit}");
    }
    // Through the last day with figures: January only.
    assert_eq!(report["through"], "2021-01-29");
    assert_eq!(report["months"].as_array().unwrap().len(), 1);
    // The province: its 10 units with an OWSU, 19 days each.
    let total = &report["total"];
    assert_eq!(total["expected"], 190);
    assert_eq!(total["closed"], 19 + 16 + 19 + 19);
    assert_eq!(total["on_time"], 19 + 16 + 17 + 19);
    assert_eq!(total["reconciled"], 19 + 16 + 19 + 17);
    // The least complete first: the six silent units, then KH-0102 (days missing), KH-0103
    // (late) and KH-0104 (unreconciled); KH-0101 is complete and not listed.
    let ranking: Vec<&str> = report["least_complete"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(ranking.len(), 9, "{ranking:?}");
    assert_eq!(&ranking[6..], ["KH-0102", "KH-0103", "KH-0104"]);
    assert!(!ranking.contains(&"KH-0101"));

    // The review of the province states the same figures.
    let review_dir = p("review");
    assert_eq!(
        jobs(&[
            "review",
            "--year",
            "2021",
            "--scope",
            "KH-01",
            "--out",
            &review_dir
        ]),
        0
    );
    let review: Value =
        serde_json::from_slice(&std::fs::read(Path::new(&review_dir).join("review.json")).unwrap())
            .unwrap();
    assert_eq!(review["reporting"]["total"], report["total"]);
    assert_eq!(
        review["reporting"]["least_complete"],
        report["least_complete"]
    );
    let html = std::fs::read_to_string(Path::new(&review_dir).join("review.html")).unwrap();
    assert!(
        html.contains("Least complete units") && html.contains("on the next working day"),
        "the review shows the ranking and the deadline"
    );
}
