//! Corrections and event ids through the real pipeline (issue 10, items 3 and 5): a correction
//! of a correction replaces the whole chain, one that arrives before its original waits for it,
//! one sent under another unit's code or naming another kind's event is refused to the
//! dead-letter topic with that reason, and a second event under an id already taken, with other
//! content, is dead-lettered as a conflicting duplicate while the first holds. The summaries
//! equal the oracle, which judges the same rules from the whole file at once. Two identical lines
//! without an event id are two events, and publishing the export again counts nothing twice.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use owsu_tests::oracle;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message};
use serde_json::{json, Value};

const A: &str = "KH-0101";
const B: &str = "KH-0102";

fn id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

fn fee(n: u32, unit: &str, request: &str, fee: i64, recorded: &str, fixes: Option<u32>) -> Value {
    let mut v = json!({
        "kind": "service",
        "event_id": id(n),
        "unit_code": unit,
        "request_id": request,
        "sector_code": "COM",
        "service_code": "COM-TRADE-LIC",
        "stage": "FEE_PAID",
        "fee_riel": fee,
        "channel": "counter",
        "occurred_at": "2021-03-01T09:30:00+07:00",
        "recorded_at": recorded,
    });
    if let Some(t) = fixes {
        v["supersedes_event_id"] = id(t).into();
    }
    v
}

fn no_id(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("event_id");
    v
}

#[test]
fn corrections_mean_one_thing_and_conflicting_duplicates_are_dead_lettered() {
    let prefix = owsu_tests::random_prefix("corrections");
    // One partition: both units' events meet in one partition state, as units sharing a
    // partition do, so a cross-unit correction is judged (on separate partitions it waits).
    owsu_tests::create_topics(&prefix, 1);
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    owsu_schemas::ids::write_secret_file(
        &dir.path().join("secret"),
        b"corrections-test-0123456789",
    )
    .unwrap();
    let complaint = json!({
        "kind": "complaint",
        "event_id": id(50),
        "unit_code": A,
        "complaint_id": "C-1",
        "stage": "RECEIVED",
        "occurred_at": "2021-03-01T10:00:00+07:00",
    });
    let lines = [
        // A correction that arrives before its original: held, then applied.
        fee(2, A, "R-2", 700, "2021-03-03T09:00:00+07:00", Some(1)),
        fee(1, A, "R-2", 1_000, "2021-03-01T09:30:00+07:00", None),
        // A chain: 9,000 corrected to 5,000, then that correction corrected to 5,500.
        fee(10, A, "R-1", 9_000, "2021-03-01T09:30:00+07:00", None),
        fee(11, A, "R-1", 5_000, "2021-03-02T09:00:00+07:00", Some(10)),
        fee(12, A, "R-1", 5_500, "2021-03-05T09:00:00+07:00", Some(11)),
        // Unit B "corrects" A's payment: refused, and A's revenue stands.
        fee(20, B, "R-9", 90_000, "2021-03-06T09:00:00+07:00", Some(10)),
        // A service correction naming a complaint event: refused.
        complaint,
        fee(21, A, "R-3", 300, "2021-03-06T09:00:00+07:00", Some(50)),
        // Event 1's id again with other content: a conflicting duplicate; the first holds.
        fee(1, A, "R-2", 4_000, "2021-03-01T09:30:00+07:00", None),
        // And an identical replay of event 12: counted once, no dead letter.
        fee(12, A, "R-1", 5_500, "2021-03-05T09:00:00+07:00", Some(11)),
        // Two identical lines without an event id (the same fee paid twice on one request in
        // the same minute): two events (item 4).
        no_id(fee(0, A, "R-5", 2_000, "2021-03-01T09:30:00+07:00", None)),
        no_id(fee(0, A, "R-5", 2_000, "2021-03-01T09:30:00+07:00", None)),
    ];
    let export = p("export.jsonl");
    std::fs::write(
        &export,
        lines.iter().map(|v| format!("{v}\n")).collect::<String>(),
    )
    .unwrap();
    // Published and aggregated twice, as an office re-importing its export: the same ids,
    // counted once.
    let store = p("store");
    for outbox in ["outbox", "outbox-again"] {
        assert_eq!(
            common::publish(&prefix, &export, &p("secret"), &p(outbox), &[]),
            0
        );
        assert_eq!(common::aggregate(&prefix, Path::new(&store)).unwrap(), 0);
    }

    let actual = oracle::actual_from_store(Path::new(&store));
    let revenue: BTreeMap<&str, i64> = actual
        .services
        .iter()
        .map(|((_, unit, _, _), f)| (unit.as_str(), f.revenue_riel))
        .fold(BTreeMap::new(), |mut m, (u, r)| {
            *m.entry(u).or_default() += r;
            m
        });
    assert_eq!(
        revenue,
        BTreeMap::from([(A, 700 + 5_500 + 2 * 2_000)]),
        "A: the held correction (700), the chain's last (5,500) and both identical payments; \
         B: nothing"
    );
    oracle::assert_matches(&oracle::expected_from_import(Path::new(&export)), &actual);

    // The quality report lists the refused corrections with their reason.
    assert_eq!(
        common::jobs(&[
            "--store",
            &store,
            "quality",
            "--year",
            "2021",
            "--out",
            &p("quality"),
        ]),
        0
    );
    let q: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("quality/quality.json")).unwrap(),
    )
    .unwrap();
    let mut statuses: Vec<String> = q["waiting_corrections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["status"].as_str().unwrap().to_owned())
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            "refused: names a complaint event".to_owned(),
            format!("refused: names an event of unit {A}"),
        ]
    );

    // The refusals, each with its reason and field.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", owsu_tests::bootstrap())
        .set("group.id", format!("{prefix}dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer
        .subscribe(&[&format!("{prefix}{}", owsu_schemas::topics::DEAD_LETTER)])
        .unwrap();
    // Each refusal is sent again with the second import (dead letters are at least once);
    // the identical replays are no conflict and send nothing.
    let mut letters: Vec<(String, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while letters.len() < 6 && Instant::now() < deadline {
        let Some(m) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m.unwrap();
        let h = m.headers().expect("dead letters have headers");
        let get = |k: &str| {
            h.iter()
                .find(|x| x.key == k)
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        assert!(m.payload().is_some(), "the refused message itself is kept");
        letters.push((get("field"), get("reason")));
    }
    assert_eq!(letters.len(), 6, "{letters:?}");
    let conflicts: Vec<&String> = letters
        .iter()
        .filter(|(f, _)| f == "event_id")
        .map(|(_, r)| r)
        .collect();
    assert_eq!(conflicts.len(), 2, "{letters:?}");
    assert!(conflicts
        .iter()
        .all(|r| r.contains("conflicting duplicate") && r.contains(&id(1))));
    let refusals: Vec<&str> = letters
        .iter()
        .filter(|(f, _)| f == "supersedes_event_id")
        .map(|(_, r)| r.as_str())
        .collect();
    assert_eq!(refusals.len(), 4, "{letters:?}");
    assert!(
        refusals.iter().any(|r| r.contains(&format!("of unit {A}"))),
        "{refusals:?}"
    );
    assert!(
        refusals.iter().any(|r| r.contains("other kind")),
        "{refusals:?}"
    );
    assert!(
        consumer.poll(Duration::from_secs(2)).is_none(),
        "the identical replays are no conflict"
    );
}
