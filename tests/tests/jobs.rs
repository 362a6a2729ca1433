//! The three jobs over a store the real pipeline filled: the review's figures equal the
//! simulator's truth, a province's review holds nothing of other provinces, the researchers'
//! dataset reads the same in DuckDB, pandas and polars, and the oversight list finds every
//! planted problem.

mod common;

use std::path::Path;

use clap::Parser;

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn review_demand_and_oversight_over_a_real_pipeline() {
    let prefix = owsu_tests::random_prefix("jobs");
    owsu_tests::create_topics(&prefix, 6);
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_owned();
    let mut truth = None;
    for (year, scale) in [("2020", "0.01"), ("2021", "0.05")] {
        truth = Some(common::simulate_and_publish(
            &prefix,
            year,
            scale,
            dir.path(),
        ));
    }
    let truth = truth.expect("2021 simulated");
    assert_eq!(
        common::aggregate(&prefix, Path::new(&p("store"))).unwrap(),
        0
    );

    // The review equals what was generated, level by level, and shows the change on 2020.
    assert_eq!(
        common::jobs(&[
            "--store",
            &p("store"),
            "review",
            "--year",
            "2021",
            "--out",
            &p("review")
        ]),
        0
    );
    let review: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p("review/review.json")).unwrap()).unwrap();
    assert_eq!(review["previous_year_available"], true);
    for (i, lt) in [&truth.provincial, &truth.district].into_iter().enumerate() {
        let f = &review["facts"][i];
        assert_eq!(f["services_delivered"], lt.services_delivered, "{f}");
        assert_eq!(f["revenue_riel"], lt.revenue_riel);
        assert_eq!(f["complaints_received"], lt.complaints.received());
        assert_eq!(f["within_jurisdiction"], lt.complaints.within());
        assert_eq!(f["outside_jurisdiction"], lt.complaints.outside());
        assert_eq!(f["jurisdiction_undecided"], lt.complaints.undecided());
        assert_eq!(f["resolved"], lt.complaints.within_resolved);
        assert_eq!(f["more_info_required"], lt.complaints.more_info());
        assert!(f["services_yoy_pct"].as_f64().is_some());
    }
    let html = std::fs::read_to_string(p("review/review.html")).unwrap();
    assert!(
        html.contains("<svg")
            && html.contains("@media print")
            && !html.contains("http://cdn")
            && !html.contains("<script")
    );
    for csv in [
        "facts.csv",
        "by_sector.csv",
        "by_province.csv",
        "monthly.csv",
        "processing_times.csv",
        "completeness.csv",
        "reporting_gaps.csv",
    ] {
        assert!(Path::new(&p(&format!("review/{csv}"))).exists(), "{csv}");
    }

    // A province's own review: nothing of any other province in any output.
    assert_eq!(
        common::jobs(&[
            "--store",
            &p("store"),
            "review",
            "--year",
            "2021",
            "--scope",
            "KH-05",
            "--out",
            &p("review-KH-05")
        ]),
        0
    );
    let mut scoped_files = 0;
    for f in files_under(Path::new(&p("review-KH-05"))) {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, _) in text.match_indices("KH-") {
            let code: String = text[i..].chars().take(5).collect();
            assert_eq!(
                code,
                "KH-05",
                "{} mentions {}",
                f.display(),
                &text[i..(i + 7).min(text.len())]
            );
        }
        for other in ["Battambang", "Phnom Penh", "Siem Reap"] {
            assert!(!text.contains(other), "{} mentions {other}", f.display());
        }
        scoped_files += 1;
    }
    assert!(scoped_files >= 9);
    let scoped: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p("review-KH-05/review.json")).unwrap()).unwrap();
    assert!(scoped["facts"][2]["services_delivered"].as_i64().unwrap() > 0);
    assert!(
        scoped["facts"][2]["services_delivered"].as_i64()
            < review["facts"][2]["services_delivered"].as_i64()
    );

    // The researchers' dataset reads the same in three tools.
    assert_eq!(
        common::jobs(&[
            "--store",
            &p("store"),
            "demand",
            "--from",
            "2020-01",
            "--to",
            "2021-12",
            "--out",
            &p("demand")
        ]),
        0
    );
    let delivered = truth.provincial.services_delivered + truth.district.services_delivered;
    let dict = std::fs::read_to_string(p("demand/DATA_DICTIONARY.md")).unwrap();
    assert!(
        dict.contains("Computed from the lake's tables ")
            && dict.contains("services_daily@v")
            && dict.contains("latest day with figures: 2021-12-"),
        "the dataset states the table versions and latest day it includes: {dict}"
    );
    let script = r#"
