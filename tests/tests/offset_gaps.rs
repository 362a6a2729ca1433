//! Committed offsets behind Kafka's log start: retention deleted events while no aggregator
//! ran. The aggregator must stop with an error naming the partition rather than skip them;
//! an operator's `--accept-gaps-by` resumes at the log start and records the gap in the lake,
//! once.

mod common;

use std::path::Path;
use std::time::Duration;

use owsu_tests::oracle;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

fn high_watermark(topic: &str) -> i64 {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", owsu_tests::bootstrap())
        .create()
        .unwrap();
    c.fetch_watermarks(topic, 0, Duration::from_secs(30))
        .unwrap()
        .1
}

/// What retention does, on demand: Kafka's DeleteRecords moves the log start of `topic`'s
/// partition 0 to `before`.
fn delete_records(topic: &str, before: i64) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", owsu_tests::bootstrap())
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(before))
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt
        .block_on(admin.delete_records(&tpl, &AdminOptions::new()))
        .unwrap();
    for e in r.elements() {
        assert!(
            e.error().is_ok(),
            "deleting records of {topic}: {:?}",
            e.error()
        );
    }
}

#[test]
fn offsets_behind_the_log_start_stop_the_aggregator_until_an_operator_accepts_the_gap() {
    let prefix = owsu_tests::random_prefix("gaps");
    owsu_tests::create_topics(&prefix, 1);
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    owsu_schemas::ids::write_secret_file(
        &dir.path().join("secret"),
        b"offset-gaps-test-0123456789",
    )
    .unwrap();
    common::simulate_2021(&p("year.jsonl"), "0.001", "17");
    // The year in two halves: the first is counted, the second's service events are then
    // deleted by "retention" before any aggregator reads them.
    let lines: Vec<String> = std::fs::read_to_string(p("year.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    std::fs::write(p("first.jsonl"), first.join("\n") + "\n").unwrap();
    std::fs::write(p("second.jsonl"), second.join("\n") + "\n").unwrap();
    let store = p("store");
    let publish = |f: &str| {
        assert_eq!(
            common::publish(&prefix, &p(f), &p("secret"), &p("outbox"), &[]),
            0,
            "publishing {f}"
        )
    };
    publish("first.jsonl");
    assert_eq!(common::aggregate(&prefix, Path::new(&store)).unwrap(), 0);
    let parse = |ls: &[String]| -> Vec<Value> {
        ls.iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let after_first = oracle::expected_from_lines(parse(first));
    oracle::assert_matches(&after_first, &oracle::actual_from_store(Path::new(&store)));

    let services = format!("{prefix}owsu.service-events.v1");
    let counted = high_watermark(&services);
    publish("second.jsonl");
    let published = high_watermark(&services);
    assert!(published > counted, "the second half has service events");
    delete_records(&services, published);

    // Not accepted: the run stops, naming the partition and what to do, and counts nothing.
    let err = common::aggregate(&prefix, Path::new(&store))
        .expect_err("a gap behind the log start stops the aggregator");
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!("{services}/0"))
            && msg.contains(&format!("{} events deleted", published - counted))
            && msg.contains("--accept-gaps-by"),
        "the error names the partition, the loss and the way out: {msg}"
    );
    oracle::assert_matches(&after_first, &oracle::actual_from_store(Path::new(&store)));
    assert!(
        !Path::new(&store).join("audit/offset_gaps").exists(),
        "nothing recorded without an operator"
    );

    // Accepted: everything Kafka still has is counted, and the gap is in the lake.
    assert_eq!(
        common::aggregate_with(
            &prefix,
            Path::new(&store),
            &["--accept-gaps-by", "Sok Dara"]
        )
        .unwrap(),
        0
    );
    let kept: Vec<Value> = parse(first)
        .into_iter()
        .chain(parse(second).into_iter().filter(|v| v["kind"] != "service"))
        .collect();
    oracle::assert_matches(
        &oracle::expected_from_lines(kept),
        &oracle::actual_from_store(Path::new(&store)),
    );
    let gaps = oracle::read_table(Path::new(&store), "offset_gaps");
    assert_eq!(gaps.height(), 1, "one gap recorded: {gaps}");
    let get_i64 = |c: &str| gaps.column(c).unwrap().i64().unwrap().get(0).unwrap();
    assert_eq!(get_i64("lake_offset"), counted - 1);
    assert_eq!(get_i64("log_start"), published);
    assert_eq!(get_i64("events_lost"), published - counted);
    let by = gaps
        .column("accepted_by")
        .unwrap()
        .str()
        .unwrap()
        .get(0)
        .unwrap()
        .to_owned();
    assert_eq!(by, "Sok Dara");
    let topic = gaps
        .column("topic")
        .unwrap()
        .str()
        .unwrap()
        .get(0)
        .unwrap()
        .to_owned();
    assert_eq!(topic, services);

    // The review says what its figures lack, and who accepted it.
    let review_dir = p("review");
    assert_eq!(
        common::jobs(&[
            "--store",
            &store,
            "review",
            "--year",
            "2021",
            "--out",
            &review_dir
        ]),
        0
    );
    let review: Value =
        serde_json::from_slice(&std::fs::read(Path::new(&review_dir).join("review.json")).unwrap())
            .unwrap();
    assert_eq!(
        review["lost_events"],
        serde_json::json!({"gaps": 1, "events": published - counted, "accepted_by": ["Sok Dara"]})
    );
    let html = std::fs::read_to_string(Path::new(&review_dir).join("review.html")).unwrap();
    assert!(
        html.contains(&format!(
            "{} events are in no figure",
            owsu_jobs::html::thousands(published - counted)
        )) && html.contains("Sok Dara"),
        "the review page states the loss"
    );

    // Past the gap, a plain run goes on without asking again, and records nothing more.
    assert_eq!(common::aggregate(&prefix, Path::new(&store)).unwrap(), 0);
    assert_eq!(
        oracle::read_table(Path::new(&store), "offset_gaps").height(),
        1
    );
}
