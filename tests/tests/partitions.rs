//! The aggregator refuses to run when the event topics' partition count is not the one its lake
//! was built from (a unit's state lives on the partition its key hashes to), and says what to do.

mod common;

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// Waits until the broker's metadata shows each topic with `n` partitions.
fn wait_for(topics: &[String], n: usize) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", owsu_tests::bootstrap())
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    for t in topics {
        loop {
            let md = c.fetch_metadata(Some(t), Duration::from_secs(10)).unwrap();
            let ready = md
                .topics()
                .iter()
                .any(|m| m.error().is_none() && m.partitions().len() == n);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "{t} never showed {n} partitions");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn set_partitions(topic: &str, n: i32) {
    owsu_tests::kafka_tool(
        "org.apache.kafka.tools.TopicCommand",
        &[
            "--bootstrap-server",
            owsu_tests::bootstrap(),
            "--alter",
            "--topic",
            topic,
            "--partitions",
            &n.to_string(),
        ],
    );
}

#[test]
fn a_changed_partition_count_stops_the_aggregator_with_what_to_do() {
    let prefix = owsu_tests::random_prefix("partitions");
    owsu_tests::create_topics(&prefix, 3);
    let topics: Vec<String> = owsu_schemas::RecordKind::ALL
        .iter()
        .map(|k| format!("{prefix}{}", k.topic()))
        .collect();
    wait_for(&topics, 3);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    assert_eq!(
        common::aggregate(&prefix, &store).unwrap(),
        0,
        "3 partitions: fine"
    );
    let recorded = std::fs::read_to_string(store.join("state/partitions.json")).unwrap();
    assert!(recorded.contains("service-events.v1\": 3"), "{recorded}");

    let topic = |k: owsu_schemas::RecordKind| format!("{prefix}{}", k.topic());
    set_partitions(&topic(owsu_schemas::RecordKind::Service), 4);
    wait_for(&topics[..1], 4);
    let e = format!("{:#}", common::aggregate(&prefix, &store).unwrap_err());
    assert!(e.contains("different partition counts"), "{e}");

    for k in [
        owsu_schemas::RecordKind::Complaint,
        owsu_schemas::RecordKind::UnitDay,
    ] {
        set_partitions(&topic(k), 4);
    }
    wait_for(&topics, 4);
    let e = format!("{:#}", common::aggregate(&prefix, &store).unwrap_err());
    assert!(
        e.contains("has 4 partitions, but this lake was built from 3")
            && e.contains("another --store"),
        "{e}"
    );
    // A new lake from the same (now 4-partition) topics is fine.
    assert_eq!(
        common::aggregate(&prefix, &dir.path().join("store2")).unwrap(),
        0
    );
}
