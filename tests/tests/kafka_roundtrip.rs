//! 10,000 encoded events through a real broker and back: every field survives.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use owsu_producer::import::pseudonymise;
use owsu_producer::kafka::KafkaArgs;
use owsu_producer::publish::{Publisher, PublisherConfig};
use owsu_producer::simulate::{Emit, SimConfig, Simulator};
use owsu_schemas::ids::IdHasher;
use owsu_schemas::record::{Event, RecordKind};
use owsu_schemas::Reference;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message};

#[test]
fn ten_thousand_events_round_trip_through_kafka() {
    let prefix = owsu_tests::random_prefix("roundtrip");
    owsu_tests::create_topics(&prefix, 6);
    let reference = Reference::builtin();
    let hasher = IdHasher::new(b"roundtrip-test-secret-0123").unwrap();
    let sim = Simulator::new(
        &reference,
        SimConfig {
            scale: 0.02,
            transport_noise: false,
            ..SimConfig::new(2021, 11)
        },
    );
    let mut sent: Vec<Event> = Vec::new();
    let mut kinds = HashMap::new();
    sim.run(|e| {
        if let Emit::Event(e) = e {
            if sent.len() < 10_000 {
                let e = pseudonymise(e.clone(), &hasher);
                *kinds.entry(e.kind()).or_insert(0) += 1;
                sent.push(e);
            }
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(sent.len(), 10_000);
    assert!(
        kinds.len() == 3,
        "all three record kinds are exercised: {kinds:?}"
    );

    let outbox = tempfile::tempdir().unwrap();
    let mut publisher = Publisher::new(PublisherConfig {
        kafka: KafkaArgs::local(owsu_tests::bootstrap(), &prefix),
        outbox_dir: outbox.path().to_path_buf(),
        delivery_timeout: Duration::from_secs(30),
        segment_records: 4_000,
        signing: None,
    })
    .unwrap();
    publisher.stage(&sent).unwrap();
    let report = publisher.deliver().unwrap();
    assert_eq!((report.delivered, report.pending), (10_000, 0));
    assert_eq!(
        publisher.outbox().pending().unwrap(),
        0,
        "acknowledged events leave the outbox"
    );

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", owsu_tests::bootstrap())
        .set("group.id", format!("{prefix}check"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let topics: Vec<String> = RecordKind::ALL
        .iter()
        .map(|k| format!("{prefix}{}", k.topic()))
        .collect();
    consumer
        .subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())
        .unwrap();
    let mut received: HashMap<String, Event> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while received.len() < sent.len() && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(500)) {
            let m = m.unwrap();
            let e = owsu_schemas::decode(m.payload().unwrap()).unwrap();
            assert_eq!(
                m.key().unwrap(),
                e.unit_code().as_bytes(),
                "key is the unit code"
            );
            assert!(
                m.topic().ends_with(e.kind().topic()),
                "{} carries {:?}",
                m.topic(),
                e.kind()
            );
            assert_eq!(
                m.partition(),
                owsu_tests::java_partition(m.key().unwrap(), 6),
                "{} is on the partition Kafka's Java client would choose",
                e.unit_code()
            );
            received.insert(e.identity(), e);
        }
    }
    assert_eq!(received.len(), sent.len(), "every message came back");
    for e in &sent {
        assert_eq!(
            received.get(&e.identity()),
            Some(e),
            "every field survives the trip"
        );
    }
}
