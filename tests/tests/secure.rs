//! Secure mode of the project's Kafka (issue 11, items 1 and 2): `kafka.sh start --secure`
//! serves TLS with SASL/SCRAM-SHA-512 and authorises every request by ACL. A plaintext client,
//! a client without credentials and one with a wrong password are refused; an office principal
//! can write the event topics and nothing else (no reading, no dead-letter topic, no aggregator
//! group); and the whole pipeline runs with an office and an aggregator principal, every event
//! signed with its unit's key and signatures required, equal to the oracle. A revoked office can
//! no longer connect.

mod common;

use std::path::Path;
use std::time::Duration;

use owsu_tests::{oracle, PrivateBroker};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};

/// Delivery failures a producer saw.
#[derive(Default)]
struct Failures(std::sync::Mutex<Vec<String>>);

impl ClientContext for Failures {}

impl ProducerContext for Failures {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.0.lock().unwrap().push(e.to_string());
        }
    }
}

fn refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn client(bootstrap: &str, security: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("socket.timeout.ms", "5000")
        .set("message.timeout.ms", "8000");
    for (k, v) in security {
        c.set(*k, *v);
    }
    c
}

/// Whether a client with these settings can read the cluster's metadata.
fn connects(bootstrap: &str, security: &[(&str, &str)]) -> bool {
    let c: BaseConsumer = client(bootstrap, security).create().unwrap();
    c.fetch_metadata(None, Duration::from_secs(8)).is_ok()
}

#[test]
fn secure_mode_authenticates_authorises_and_runs_the_pipeline() {
    let prefix = owsu_tests::random_prefix("secure");
    let broker = PrivateBroker::start_secure("secure", &prefix, 2);
    let bootstrap = broker.bootstrap();
    let ca = broker.ca();
    let ca = ca.to_str().unwrap();
    let group = format!("{prefix}agg");
    let handover = broker.user(&["add", "office-kh-01", "--role", "office"]);
    assert!(
        handover.contains("OWSU_KAFKA_SASL_USERNAME=office-kh-01")
            && !handover.contains(
                std::fs::read_to_string(broker.password_file("office-kh-01"))
                    .unwrap()
                    .trim()
            ),
        "the hand-over names the password file, never the password: {handover}"
    );
    broker.user(&[
        "add",
        "aggregator",
        "--role",
        "aggregator",
        "--group",
        &group,
    ]);
    let office_pw = std::fs::read_to_string(broker.password_file("office-kh-01")).unwrap();
    let office_pw = office_pw.trim();
    let as_user = |user: &'static str, pw: &str| -> Vec<(&'static str, String)> {
        vec![
            ("security.protocol", "sasl_ssl".into()),
            ("sasl.mechanism", "SCRAM-SHA-512".into()),
            ("sasl.username", user.into()),
            ("sasl.password", pw.into()),
            ("ssl.ca.location", ca.into()),
        ]
    };
    let office = as_user("office-kh-01", office_pw);

    // Refused: plaintext to the TLS port, TLS without credentials, a wrong password.
    assert!(!connects(&bootstrap, &[("security.protocol", "plaintext")]));
    assert!(!connects(
        &bootstrap,
        &[("security.protocol", "ssl"), ("ssl.ca.location", ca)]
    ));
    let wrong = as_user("office-kh-01", "not-the-password");
    assert!(!connects(&bootstrap, &refs(&wrong)));
    assert!(connects(&bootstrap, &refs(&office)));

    // An office writes the event topics and nothing else.
    let topic = |t: &str| format!("{prefix}{t}");
    let producer: BaseProducer<Failures> = client(&bootstrap, &refs(&office))
        .create_with_context(Failures::default())
        .unwrap();
    producer
        .send(
            BaseRecord::<str, [u8]>::to(&topic(owsu_schemas::topics::DEAD_LETTER))
                .key("KH-01")
                .payload(b"x".as_slice()),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(10)).ok();
    let failures = producer.context().0.lock().unwrap().clone();
    assert!(
        failures.iter().any(|e| e.contains("uthoriz")),
        "an office cannot write the dead-letter topic: {failures:?}"
    );
    let reader: BaseConsumer = client(&bootstrap, &refs(&office))
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader
        .subscribe(&[&topic(owsu_schemas::topics::SERVICE_EVENTS)])
        .unwrap();
    let mut denied = None;
    for _ in 0..20 {
        if let Some(Err(e)) = reader.poll(Duration::from_millis(500)) {
            denied = Some(e.to_string());
            break;
        }
    }
    let denied = denied.expect("an office may neither read nor join the aggregator's group");
    assert!(denied.contains("uthoriz"), "{denied}");

    // The pipeline with an office principal publishing, every event signed with its unit's
    // key, and an aggregator principal reading that requires signatures.
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    owsu_schemas::ids::write_secret_file(&dir.path().join("secret"), b"secure-test-0123456789")
        .unwrap();
    let reference = owsu_schemas::reference::Reference::load(None).unwrap();
    owsu::secure::write_keys(
        &reference,
        &dir.path().join("keys"),
        &dir.path().join("reference"),
    )
    .unwrap();
    common::simulate_2021(&p("year.jsonl"), "0.002", "3");
    assert_eq!(
        common::publish_secure(
            &broker,
            "office-kh-01",
            &p("year.jsonl"),
            &p("secret"),
            &p("outbox"),
            &["--signing-key-dir", &p("keys")]
        ),
        0
    );
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
                &p("reference")
            ]
        )
        .unwrap(),
        0
    );
    oracle::assert_matches(
        &oracle::expected_from_import(Path::new(&p("year.jsonl"))),
        &oracle::actual_from_store(Path::new(&store)),
    );

    // A revoked office can no longer connect.
    broker.user(&["revoke", "office-kh-01"]);
    assert!(!connects(&bootstrap, &refs(&office)));
}
