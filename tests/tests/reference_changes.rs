//! Reference data changes (issue 10, item 8): an export with a service the catalogue does not
//! know (added after it) and complaints under a sector it does not know goes through the real
//! pipeline. Nothing is refused or dropped: every figure equals the oracle, the new codes are
//! counted under their own names in the summaries and the researchers' dataset, the quality
//! report flags them, and the review runs.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use owsu_tests::oracle;
use serde_json::Value;

const NEW_SERVICE: &str = "COM-NEW-2030";
const NEW_SECTOR: &str = "DIGITAL";

#[test]
fn codes_the_catalogue_does_not_know_are_counted_under_their_code() {
    let prefix = owsu_tests::random_prefix("refchange");
    owsu_tests::create_topics(&prefix, 2);
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    owsu_schemas::ids::write_secret_file(&dir.path().join("secret"), b"reference-test-0123456789")
        .unwrap();
    common::simulate_2021(&p("year.jsonl"), "0.005", "5");
    // Rename one service everywhere, and move every third complaint to a new sector.
    let lines: Vec<Value> = std::fs::read_to_string(p("year.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let old_service = lines
        .iter()
        .find(|v| v["kind"] == "service" && v["sector_code"] == "COM")
        .map(|v| v["service_code"].as_str().unwrap().to_owned())
        .expect("a commerce service in the year");
    let complaints: Vec<String> = lines
        .iter()
        .filter(|v| v["kind"] == "complaint")
        .map(|v| v["complaint_id"].as_str().unwrap().to_owned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .step_by(3)
        .collect();
    let complaints: BTreeSet<String> = complaints.into_iter().collect();
    let mut renamed = 0;
    let mut moved = 0;
    let mut out = String::new();
    for mut v in lines {
        if v["kind"] == "service" && v["service_code"] == old_service.as_str() {
            v["service_code"] = NEW_SERVICE.into();
            renamed += 1;
        }
        if v["kind"] == "complaint" && complaints.contains(v["complaint_id"].as_str().unwrap()) {
            v["sector_code"] = NEW_SECTOR.into();
            moved += 1;
        }
        out.push_str(&v.to_string());
        out.push('\n');
    }
    assert!(renamed > 10 && moved > 10, "{renamed} {moved}");
    std::fs::write(p("export.jsonl"), out).unwrap();

    assert_eq!(
        common::publish(&prefix, &p("export.jsonl"), &p("secret"), &p("outbox"), &[]),
        0,
        "codes the catalogue does not know are flagged, not refused"
    );
    assert_eq!(
        common::aggregate(&prefix, Path::new(&p("store"))).unwrap(),
        0
    );
    let actual = oracle::actual_from_store(Path::new(&p("store")));
    oracle::assert_matches(
        &oracle::expected_from_import(Path::new(&p("export.jsonl"))),
        &actual,
    );
    assert!(
        actual
            .services
            .keys()
            .any(|(_, _, sector, service)| service == NEW_SERVICE && sector == "COM"),
        "the new service is counted under its code, in its sector"
    );
    assert!(!actual.services.keys().any(|k| k.3 == old_service));
    assert!(
        actual.complaints.keys().any(|(_, _, s)| s == NEW_SECTOR),
        "complaints under the new sector are counted under it"
    );

    // The jobs run, and report the new codes rather than crash or drop them.
    let quality = dir.path().join("quality");
    assert_eq!(
        common::jobs(&[
            "--store",
            &p("store"),
            "quality",
            "--year",
            "2021",
            "--out",
            quality.to_str().unwrap(),
        ]),
        0
    );
    let q: Value =
        serde_json::from_str(&std::fs::read_to_string(quality.join("quality.json")).unwrap())
            .unwrap();
    let rule = |code: &str| -> u64 {
        q["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rule"] == code)
            .map_or(0, |r| r["count"].as_u64().unwrap())
    };
    assert!(rule("UNKNOWN_SERVICE") > 0, "{:#}", q["rules"]);
    assert!(rule("UNKNOWN_SECTOR") > 0, "{:#}", q["rules"]);
    assert_eq!(
        common::jobs(&[
            "--store",
            &p("store"),
            "review",
            "--year",
            "2021",
            "--out",
            &p("review"),
        ]),
        0
    );
    let review: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("review/review.json")).unwrap(),
    )
    .unwrap();
    let national = review["facts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["level"] == "All units")
        .expect("a national row");
    assert_eq!(
        national["services_delivered"].as_i64().unwrap(),
        actual.services.values().map(|f| f.delivered).sum::<i64>(),
        "the national figure includes the new service"
    );
    assert_eq!(
        common::jobs(&[
            "--store",
            &p("store"),
            "demand",
            "--from",
            "2021-01",
            "--to",
            "2021-12",
            "--out",
            &p("demand"),
        ]),
        0
    );
    let csv = std::fs::read_to_string(dir.path().join("demand/sector_demand.csv")).unwrap();
    assert!(csv.contains(NEW_SERVICE), "the researchers' dataset has it");
}
