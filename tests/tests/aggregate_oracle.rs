//! A simulated year, published twice through `owsu-producer publish`, aggregated by
//! `owsu-aggregator run --until-caught-up`: every unit × day × sector × service figure equals
//! the oracle's; `rebuild` gives identical summaries; DuckDB and pandas read the same totals.

use std::path::Path;

use clap::Parser;
use owsu_tests::oracle;

fn producer(args: &[&str]) -> i32 {
    let mut v = vec!["owsu-producer"];
    v.extend_from_slice(args);
    owsu_producer::cli::run(owsu_producer::cli::Cli::parse_from(v)).expect("producer command")
}

fn aggregator(args: &[&str]) -> i32 {
    let mut v = vec!["owsu-aggregator"];
    v.extend_from_slice(args);
    owsu_aggregator::cli::run(owsu_aggregator::cli::Cli::parse_from(v)).expect("aggregator command")
}

fn sorted_table(store: &Path, table: &str) -> polars::prelude::DataFrame {
    let df = oracle::read_table(store, table);
    let cols: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|c| c.to_string())
        .collect();
    df.sort(cols, Default::default()).unwrap()
}

#[test]
fn simulated_year_matches_the_oracle_exactly() {
    let prefix = owsu_tests::random_prefix("oracle");
    owsu_tests::create_topics(&prefix, 4);
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    std::fs::write(p("secret"), "oracle-test-secret-0123456789").unwrap();
    assert_eq!(
        producer(&[
            "simulate",
            "--year",
            "2021",
            "--scale",
            "0.01",
            "--seed",
            "3",
            "--out",
            &p("year.jsonl")
        ]),
        0
    );
    let publish = [
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
    ];
    assert_eq!(producer(&publish), 0);
    // Publishing the same file again must not change any downstream count.
    assert_eq!(producer(&publish), 0);

    let group = format!("{prefix}agg");
    let run = [
        "run",
        "--brokers",
        owsu_tests::bootstrap(),
        "--topic-prefix",
        &prefix,
        "--group",
        &group,
        "--store",
        &p("store"),
        "--until-caught-up",
        "--metrics-addr",
        "",
    ];
    assert_eq!(aggregator(&run), 0);

    let expected = oracle::expected_from_import(Path::new(&p("year.jsonl")));
    assert!(
        expected.services.len() > 1000 && expected.complaints.len() > 50,
        "the year is not trivial"
    );
    let store = Path::new(&p("store")).to_path_buf();
    oracle::assert_matches(&expected, &oracle::actual_from_store(&store));

    // Rebuilding from raw gives the same summaries, row for row.
    let before: Vec<_> = [
        "services_daily",
        "complaints_daily",
        "unit_days",
        "processing_times",
    ]
    .iter()
    .map(|t| sorted_table(&store, t))
    .collect();
    assert_eq!(aggregator(&["rebuild", "--store", &p("store")]), 0);
    for (i, t) in [
        "services_daily",
        "complaints_daily",
        "unit_days",
        "processing_times",
    ]
    .iter()
    .enumerate()
    {
        let after = sorted_table(&store, t);
        assert!(before[i].height() > 0, "{t} is empty");
        assert!(
            before[i].equals_missing(&after),
            "{t} differs after rebuild"
        );
    }

    // Other readers see the same totals, in one line each.
    let delivered: i64 = expected.services.values().map(|f| f.delivered).sum();
    let revenue: i64 = expected.services.values().map(|f| f.revenue_riel).sum();
    let glob = format!("{}/summaries/services_daily/**/*.parquet", store.display());
    let duck = owsu_tests::run_python(
        "import duckdb,sys; print(duckdb.sql(f\"select sum(services_delivered), sum(revenue_riel) from read_parquet('{sys.argv[1]}', hive_partitioning=true)\").fetchall()[0])",
        &[&glob],
    );
    assert_eq!(duck.trim(), format!("({delivered}, {revenue})"));
    let pandas = owsu_tests::run_python(
        "import pandas as pd,sys; df=pd.read_parquet(sys.argv[1]); print(int(df.services_delivered.sum()), int(df.revenue_riel.sum()), sorted(df.year.astype(str).unique()))",
        &[&format!("{}/summaries/services_daily", store.display())],
    );
    assert_eq!(pandas.trim(), format!("{delivered} {revenue} ['2021']"));
}
