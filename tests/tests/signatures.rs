//! Signed events (issue 11, items 3 and 4) on real Kafka in secure mode: an office's export
//! published with its key is counted in full by an aggregator that requires signatures. Another
//! office, with valid Kafka credentials of its own (ACLs let it write the event topics), writes
//! events in unit A's name signed with its own key, unsigned, altered after signing, or signed
//! with A's revoked key: all are dead-lettered with the reason. A captured genuine message sent
//! 1,000 times more is counted once. The totals equal the oracle of the genuine export alone.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use owsu_schemas::record::{Event, ServiceEvent, ServiceStage};
use owsu_schemas::signing::{OfficeKey, HEADER};
use owsu_tests::{oracle, PrivateBroker};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::json;

const A: &str = "KH-0101";
const B: &str = "KH-0102";

#[test]
fn only_events_signed_by_their_own_units_valid_key_count() {
    let prefix = owsu_tests::random_prefix("signed");
    let broker = PrivateBroker::start_secure("signed", &prefix, 2);
    let group = format!("{prefix}agg");
    broker.user(&["add", "office-a", "--role", "office"]);
    broker.user(&["add", "office-b", "--role", "office"]);
    broker.user(&[
        "add",
        "aggregator",
        "--role",
        "aggregator",
        "--group",
        &group,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    owsu_schemas::ids::write_secret_file(&dir.path().join("secret"), b"signature-test-0123456789")
        .unwrap();

    // Keys: A's through the CLI, B's and A's revoked one directly.
    assert_eq!(
        common::producer(&["keygen", "--unit", A, "--out", &p("a.key")]),
        0
    );
    let a = OfficeKey::read(Path::new(&p("a.key"))).unwrap();
    let b = OfficeKey::generate(B);
    let revoked = OfficeKey::generate(A);
    // The aggregator's reference data: the repository's, plus these keys.
    let reference = dir.path().join("reference");
    std::fs::create_dir(&reference).unwrap();
    for f in ["units.csv", "catalogue.json", "holidays.csv"] {
        std::fs::copy(
            owsu_tests::repo_root().join("schemas/reference").join(f),
            reference.join(f),
        )
        .unwrap();
    }
    std::fs::write(
        reference.join("keys.csv"),
        format!(
            "unit_code,public_key,valid_from,valid_until\n\
             {A},{},2020-01-01,\n\
             {B},{},2020-01-01,\n\
             {A},{},2020-01-01,2021-01-01\n",
            a.public_hex(),
            b.public_hex(),
            revoked.public_hex()
        ),
    )
    .unwrap();

    // The genuine export, published with A's key.
    let lines: Vec<String> = (0..40)
        .map(|i| {
            json!({
                "kind": "service",
                "unit_code": A,
                "request_id": format!("R-{}", i / 2),
                "sector_code": "COM",
                "service_code": "COM-TRADE-LIC",
                "stage": if i % 2 == 0 { "RECEIVED" } else { "FEE_PAID" },
                "fee_riel": if i % 2 == 0 { None } else { Some(40_000 + i) },
                "occurred_at": format!("2021-03-01T09:{:02}:00+07:00", i),
            })
            .to_string()
        })
        .collect();
    let export = p("export.jsonl");
    std::fs::write(&export, lines.join("\n") + "\n").unwrap();
    assert_eq!(
        common::publish_secure(
            &broker,
            "office-a",
            &export,
            &p("secret"),
            &p("outbox"),
            &["--signing-key-file", &p("a.key")]
        ),
        0
    );

    // Office B, authenticated and allowed to write the event topics, writing as unit A.
    let topic = format!("{prefix}{}", owsu_schemas::topics::SERVICE_EVENTS);
    let raw: BaseProducer = broker
        .client_config("office-b")
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    let forged = |n: u128| {
        owsu_schemas::encode(&Event::Service(ServiceEvent {
            event_id: uuid::Uuid::from_u128(0xf0_0000 + n),
            unit_code: A.into(),
            request_id: format!("{n:032x}"),
            sector_code: "COM".into(),
            service_code: "COM-TRADE-LIC".into(),
            stage: ServiceStage::FeePaid,
            fee_riel: Some(9_000_000),
            channel: "counter".into(),
            occurred_at: owsu_schemas::time::parse_rfc3339("2021-03-02T09:00:00+07:00").unwrap(),
            recorded_at: owsu_schemas::time::parse_rfc3339("2021-03-02T09:00:00+07:00").unwrap(),
            supersedes_event_id: None,
            window_no: None,
        }))
        .unwrap()
    };
    let send = |payload: &[u8], signature: Option<String>| {
        let mut r = BaseRecord::<str, [u8]>::to(&topic).key(A).payload(payload);
        if let Some(s) = &signature {
            r = r.headers(OwnedHeaders::new().insert(Header {
                key: HEADER,
                value: Some(s.as_bytes()),
            }));
        }
        raw.send(r).map_err(|(e, _)| e).unwrap();
    };
    for n in 0..5u128 {
        let other_units = forged(n);
        send(&other_units, Some(b.sign(&other_units)));
        send(&forged(10 + n), None);
        // Signed, then a different event sent under that signature.
        send(&forged(20 + n), Some(a.sign(&forged(99))));
        let old = forged(30 + n);
        send(&old, Some(revoked.sign(&old)));
    }
    // A captured genuine message (read here as the cluster's admin), sent again 1,000 times.
    let reader: BaseConsumer = broker
        .client_config("admin")
        .set("group.id", format!("{prefix}capture"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for part in 0..2 {
        tpl.add_partition_offset(&topic, part, Offset::Beginning)
            .unwrap();
    }
    reader.assign(&tpl).unwrap();
    let captured = loop {
        let m = reader
            .poll(Duration::from_secs(10))
            .expect("a genuine message")
            .unwrap();
        if m.headers().is_some() {
            break m.detach();
        }
    };
    let signature = captured
        .headers()
        .unwrap()
        .iter()
        .find(|h| h.key == HEADER)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8(v.to_vec()).unwrap());
    assert!(signature.is_some(), "publish --signing-key-file signs");
    for _ in 0..1_000 {
        send(captured.payload().unwrap(), signature.clone());
    }
    raw.flush(Duration::from_secs(30)).unwrap();

    let store = p("store");
    assert_eq!(
        common::aggregate_secure(
            &broker,
            "aggregator",
            &group,
            Path::new(&store),
            &[
                "--signatures",
                "required",
                "--reference-dir",
                reference.to_str().unwrap()
            ]
        )
        .unwrap(),
        0
    );
    oracle::assert_matches(
        &oracle::expected_from_import(Path::new(&export)),
        &oracle::actual_from_store(Path::new(&store)),
    );

    // Every forgery in the dead-letter topic, with its reason.
    let dlq: BaseConsumer = broker
        .client_config("admin")
        .set("group.id", format!("{prefix}dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    dlq.subscribe(&[&format!("{prefix}{}", owsu_schemas::topics::DEAD_LETTER)])
        .unwrap();
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = 0;
    while seen < 20 && Instant::now() < deadline {
        let Some(m) = dlq.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m.unwrap();
        let h = m.headers().unwrap();
        let get = |k: &str| {
            h.iter()
                .find(|x| x.key == k)
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        assert_eq!(get("field"), "signature");
        let reason = get("reason");
        let class = if reason.contains(&format!("of unit {B}, not of {A}")) {
            "another unit's key"
        } else if reason.contains("unsigned") {
            "unsigned"
        } else if reason.contains("does not match") {
            "altered"
        } else if reason.contains("not valid at") {
            "revoked"
        } else {
            panic!("unexpected reason {reason}")
        };
        *reasons.entry(class).or_default() += 1;
        seen += 1;
    }
    assert_eq!(
        reasons,
        BTreeMap::from([
            ("altered", 5),
            ("another unit's key", 5),
            ("revoked", 5),
            ("unsigned", 5)
        ])
    );
    assert!(dlq.poll(Duration::from_secs(2)).is_none(), "no more");
}
