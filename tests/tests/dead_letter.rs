//! 100 garbage messages mixed into a 100,000-event stream: all 100 reach the dead-letter topic
//! with a reason and their source, and every good event is counted.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use owsu_producer::import::{pseudonymise, to_import_json};
use owsu_producer::kafka::KafkaArgs;
use owsu_producer::publish::{Publisher, PublisherConfig};
use owsu_producer::simulate::{Emit, SimConfig, Simulator};
use owsu_schemas::ids::IdHasher;
use owsu_schemas::record::{Event, RecordKind};
use owsu_schemas::Reference;
use owsu_tests::oracle;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message};

#[test]
fn garbage_goes_to_the_dead_letter_topic_and_good_events_are_all_counted() {
    let prefix = owsu_tests::random_prefix("dlq");
    owsu_tests::create_topics(&prefix, 4);
    let reference = Reference::builtin();
    let hasher = IdHasher::new(b"dead-letter-test-secret-0123").unwrap();
    let sim = Simulator::new(
        &reference,
        SimConfig {
            scale: 0.02,
            transport_noise: false,
            ..SimConfig::new(2021, 5)
        },
    );
    let mut good: Vec<Event> = Vec::new();
    sim.run(|e| {
        if let Emit::Event(e) = e {
            if good.len() < 100_000 {
                good.push(pseudonymise(e.clone(), &hasher));
            }
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(good.len(), 100_000);
    let dir = tempfile::tempdir().unwrap();
    let import = dir.path().join("good.jsonl");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&import).unwrap());
    for e in &good {
        serde_json::to_writer(&mut w, &to_import_json(e)).unwrap();
        w.write_all(b"\n").unwrap();
    }
    w.flush().unwrap();

    let mut publisher = Publisher::new(PublisherConfig {
        kafka: KafkaArgs::local(owsu_tests::bootstrap(), &prefix),
        outbox_dir: dir.path().join("outbox"),
        delivery_timeout: Duration::from_secs(30),
        segment_records: 50_000,
        signing: None,
    })
    .unwrap();
    // Half the good events, then the garbage, then the rest: bad records sit between good ones.
    publisher.stage(&good[..50_000]).unwrap();
    assert_eq!(publisher.deliver().unwrap().pending, 0);
    let raw: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", owsu_tests::bootstrap())
        .create()
        .unwrap();
    let services = format!("{prefix}{}", RecordKind::Service.topic());
    let unit_days = format!("{prefix}{}", RecordKind::UnitDay.topic());
    let mut bad_unit = good
        .iter()
        .find(|e| e.kind() == RecordKind::Service)
        .unwrap()
        .clone();
    if let Event::Service(s) = &mut bad_unit {
        s.unit_code = "KH-99".into();
    }
    let valid_but_wrong = owsu_schemas::encode(&bad_unit).unwrap();
    let mut wrong_fingerprint = owsu_schemas::encode(&good[0]).unwrap();
    wrong_fingerprint[3] ^= 0x5a;
    let a_complaint_on_the_unit_day_topic = owsu_schemas::encode(
        good.iter()
            .find(|e| e.kind() == RecordKind::Complaint)
            .unwrap(),
    )
    .unwrap();
    let mut garbage: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..100u32 {
        let payload = match i % 5 {
            0 => format!("{{\"not\": \"avro\", \"i\": {i}}}").into_bytes(),
            1 => (0..(i % 7 + 3)).map(|b| (b * 37 + i) as u8).collect(),
            2 => valid_but_wrong.clone(),
            3 => wrong_fingerprint.clone(),
            _ => a_complaint_on_the_unit_day_topic.clone(),
        };
        let topic = if i % 5 == 4 {
            unit_days.clone()
        } else {
            services.clone()
        };
        garbage.push((topic, payload));
    }
    for (topic, payload) in &garbage {
        raw.send(
            BaseRecord::<str, [u8]>::to(topic)
                .key("KH-01")
                .payload(payload),
        )
        .unwrap();
    }
    raw.flush(Duration::from_secs(30)).unwrap();
    publisher.stage(&good[50_000..]).unwrap();
    assert_eq!(publisher.deliver().unwrap().pending, 0);

    let store = dir.path().join("store");
    assert_eq!(common::aggregate(&prefix, store.as_path()).unwrap(), 0);

    // Every dead letter carries its reason and where it came from.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", owsu_tests::bootstrap())
        .set("group.id", format!("{prefix}dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer
        .subscribe(&[&format!("{prefix}{}", owsu_schemas::topics::DEAD_LETTER)])
        .unwrap();
    let mut reasons: HashMap<String, usize> = HashMap::new();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen < 100 && Instant::now() < deadline {
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
        };
        let reason = get("reason").expect("reason header");
        assert!(
            get("source.topic").is_some()
                && get("source.partition").is_some()
                && get("source.offset").is_some()
        );
        let class = if reason.contains("unknown writer schema") {
            "unknown schema"
        } else if reason.contains("unit_code") {
            assert_eq!(get("field").as_deref(), Some("unit_code"));
            "validation"
        } else if reason.contains("record on the") {
            "wrong topic"
        } else {
            assert!(reason.starts_with("not decodable"), "{reason}");
            "undecodable"
        };
        *reasons.entry(class.into()).or_default() += 1;
        seen += 1;
    }
    assert_eq!(
        seen, 100,
        "every garbage message is in the dead-letter topic: {reasons:?}"
    );
    assert_eq!(reasons["validation"], 20);
    assert_eq!(reasons["unknown schema"], 20);
    assert_eq!(reasons["wrong topic"], 20);
    assert_eq!(reasons["undecodable"], 40);
    assert!(
        consumer.poll(Duration::from_secs(2)).is_none(),
        "no more than the 100"
    );

    // And every good event counted: the summaries equal the oracle of the good events alone.
    oracle::assert_matches(
        &oracle::expected_from_import(&import),
        &oracle::actual_from_store(&store),
    );
}
