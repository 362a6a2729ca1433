//! The lake on S3: a real S3-compatible server (s3s-fs) started by the harness. A simulated year
//! aggregated into `s3://…` equals the oracle, no offset is committed twice, and the tables'
//! commits went through S3 conditional writes (a second writer of a version is refused).

use std::path::Path;

use clap::Parser;
use owsu_tests::oracle;

#[test]
fn the_lake_on_s3_matches_the_oracle() {
    let s3 = owsu_tests::S3Server::start("owsu-lake");
    for (k, v) in s3.env() {
        // This test binary holds this one test: nothing else reads the environment meanwhile.
        std::env::set_var(k, v);
    }
    let prefix = owsu_tests::random_prefix("s3");
    owsu_tests::create_topics(&prefix, 3);
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    owsu_schemas::ids::write_secret_file(&dir.path().join("secret"), b"s3-test-secret-0123456789")
        .unwrap();
    let producer = |args: &[&str]| {
        let mut v = vec!["owsu-producer"];
        v.extend_from_slice(args);
        owsu_producer::cli::run(owsu_producer::cli::Cli::parse_from(v)).expect("producer")
    };
    assert_eq!(
        producer(&[
            "simulate",
            "--year",
            "2021",
            "--scale",
            "0.003",
            "--seed",
            "6",
            "--out",
            &p("year.jsonl")
        ]),
        0
    );
    assert_eq!(
        producer(&[
            "publish",
            "--input",
            &p("year.jsonl"),
            "--brokers",
            owsu_tests::bootstrap(),
            "--topic-prefix",
            &prefix,
            "--id-secret-file",
            &p("secret"),
            "--outbox",
            &p("outbox"),
        ]),
        0
    );
    let store = "s3://owsu-lake/national";
    let run = |args: &[&str]| {
        let mut v = vec!["owsu-aggregator"];
        v.extend_from_slice(args);
        owsu_aggregator::cli::run(owsu_aggregator::cli::Cli::parse_from(v)).expect("aggregator")
    };
    assert_eq!(
        run(&[
            "run",
            "--brokers",
            owsu_tests::bootstrap(),
            "--topic-prefix",
            &prefix,
            "--group",
            &format!("{prefix}agg"),
            "--store",
            store,
            "--state-dir",
            &p("state"),
            "--until-caught-up",
            "--metrics-addr",
            "",
            "--max-batch",
            "5000",
        ]),
        0
    );
    oracle::assert_matches(
        &oracle::expected_from_import(Path::new(&p("year.jsonl"))),
        &oracle::actual_from_url(store),
    );
    // The objects really are in the S3 server's bucket, Delta logs and state snapshots included.
    let bucket = s3.root.join("owsu-lake/national");
    for t in [
        "raw/service_events/_delta_log",
        "summaries/services_daily/_delta_log",
        "state",
    ] {
        assert!(bucket.join(t).is_dir(), "{t} missing from the bucket");
    }
    // Compaction and a rebuild work on S3 too, and change no figure.
    assert_eq!(run(&["compact", "--store", store]), 0);
    assert_eq!(run(&["rebuild", "--store", store]), 0);
    oracle::assert_matches(
        &oracle::expected_from_import(Path::new(&p("year.jsonl"))),
        &oracle::actual_from_url(store),
    );
}

/// The commit safety Delta relies on: creating an object that exists is refused by the server.
#[test]
fn the_s3_server_refuses_to_overwrite_on_a_conditional_put() {
    use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
    let s3 = owsu_tests::S3Server::start("cond");
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&s3.endpoint)
        .with_allow_http(true)
        .with_access_key_id(s3.access_key)
        .with_secret_access_key(s3.secret_key)
        .with_region("us-east-1")
        .with_bucket_name("cond")
        .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch)
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let path = object_store::path::Path::from("_delta_log/00000000000000000001.json");
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        store
            .put_opts(&path, PutPayload::from("a"), create.clone())
            .await
            .unwrap();
        let again = store.put_opts(&path, PutPayload::from("b"), create).await;
        assert!(
            matches!(
                again,
                Err(object_store::Error::AlreadyExists { .. })
                    | Err(object_store::Error::Precondition { .. })
            ),
            "{again:?}"
        );
    });
}
