//! Service standards (issue 13) through the real pipeline: five trade licences received at
//! Mongkol Borei on Monday 1 March 2021 and delivered 0, 2, 7, 8 and 9 working days later
//! (International Women's Day, 8 March, is not one); the legal limit of the service is 8
//! working days, so four of five are within it.

mod common;

use std::path::Path;

use serde_json::{json, Value};

fn event(request: &str, stage: &str, at: &str) -> Value {
    json!({"kind": "service", "unit_code": "KH-0101", "request_id": request, "sector_code": "COM",
           "service_code": "COM-TRADE-LIC", "stage": stage, "occurred_at": at, "recorded_at": at})
}

#[test]
fn requests_within_the_legal_time_are_counted_in_working_days() {
    let prefix = owsu_tests::random_prefix("standards");
    owsu_tests::create_topics(&prefix, 3);
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    owsu_schemas::ids::write_secret_file(&dir.path().join("secret"), b"standards-test-0123456789")
        .unwrap();
    let mut lines = Vec::new();
    for (request, delivered) in [
        ("R-0", "2021-03-01T15:00:00+07:00"),
        ("R-2", "2021-03-03T10:00:00+07:00"),
        ("R-7", "2021-03-11T10:00:00+07:00"),
        ("R-8", "2021-03-12T16:00:00+07:00"),
        ("R-9", "2021-03-15T09:00:00+07:00"),
    ] {
        lines.push(event(request, "RECEIVED", "2021-03-01T09:00:00+07:00"));
        lines.push(event(request, "DELIVERED", delivered));
    }
    let export: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(p("march.jsonl"), export).unwrap();
    assert_eq!(
        common::publish(&prefix, &p("march.jsonl"), &p("secret"), &p("outbox"), &[]),
        0
    );
    assert_eq!(
        common::aggregate(&prefix, Path::new(&p("store"))).unwrap(),
        0
    );
    let out = p("review");
    let store = p("store");
    assert_eq!(
        common::jobs(&[
            "--store", &store, "review", "--year", "2021", "--scope", "KH-01", "--out", &out
        ]),
        0
    );
    let review: Value =
        serde_json::from_slice(&std::fs::read(Path::new(&out).join("review.json")).unwrap())
            .unwrap();
    let sectors = review["standards"]["by_sector"].as_array().unwrap();
    assert_eq!(sectors.len(), 1, "{sectors:?}");
    assert_eq!(sectors[0]["sector_code"], "COM");
    assert_eq!(sectors[0]["delivered"], 5);
    assert_eq!(sectors[0]["within"], 4);
    assert_eq!(sectors[0]["within_pct"], 80.0);
    let per_unit = std::fs::read_to_string(Path::new(&out).join("service_standards.csv")).unwrap();
    assert!(
        per_unit
            .lines()
            .any(|l| l.starts_with("KH-0101,") && l.contains(",COM,") && l.ends_with(",5,4,80.0")),
        "{per_unit}"
    );
    let html = std::fs::read_to_string(Path::new(&out).join("review.html")).unwrap();
    assert!(html.contains("Service standards") && html.contains("80.0%"));
}
