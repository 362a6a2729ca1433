//! `owsu demo`, the README's first command, end to end on the harness's broker at a small scale,
//! run as the real binary: the umbrella drives the producer, the aggregator and the jobs through
//! their typed library functions, the 2021 review it writes equals what the simulator generated,
//! and what it prints fits on two screens. A second run reuses the published years and gives the
//! same review.

use owsu_producer::simulate::Truth;

/// Two screens of the classic 80 × 24 terminal.
const TWO_SCREENS: usize = 48;

/// Runs `owsu demo` on `data_dir`; its exit code and everything it printed (standard output
/// and error, as a terminal shows them; the progress bars clear themselves).
fn demo(data_dir: &std::path::Path) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_owsu"))
        .args([
            "demo",
            "--brokers",
            owsu_tests::bootstrap(),
            "--scale",
            "0.002",
            "--data-dir",
        ])
        .arg(data_dir)
        .output()
        .expect("run owsu demo");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), printed)
}

#[test]
fn the_demo_publishes_aggregates_and_reports_the_simulated_year() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let (code, printed) = demo(&data);
    assert_eq!(code, 0, "owsu demo failed:\n{printed}");
    let lines = printed.lines().count();
    assert!(
        lines <= TWO_SCREENS,
        "the demo printed {lines} lines, more than two screens ({TWO_SCREENS}):\n{printed}"
    );
    assert!(
        !printed.contains(" INFO ") && !printed.contains(" WARN "),
        "the demo printed log lines (they belong in its log file, or on the terminal with -v):\n{printed}"
    );
    assert!(
        printed.contains("Outputs:"),
        "the demo did not list its outputs:\n{printed}"
    );

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
    let (code, printed) = demo(&data);
    assert_eq!(code, 0, "owsu demo (second run) failed:\n{printed}");
    assert!(printed.contains("already published"), "{printed}");
    assert_eq!(std::fs::read(&review_path).unwrap(), before);
}
