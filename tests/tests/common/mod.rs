//! Steps several of these test binaries share (the harness in `src/` depends on no process
//! crate, so these live beside the tests that use the processes).

// Each test binary compiles this module and uses some of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use clap::Parser;

/// Set in a child process of a test binary with its own `main` (the fault suite, the crash
/// tests): the JSON list of `owsu-aggregator` (or `owsu-producer`) arguments it runs.
const CHILD_ENV: &str = "OWSU_TEST_CHILD";

/// This test binary started again as the process `args` names (`["owsu-aggregator", "run",
/// …]`): a real process, with its own pid, that a test can kill, stop and resume. The binary's
/// `main` must call [`run_as_child_if_asked`] first.
pub(crate) fn child_process(args: &[String]) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("the test binary's path"));
    c.env(
        CHILD_ENV,
        serde_json::to_string(args).expect("arguments as JSON"),
    );
    c
}

/// In a process [`child_process`] started: runs its command as the real binary does (logs on
/// standard error) and exits with its status. Otherwise returns at once.
pub(crate) fn run_as_child_if_asked() {
    let Ok(args) = std::env::var(CHILD_ENV) else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&args).expect("child arguments");
    let result = if args[0] == "owsu-producer" {
        let cli = owsu_producer::cli::Cli::parse_from(&args);
        owsu_runtime::logging::init(cli.log.log_format);
        owsu_producer::cli::run(cli)
    } else {
        let cli = owsu_aggregator::cli::Cli::parse_from(&args);
        owsu_runtime::logging::init(cli.log.log_format);
        owsu_aggregator::cli::run(cli)
    };
    let code = result.unwrap_or_else(|e| {
        eprintln!("{}: {e:#}", args[0]);
        1
    });
    std::process::exit(code);
}

/// `owsu-aggregator run --until-caught-up` in this process, on the shared broker, with the
/// group `<prefix>agg`: what most tests run once the topics are filled.
pub(crate) fn aggregate(prefix: &str, store: &Path) -> anyhow::Result<i32> {
    aggregate_with(prefix, store, &[])
}

/// [`aggregate`] with more arguments of `owsu-aggregator run`.
pub(crate) fn aggregate_with(prefix: &str, store: &Path, extra: &[&str]) -> anyhow::Result<i32> {
    let connection = [
        "--brokers",
        owsu_tests::bootstrap(),
        "--topic-prefix",
        prefix,
    ];
    aggregate_on(
        &connection.map(String::from),
        &format!("{prefix}agg"),
        store,
        extra,
    )
}

/// [`aggregate_with`] on a secure private broker as `user` (its topics, group `group`).
pub(crate) fn aggregate_secure(
    broker: &owsu_tests::PrivateBroker,
    user: &str,
    group: &str,
    store: &Path,
    extra: &[&str],
) -> anyhow::Result<i32> {
    aggregate_on(&broker.cli_args(user), group, store, extra)
}

fn aggregate_on(
    connection: &[String],
    group: &str,
    store: &Path,
    extra: &[&str],
) -> anyhow::Result<i32> {
    let mut args = vec![
        "owsu-aggregator",
        "run",
        "--group",
        group,
        "--store",
        store.to_str().expect("utf-8 path"),
        "--until-caught-up",
        "--metrics-addr",
        "",
    ];
    args.extend(connection.iter().map(String::as_str));
    args.extend_from_slice(extra);
    owsu_aggregator::cli::run(owsu_aggregator::cli::Cli::parse_from(args))
}

/// `owsu-producer ARGS` in this process; its exit code.
pub(crate) fn producer(args: &[&str]) -> i32 {
    run_cli("owsu-producer", args, |v| {
        owsu_producer::cli::run(owsu_producer::cli::Cli::parse_from(v))
    })
}

/// `owsu-jobs ARGS` in this process; its exit code.
pub(crate) fn jobs(args: &[&str]) -> i32 {
    run_cli("owsu-jobs", args, |v| {
        owsu_jobs::cli::run(owsu_jobs::cli::Cli::parse_from(v))
    })
}

fn run_cli(name: &str, args: &[&str], run: impl FnOnce(Vec<&str>) -> anyhow::Result<i32>) -> i32 {
    let mut v = vec![name];
    v.extend_from_slice(args);
    run(v).unwrap_or_else(|e| panic!("{name} {}: {e:#}", args.join(" ")))
}

/// `owsu-producer simulate --year 2021 --scale SCALE --seed SEED --out OUT`, which must succeed.
pub(crate) fn simulate_2021(out: &str, scale: &str, seed: &str) {
    assert_eq!(
        producer(&["simulate", "--year", "2021", "--scale", scale, "--seed", seed, "--out", out,]),
        0,
        "simulating 2021 to {out}"
    );
}

/// `owsu-producer simulate --year YEAR --scale SCALE` straight to the shared broker under
/// `prefix`, with the id secret, outbox and `truth-YEAR.json` in `dir` (the secret is written
/// if missing); the simulator's truth of the year.
pub(crate) fn simulate_and_publish(
    prefix: &str,
    year: &str,
    scale: &str,
    dir: &Path,
) -> owsu_producer::simulate::Truth {
    let p = |f: &str| dir.join(f).to_str().expect("utf-8 path").to_owned();
    if !dir.join("secret").exists() {
        owsu_schemas::ids::write_secret_file(&dir.join("secret"), b"simulated-year-0123456789")
            .expect("secret file");
    }
    let truth = p(&format!("truth-{year}.json"));
    assert_eq!(
        producer(&[
            "simulate",
            "--year",
            year,
            "--scale",
            scale,
            "--brokers",
            owsu_tests::bootstrap(),
            "--topic-prefix",
            prefix,
            "--id-secret-file",
            &p("secret"),
            "--outbox",
            &p("outbox"),
            "--truth",
            &truth,
        ]),
        0,
        "simulating and publishing {year}"
    );
    serde_json::from_slice(&std::fs::read(&truth).expect("truth file")).expect("truth JSON")
}

/// `owsu-producer publish --input INPUT` to the shared broker under `prefix`, with the id
/// secret file `secret`, the outbox `outbox` and any `extra` arguments; its exit code.
pub(crate) fn publish(
    prefix: &str,
    input: &str,
    secret: &str,
    outbox: &str,
    extra: &[&str],
) -> i32 {
    let mut args = vec![
        "publish",
        "--input",
        input,
        "--brokers",
        owsu_tests::bootstrap(),
        "--topic-prefix",
        prefix,
        "--id-secret-file",
        secret,
        "--outbox",
        outbox,
    ];
    args.extend_from_slice(extra);
    producer(&args)
}

/// [`publish`] to a secure private broker as `user` (its topics), with any `extra` arguments.
pub(crate) fn publish_secure(
    broker: &owsu_tests::PrivateBroker,
    user: &str,
    input: &str,
    secret: &str,
    outbox: &str,
    extra: &[&str],
) -> i32 {
    let connection = broker.cli_args(user);
    let mut args = vec![
        "publish",
        "--input",
        input,
        "--id-secret-file",
        secret,
        "--outbox",
        outbox,
    ];
    args.extend(connection.iter().map(String::as_str));
    args.extend_from_slice(extra);
    producer(&args)
}