import sys, duckdb, pandas as pd, polars as pl
d = sys.argv[1]
a = duckdb.sql(f"select sum(services_delivered) filter (where month like '2021-%'), sum(revenue_riel) filter (where month like '2021-%'), string_agg(distinct cast(year as varchar), ',' order by cast(year as varchar)) from read_parquet('{d}/sector_demand/**/*.parquet', hive_partitioning=true)").fetchall()[0]
b = pd.read_parquet(f"{d}/sector_demand")
b = b[b.month.str.startswith("2021-")]
c = pl.read_parquet(f"{d}/sector_demand/**/*.parquet", hive_partitioning=True).filter(pl.col("month").str.starts_with("2021-"))
cols = ",".join(pl.read_parquet(f"{d}/sector_demand/**/*.parquet", hive_partitioning=True).columns)
print(a[0], a[1], a[2], int(b.services_delivered.sum()), int(b.revenue_riel.sum()), c["services_delivered"].sum(), c["revenue_riel"].sum(), cols)
"#;
    let out = owsu_tests::run_python(script, &[&p("demand")]);
    let parts: Vec<&str> = out.split_whitespace().collect();
    let revenue = truth.provincial.revenue_riel + truth.district.revenue_riel;
    assert_eq!(
        &parts[..7],
        &[
            &delivered.to_string(),
            &revenue.to_string(),
            "2020,2021",
            &delivered.to_string(),
            &revenue.to_string(),
            &delivered.to_string(),
            &revenue.to_string()
        ],
        "{out}"
    );
    for col in parts[7].split(',') {
        assert!(
            dict.contains(&format!("`{col}`")),
            "column {col} is not in the data dictionary"
        );
    }

    // Oversight: every planted problem found.
    let code = common::jobs(&[
        "--store",
        &p("store"),
        "inactive",
        "--as-of",
        "2021-12-31",
        "--out",
        &p("inactive"),
    ]);
    assert_eq!(
        code,
        owsu_jobs::cli::EXIT_FLAGGED,
        "flags give the scheduler exit code 10"
    );
    let report: owsu_jobs::inactive::Report = {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(p("inactive/inactive.json")).unwrap()).unwrap();
        assert!(
            v["lake_versions"]["unit_days"].as_i64().is_some()
                && v["latest_day"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("2021-12-")),
            "the oversight list states the table versions and latest day it includes: {v}"
        );
        owsu_jobs::inactive::Report {
            as_of: chrono::NaiveDate::from_ymd_opt(2021, 12, 31).unwrap(),
            scope: None,
            lake_versions: Default::default(),
            latest_day: None,
            units_checked: v["units_checked"].as_u64().unwrap() as usize,
            flags: serde_json::from_value(v["flags"].clone()).unwrap(),
        }
    };
    let check = owsu::truth::check_truth(&report, &truth.planted);
    assert!(
        check.missed.is_empty(),
        "missed planted problems: {:?}",
        check.missed
    );
    assert_eq!(check.found, truth.planted.len());
    eprintln!(
        "oversight: {} planted problems found; {} units flagged without one: {:?}",
        check.found,
        check.unplanted_units.len(),
        check.unplanted_units
    );
    assert!(Path::new(&p("inactive/inactive.csv")).exists());

    // Reports are written under temporary names and renamed: none is left behind, and a second
    // run replaces a demand export's files whole (its 2020 partition goes when 2020 is not asked).
    assert_eq!(
        common::jobs(&[
            "--store",
            &p("store"),
            "demand",
            "--from",
            "2021-01",
            "--to",
            "2021-12",
            "--out",
            &p("demand")
        ]),
        0
    );
    assert!(!Path::new(&p("demand/sector_demand/year=2020")).exists());
    assert!(Path::new(&p("demand/sector_demand/year=2021/part-0.parquet")).exists());
    for out in ["review", "demand", "inactive"] {
        for f in files_under(&dir.path().join(out)) {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                !name.contains(".tmp-"),
                "temporary file left: {}",
                f.display()
            );
        }
    }

    // Jobs refuse what they cannot honestly report: a clear error, a non-zero exit, no report.
    let refused = |args: &[&str]| -> String {
        let mut v = vec!["owsu-jobs"];
        v.extend_from_slice(args);
        match owsu_jobs::cli::run(owsu_jobs::cli::Cli::parse_from(v)) {
            Ok(code) => panic!("{args:?} was not refused (exit {code})"),
            Err(e) => format!("{e:#}"),
        }
    };
    let store = p("store");
    let e = refused(&[
        "--store",
        &store,
        "review",
        "--year",
        "2019",
        "--out",
        &p("r2019"),
    ]);
    assert!(
        e.contains("no service or complaint figures for 2019"),
        "{e}"
    );
    assert!(
        !Path::new(&p("r2019")).exists(),
        "no report for a refused year"
    );
    let e = refused(&[
        "--store",
        &store,
        "demand",
        "--from",
        "2019-01",
        "--to",
        "2019-12",
        "--out",
        &p("d2019"),
    ]);
    assert!(e.contains("no service figures from 2019-01-01"), "{e}");
    let e = refused(&[
        "--store",
        &store,
        "inactive",
        "--as-of",
        "2019-06-30",
        "--out",
        &p("i2019"),
    ]);
    assert!(
        e.contains("no figures from") && e.contains("--as-of"),
        "{e}"
    );
    std::fs::create_dir_all(p("empty-store")).unwrap();
    let e = refused(&[
        "--store",
        &p("empty-store"),
        "review",
        "--year",
        "2021",
        "--out",
        &p("r-empty"),
    ]);
    assert!(e.contains("holds none of the summary tables"), "{e}");
    let e = refused(&[
        "--store", &store, "review", "--year", "2021", "--scope", "KH-99",
    ]);
    assert!(e.contains("not a unit or province code"), "{e}");
}
