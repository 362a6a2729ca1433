//! Steps several of these test binaries share (the harness in `src/` depends on no process
//! crate, so these live beside the tests that use the processes).

use std::path::Path;

use clap::Parser;

/// `owsu-aggregator run --until-caught-up` in this process, on the shared broker, with the
/// group `<prefix>agg`: what most tests run once the topics are filled.
pub fn aggregate(prefix: &str, store: &Path) -> anyhow::Result<i32> {
    owsu_aggregator::cli::run(owsu_aggregator::cli::Cli::parse_from([
        "owsu-aggregator",
        "run",
        "--brokers",
        owsu_tests::bootstrap(),
        "--topic-prefix",
        prefix,
        "--group",
        &format!("{prefix}agg"),
        "--store",
        store.to_str().expect("utf-8 path"),
        "--until-caught-up",
        "--metrics-addr",
        "",
    ]))
}
