//! `--until-caught-up` means everything present at start-up is in the lake, not only this
//! instance's share: while another member of the group holds partitions (here a member that
//! never processes anything, like one `kill -9`ed whose session has not expired yet), the run
//! does not stop; once that member is gone it takes its partitions over and stops with every
//! event counted.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use owsu_tests::oracle;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

#[test]
fn a_batch_run_waits_for_partitions_another_member_holds() {
    let prefix = owsu_tests::random_prefix("caughtup");
    owsu_tests::create_topics(&prefix, 4);
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    owsu_schemas::ids::write_secret_file(&dir.path().join("secret"), b"caught-up-test-0123456789")
        .unwrap();
    common::simulate_2021(&p("year.jsonl"), "0.002", "9");
    assert_eq!(
        common::publish(&prefix, &p("year.jsonl"), &p("secret"), &p("outbox"), &[]),
        0
    );
    // A member of the aggregator's group that holds partitions and does nothing.
    let group = format!("{prefix}agg");
    let topics: Vec<String> = ["service-events", "complaint-events", "unit-days"]
        .iter()
        .map(|t| format!("{prefix}owsu.{t}.v1"))
        .collect();
    let ghost: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", owsu_tests::bootstrap())
        .set("group.id", &group)
        .set("partition.assignment.strategy", "range")
        .set("session.timeout.ms", "6000")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    ghost
        .subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())
        .unwrap();
    let start = Instant::now();
    while ghost.assignment().unwrap().count() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the ghost joined"
        );
        ghost.poll(Duration::from_millis(100));
    }
    let store = p("store");
    let run = {
        let (prefix, store) = (prefix.clone(), store.clone());
        std::thread::spawn(move || common::aggregate(&prefix, Path::new(&store)).unwrap())
    };
    // Keep the ghost alive (polling keeps its session) while the run does its own share.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        ghost.poll(Duration::from_millis(100));
        assert!(
            !run.is_finished(),
            "the run stopped while another member held partitions it had not processed"
        );
    }
    assert!(
        ghost.assignment().unwrap().count() > 0,
        "the ghost still holds partitions"
    );
    // The ghost leaves: the run takes its partitions over and finishes.
    drop(ghost);
    assert_eq!(run.join().unwrap(), 0);
    oracle::assert_matches(
        &oracle::expected_from_import(Path::new(&p("year.jsonl"))),
        &oracle::actual_from_store(Path::new(&store)),
    );
}
