//! Approved yearly figures stay put (issue 13, items 1 and 2): a year is approved, late events
//! and a correction for it arrive and are aggregated, and the review of that year is still the
//! approved one byte for byte (after compaction and a vacuum keeping no history); `restatements` lists exactly the late events and the figures they
//! move; a new approval supersedes the first, both stay readable, and the review moves to it.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde_json::Value;

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn an_approved_review_does_not_move_and_restatements_explain_what_would() {
    let prefix = owsu_tests::random_prefix("approval");
    owsu_tests::create_topics(&prefix, 2);
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    owsu_schemas::ids::write_secret_file(&dir.path().join("secret"), b"approval-test-0123456789")
        .unwrap();
    common::simulate_2021(&p("year.jsonl"), "0.001", "21");
    let store = p("store");
    let publish = |f: &str| {
        assert_eq!(
            common::publish(&prefix, &p(f), &p("secret"), &p("outbox"), &[]),
            0,
            "publishing {f}"
        );
        assert_eq!(common::aggregate(&prefix, Path::new(&store)).unwrap(), 0);
    };
    publish("year.jsonl");
    let jobs = |args: &[&str]| {
        let mut v = vec!["--store", store.as_str()];
        v.extend_from_slice(args);
        common::jobs(&v)
    };

    // Not approved yet: the review says so, and there is nothing to restate against.
    assert_eq!(jobs(&["review", "--year", "2021", "--out", &p("r0")]), 0);
    let html = std::fs::read_to_string(p("r0/review.html")).unwrap();
    assert!(
        html.contains("Not approved"),
        "the review says it is not approved"
    );

    assert_eq!(
        jobs(&[
            "approve",
            "--year",
            "2021",
            "--by",
            "Secretary-General Chea"
        ]),
        0
    );
    assert_eq!(jobs(&["review", "--year", "2021", "--out", &p("r1")]), 0);
    let approved = std::fs::read(p("r1/review.json")).unwrap();
    assert_eq!(
        approved,
        std::fs::read(p("r0/review.json")).unwrap(),
        "approving changes no figure"
    );

    // Late events for 2021: a copy of one delivered request under a new request number, and a
    // correction raising one fee by 1,000 riel.
    let lines: Vec<Value> = std::fs::read_to_string(p("year.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let delivered = lines
        .iter()
        .find(|v| {
            v["kind"] == "service"
                && v["stage"] == "DELIVERED"
                && v.get("supersedes_event_id").is_none()
        })
        .expect("a delivered request");
    let (unit, request) = (
        delivered["unit_code"].clone(),
        delivered["request_id"].clone(),
    );
    let mut late: Vec<Value> = lines
        .iter()
        .filter(|v| v["kind"] == "service" && v["unit_code"] == unit && v["request_id"] == request)
        .filter(|v| v.get("supersedes_event_id").is_none())
        .cloned()
        .map(|mut v| {
            v["request_id"] = "LATE-REQUEST-1".into();
            v["event_id"] = uuid::Uuid::new_v4().to_string().into();
            v
        })
        .collect();
    let copied_fees: i64 = late
        .iter()
        .filter(|v| v["stage"] == "FEE_PAID")
        .map(|v| v["fee_riel"].as_i64().unwrap())
        .sum();
    let paid = lines
        .iter()
        .find(|v| {
            v["stage"] == "FEE_PAID"
                && v.get("event_id").is_some()
                && v.get("supersedes_event_id").is_none()
                && v["fee_riel"].as_i64().unwrap_or(0) > 0
                && v["unit_code"] == unit
        })
        .or_else(|| {
            lines.iter().find(|v| {
                v["stage"] == "FEE_PAID"
                    && v.get("event_id").is_some()
                    && v.get("supersedes_event_id").is_none()
                    && v["fee_riel"].as_i64().unwrap_or(0) > 0
            })
        })
        .expect("a fee payment");
    let mut correction = paid.clone();
    correction["supersedes_event_id"] = paid["event_id"].clone();
    correction["event_id"] = uuid::Uuid::new_v4().to_string().into();
    correction["fee_riel"] = (paid["fee_riel"].as_i64().unwrap() + 1_000).into();
    late.push(correction);
    let late_ids: BTreeSet<String> = late
        .iter()
        .map(|v| v["event_id"].as_str().unwrap().to_owned())
        .collect();
    std::fs::write(
        p("late.jsonl"),
        late.iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
            + "\n",
    )
    .unwrap();
    publish("late.jsonl");
    // Compaction and a vacuum that keeps no history must leave the approved versions readable.
    for args in [
        vec!["owsu-aggregator", "compact", "--store", &store],
        vec![
            "owsu-aggregator",
            "vacuum",
            "--store",
            &store,
            "--retain-hours",
            "0",
        ],
    ] {
        use clap::Parser;
        let cli = owsu_aggregator::cli::Cli::parse_from(&args);
        assert_eq!(owsu_aggregator::cli::run(cli).unwrap(), 0, "{args:?}");
    }

    // The approved review is the same bytes, and says what waits.
    assert_eq!(jobs(&["review", "--year", "2021", "--out", &p("r2")]), 0);
    assert_eq!(
        std::fs::read(p("r2/review.json")).unwrap(),
        approved,
        "the approved review moved"
    );
    let html = std::fs::read_to_string(p("r2/review.html")).unwrap();
    assert!(
        html.contains("Approved on")
            && html.contains("by Secretary-General Chea")
            && html.contains(" pending (owsu-jobs restatements"),
        "the review states its approval"
    );
    // The current figures did move.
    assert_eq!(
        jobs(&["review", "--year", "2021", "--current", "--out", &p("r3")]),
        0
    );
    let current = std::fs::read(p("r3/review.json")).unwrap();
    assert_ne!(
        current, approved,
        "the late events are in the current figures"
    );

    // Restatements: exactly the late events, and the figures they move.
    assert_eq!(
        jobs(&["restatements", "--year", "2021", "--out", &p("rs")]),
        0
    );
    let rs = read_json(&Path::new(&p("rs")).join("restatements.json"));
    let listed: BTreeSet<String> = rs["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        listed, late_ids,
        "the late events, and only they, explain the difference"
    );
    let mut diff: HashMap<(String, String), i64> = HashMap::new();
    for r in rs["restated"].as_array().unwrap() {
        diff.insert(
            (
                r["unit_code"].as_str().unwrap().to_owned(),
                r["figure"].as_str().unwrap().to_owned(),
            ),
            r["difference"].as_i64().unwrap(),
        );
        assert_eq!(
            r["current"].as_i64().unwrap() - r["approved"].as_i64().unwrap(),
            r["difference"].as_i64().unwrap()
        );
    }
    let unit = unit.as_str().unwrap().to_owned();
    assert_eq!(
        diff.get(&(unit.clone(), "services_delivered".into())),
        Some(&1)
    );
    let revenue: i64 = diff
        .iter()
        .filter(|((_, f), _)| f == "revenue_riel")
        .map(|(_, d)| *d)
        .sum();
    assert_eq!(
        revenue,
        copied_fees + 1_000,
        "revenue restated by the copied fees and the correction"
    );
    assert!(
        std::fs::read_to_string(p("rs/late_events.csv"))
            .unwrap()
            .lines()
            .count()
            == late_ids.len() + 1,
        "late_events.csv lists them"
    );

    // A new approval supersedes the first; both stay; the review moves to the new figures.
    assert_eq!(
        jobs(&[
            "approve",
            "--year",
            "2021",
            "--by",
            "Secretary-General Chea"
        ]),
        0
    );
    assert_eq!(jobs(&["approvals", "--year", "2021"]), 0);
    let approvals = owsu_tests::oracle::read_table(Path::new(&store), "approvals");
    assert_eq!(
        approvals.height(),
        2,
        "both approvals are kept: {approvals}"
    );
    let digests = approvals.column("digest").unwrap().str().unwrap().clone();
    let supersedes = approvals
        .column("supersedes")
        .unwrap()
        .str()
        .unwrap()
        .clone();
    let superseding = (0..2)
        .find(|&i| supersedes.get(i).is_some())
        .expect("a superseding approval");
    assert_eq!(supersedes.get(superseding), digests.get(1 - superseding));
    assert_eq!(jobs(&["review", "--year", "2021", "--out", &p("r4")]), 0);
    assert_eq!(std::fs::read(p("r4/review.json")).unwrap(), current);
    let html = std::fs::read_to_string(p("r4/review.html")).unwrap();
    assert!(
        html.contains("0 restatements pending"),
        "nothing waits against the new approval"
    );
}
