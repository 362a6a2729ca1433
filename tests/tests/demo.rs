//! `owsu demo`, the README's first command, end to end on the harness's broker at a small scale:
//! the umbrella drives the producer, the aggregator and the jobs through their typed library
//! functions, and the 2021 review it writes equals what the simulator generated. A second run
//! reuses the published years and gives the same review.

use clap::Parser;
use owsu_producer::simulate::Truth;

fn demo(data_dir: &std::path::Path) -> i32 {
    let cli = owsu::demo::Cli::parse_from([
        "owsu",
        "demo",
        "--brokers",
        owsu_tests::bootstrap(),
        "--scale",
        "0.002",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    owsu::demo::run(cli).expect("owsu demo")
}

#[test]
fn the_demo_publishes_aggregates_and_reports_the_simulated_year() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    assert_eq!(demo(&data), 0);

    let truth: Truth =
        serde_json::from_slice(&std::fs::read(data.join("truth-2021.json")).unwrap()).unwrap();
    let review_path = data.join("reports/review-2021/review.json");
    let review: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&review_path).unwrap()).unwrap();
    let facts = review["facts"].as_array().expect("facts");
    for (row, level) in [(0, &truth.provincial), (1, &truth.district)] {
        assert_eq!(
            facts[row]["services_delivered"].as_u64(),
            Some(level.services_delivered),
            "{}",
            facts[row]["level"]
        );
        assert_eq!(
            facts[row]["revenue_riel"].as_i64(),
            Some(level.revenue_riel),
            "{}",
            facts[row]["level"]
        );
        assert_eq!(
            facts[row]["complaints_received"].as_u64(),
            Some(level.complaints.received()),
            "{}",
            facts[row]["level"]
        );
    }
    for output in [
        "reports/review-2021/review.html",
        "reports/quality-2021/quality.html",
        "reports/inactive/inactive.csv",
        "reports/demand/sector_demand.csv",
        "store/summaries/services_daily/_delta_log",
        "store/raw/service_events/_delta_log",
    ] {
        assert!(data.join(output).exists(), "{output} was not written");
    }

    // Again: nothing is published twice, and the figures stay what they were.
    let before = std::fs::read(&review_path).unwrap();
    assert_eq!(demo(&data), 0);
    assert_eq!(std::fs::read(&review_path).unwrap(), before);
}
