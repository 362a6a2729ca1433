//! A simulated year, published twice through `owsu-producer publish`, aggregated by
//! `owsu-aggregator run --until-caught-up`: every unit × day × sector × service figure equals
//! the oracle's; `rebuild` gives identical summaries; the Python `deltalake` package opens every
//! table, and DuckDB, pandas and polars over the files it lists read the same totals.

mod common;

use std::path::Path;

use clap::Parser;
use owsu_tests::oracle;

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
    owsu_schemas::ids::write_secret_file(
        &dir.path().join("secret"),
        b"oracle-test-secret-0123456789",
    )
    .unwrap();
    assert_eq!(
        common::producer(&[
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
    assert_eq!(common::producer(&publish), 0);
    // Publishing the same file again must not change any downstream count.
    assert_eq!(common::producer(&publish), 0);

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
    let store_arg = p("store");
    let before: Vec<_> = [
        "services_daily",
        "complaints_daily",
        "unit_days",
        "processing_times",
    ]
    .iter()
    .map(|t| sorted_table(&store, t))
    .collect();
    // In memory (the default budget holds this year), then with no memory budget at all: every
    // partition's state moves to disk after the first slice of raw.
    for budget in [None, Some("0")] {
        let mut args = vec!["rebuild", "--store", &store_arg];
        if let Some(b) = budget {
            args.extend(["--memory-mib", b]);
        }
        assert_eq!(aggregator(&args), 0);
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
                "{t} differs after rebuild (memory budget {budget:?})"
            );
        }
    }

    // Other readers see the same totals: the Python deltalake package opens every table and
    // lists its active files; DuckDB reads those files; polars reads the table itself.
    let delivered: i64 = expected.services.values().map(|f| f.delivered).sum();
    let revenue: i64 = expected.services.values().map(|f| f.revenue_riel).sum();
    let tables = owsu_tests::run_python(
        "import sys; from deltalake import DeltaTable\n\
         for t in ['raw/service_events','raw/complaint_events','raw/unit_days','summaries/services_daily','summaries/complaints_daily','summaries/unit_days','summaries/processing_times']:\n\
         \u{20}   d = DeltaTable(sys.argv[1] + '/' + t); print(t, d.version(), d.to_pyarrow_table().num_rows > 0)",
        &[store.to_str().unwrap()],
    );
    assert_eq!(tables.lines().count(), 7, "{tables}");
    assert!(tables.lines().all(|l| l.ends_with("True")), "{tables}");
    let duck = owsu_tests::run_python(
        "import duckdb,sys; from deltalake import DeltaTable\n\
         files = DeltaTable(sys.argv[1]).file_uris()\n\
         print(duckdb.sql(f\"select sum(services_delivered), sum(revenue_riel) from read_parquet({files})\").fetchall()[0])",
        &[&format!("{}/summaries/services_daily", store.display())],
    );
    assert_eq!(duck.trim(), format!("({delivered}, {revenue})"));
    let pl = owsu_tests::run_python(
        "import polars as pl,sys; df=pl.read_delta(sys.argv[1]); print(df['services_delivered'].sum(), df['revenue_riel'].sum(), sorted(df['date'].dt.year().unique().to_list()))",
        &[&format!("{}/summaries/services_daily", store.display())],
    );
    assert_eq!(pl.trim(), format!("{delivered} {revenue} [2021]"));
}

/// A late bulk re-import: the same kind of year with its events in random order. Every figure
/// still equals the oracle's, and the raw tables hold one file per batch, not one per day.
#[test]
fn shuffled_events_match_the_oracle_and_make_few_files() {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let prefix = owsu_tests::random_prefix("shuffled");
    owsu_tests::create_topics(&prefix, 4);
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    owsu_schemas::ids::write_secret_file(
        &dir.path().join("secret"),
        b"oracle-test-secret-0123456789",
    )
    .unwrap();
    assert_eq!(
        common::producer(&[
            "simulate",
            "--year",
            "2021",
            "--scale",
            "0.005",
            "--seed",
            "8",
            "--out",
            &p("ordered.jsonl")
        ]),
        0
    );
    let mut lines: Vec<String> = std::fs::read_to_string(p("ordered.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.shuffle(&mut rand::rngs::StdRng::seed_from_u64(8));
    std::fs::write(p("year.jsonl"), lines.join("\n") + "\n").unwrap();
    assert_eq!(
        common::producer(&[
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
    let group = format!("{prefix}agg");
    assert_eq!(
        aggregator(&[
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
            "--max-batch",
            "20000",
        ]),
        0
    );
    let store = Path::new(&p("store")).to_path_buf();
    oracle::assert_matches(
        &oracle::expected_from_import(Path::new(&p("year.jsonl"))),
        &oracle::actual_from_store(&store),
    );
    oracle::assert_no_offset_twice(&store);
    // ~52,000 events in batches of 20,000: at most a handful of raw files per table.
    for t in [
        "raw/service_events",
        "raw/complaint_events",
        "raw/unit_days",
    ] {
        let n = oracle::files_on_disk(&store, t);
        assert!((1..=6).contains(&n), "{t}: {n} raw files");
    }
}
