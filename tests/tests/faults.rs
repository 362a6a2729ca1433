//! The fault suite: faults injected into a three-node Kafka cluster (replication factor 3,
//! `min.insync.replicas=2`) while the pipeline publishes and aggregates a simulated year. Every
//! scenario ends by comparing the lake's summaries with the oracle computed from the published
//! file: 0 events lost, 0 counted twice, and no Kafka offset in the raw tables twice.
//!
//! ```sh
//! cargo test -p owsu-tests --test faults                 # every scenario (about 5 minutes)
//! cargo test -p owsu-tests --test faults -- hung killed  # those whose name contains a word
//! ```
//!
//! The report (scenario, events sent, landed, lost, doubled, time to recover) is printed and
//! written as JSON to `$OWSU_CACHE/faults/last-run.json` (or `OWSU_FAULTS_REPORT`). With
//! `OWSU_FAULTS_KEEP` set, a failed suite keeps its runs' logs, stores and state on disk.
//!
//! This binary has its own `main` (`harness = false`): the scenarios that kill, hang or restart
//! a node share one cluster and run one after another; those that fault the pipeline's own
//! processes and store run side by side on a second cluster meanwhile. The binary is also the
//! aggregator (and producer) process the scenarios kill (started again with
//! `OWSU_TEST_CHILD` set to its arguments).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use owsu_tests::oracle::{self, Expected};
use owsu_tests::Cluster;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// Partitions of each topic: several per node, so a node's loss moves some leaders.
const PARTITIONS: i32 = 6;

fn main() {
    common::run_as_child_if_asked();
    // libtest's own flags (`--nocapture`, `--test-threads`, ...) mean nothing here.
    let words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let chosen: Vec<&Scenario> = SCENARIOS
        .iter()
        .filter(|s| words.is_empty() || words.iter().any(|w| s.name.contains(w.as_str())))
        .collect();
    if chosen.is_empty() {
        eprintln!("no scenario matches {words:?}; scenarios:");
        for s in SCENARIOS {
            eprintln!("  {}", s.name);
        }
        std::process::exit(2);
    }
    let started = Instant::now();
    eprintln!("fault suite: starting two three-node clusters");
    let suite = Suite::new();
    // Two lanes side by side. On the first cluster, the faults of the cluster itself one at a
    // time, each from a whole cluster. On the second, left whole, the faults of the pipeline's
    // own processes and store, all at once (each has its topics, group and store), so that
    // their waiting overlaps.
    let (cluster_faults, process_faults): (Vec<&Scenario>, Vec<&Scenario>) =
        chosen.into_iter().partition(|s| s.alone);
    let shared = &suite;
    let rows: Vec<Row> = std::thread::scope(|scope| {
        let cluster_lane = scope.spawn(move || {
            let mut rows = Vec::new();
            for s in cluster_faults {
                rows.push(shared.run_reported(s));
                // The next scenario starts from a whole cluster, whatever this one left.
                shared.cluster.heal();
            }
            rows
        });
        let process_lane: Vec<_> = process_faults
            .into_iter()
            .map(|s| scope.spawn(move || shared.run_reported(s)))
            .collect();
        let mut rows = cluster_lane.join().expect("cluster lane");
        rows.extend(
            process_lane
                .into_iter()
                .map(|h| h.join().expect("scenario thread")),
        );
        rows
    });
    let report = print_and_keep(&rows, started.elapsed());
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.scenario)
        .collect();
    let mut suite = suite;
    if !failed.is_empty() && std::env::var_os("OWSU_FAULTS_KEEP").is_some() {
        // Each run's logs, store and state, to look at after a failure.
        suite.dir.disable_cleanup(true);
        eprintln!("fault suite: runs kept in {}", suite.dir.path().display());
    }
    drop(suite);
    if !failed.is_empty() {
        eprintln!(
            "fault suite: {} failed: {}",
            failed.len(),
            failed.join(", ")
        );
        for r in rows.iter().filter(|r| !r.ok()) {
            eprintln!("--- {}:\n{}", r.scenario, r.error.as_deref().unwrap_or(""));
        }
        eprintln!("report: {}", report.display());
        std::process::exit(1);
    }
}

fn panic_text(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panic".into())
}

/// A named fault and how it is injected.
struct Scenario {
    name: &'static str,
    run: fn(&Suite, &mut Run) -> Recovery,
    /// Kills, hangs or restarts a node: runs alone on the first cluster, from a whole cluster.
    /// The others run side by side on the second.
    alone: bool,
}

/// What a scenario measured: from the fault to the pipeline's first progress after it.
struct Recovery(Option<Duration>);

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "broker-killed-during-publish",
        run: broker_killed_during_publish,
        alone: true,
    },
    Scenario {
        name: "controller-leader-killed-during-publish",
        run: controller_killed_during_publish,
        alone: true,
    },
    Scenario {
        name: "broker-hung-during-publish",
        run: broker_hung_during_publish,
        alone: true,
    },
    Scenario {
        name: "broker-killed-during-aggregation",
        run: broker_killed_during_aggregation,
        alone: true,
    },
    Scenario {
        name: "broker-down-seen-as-under-replicated",
        run: broker_down_seen_as_under_replicated,
        alone: true,
    },
    Scenario {
        name: "broker-restarted-during-aggregation",
        run: broker_restarted_during_aggregation,
        alone: true,
    },
    Scenario {
        name: "object-store-down-during-aggregation",
        run: store_down_during_aggregation,
        alone: false,
    },
    Scenario {
        name: "aggregator-killed-five-times",
        run: aggregator_killed_five_times,
        alone: false,
    },
    Scenario {
        name: "aggregator-stalled-past-session-timeout",
        run: aggregator_stalled,
        alone: false,
    },
    Scenario {
        name: "office-offline-a-week-then-reconnecting",
        run: office_offline_a_week,
        alone: false,
    },
    Scenario {
        name: "producer-killed-mid-flush",
        run: producer_killed_mid_flush,
        alone: false,
    },
];

/// What every scenario shares: the clusters and one simulated year with its oracle.
struct Suite {
    /// Where nodes are killed, hung and restarted, one scenario at a time.
    cluster: Cluster,
    /// A second cluster, left whole, for the scenarios that fault the pipeline's own processes
    /// and store, side by side while the first cluster takes its faults.
    quiet: Cluster,
    /// The S3 server of the store outage, started before any scenario thread: its `AWS_*`
    /// settings go into this process's environment, which must not change while threads run.
    s3: std::sync::Mutex<Option<owsu_tests::S3Server>>,
    dir: tempfile::TempDir,
    import: PathBuf,
    secret: PathBuf,
    expected: Expected,
}

/// One scenario's own topics, group, store and logs.
struct Run {
    /// The cluster it runs on.
    bootstrap: String,
    prefix: String,
    group: String,
    /// The store as the aggregator is given it: a directory, or an `s3://` URL.
    store: String,
    /// Where the store's objects are on disk (the directory, or the S3 server's bucket).
    store_dir: PathBuf,
    /// `AWS_*` settings of an S3 store, for the aggregator processes.
    env: Vec<(&'static str, String)>,
    /// The S3 server of the run, if any: kept until the lake has been read.
    s3: Option<owsu_tests::S3Server>,
    dir: PathBuf,
}

impl Suite {
    fn new() -> Self {
        let cluster = Cluster::start("faults");
        // The second cluster starts while the year is simulated (the first one's ports are
        // taken by now, so the two cannot pick the same ones).
        let quiet = std::thread::spawn(|| Cluster::start("faults-quiet"));
        let dir = tempfile::tempdir().expect("temp dir");
        let import = dir.path().join("year.jsonl");
        common::simulate_2021(import.to_str().unwrap(), "0.02", "12");
        let secret = dir.path().join("secret");
        owsu_schemas::ids::write_secret_file(&secret, b"fault-suite-secret-0123456789").unwrap();
        let expected = oracle::expected_from_import(&import);
        let quiet = quiet.join().expect("the second cluster");
        let s3 = owsu_tests::S3Server::start("owsu-faults");
        // Read by this process when it checks the lake on S3; set before any scenario thread.
        for (k, v) in s3.env() {
            std::env::set_var(k, v);
        }
        Suite {
            cluster,
            quiet,
            s3: std::sync::Mutex::new(Some(s3)),
            dir,
            import,
            secret,
            expected,
        }
    }

    /// [`Self::run`], a failure caught as a failed row, with its start and end on stderr.
    fn run_reported(&self, s: &Scenario) -> Row {
        eprintln!("fault suite: {} ...", s.name);
        let t = Instant::now();
        let row = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(s))) {
            Ok(row) => row,
            Err(e) => Row::failed(s.name, panic_text(&e)),
        };
        eprintln!(
            "fault suite: {} {} in {:.0} s",
            s.name,
            if row.ok() { "passed" } else { "FAILED" },
            t.elapsed().as_secs_f64()
        );
        row
    }

    fn run(&self, s: &Scenario) -> Row {
        let prefix = owsu_tests::random_prefix("faults");
        let cluster = if s.alone { &self.cluster } else { &self.quiet };
        cluster.create_topics(&prefix, PARTITIONS);
        let dir = self.dir.path().join(s.name);
        std::fs::create_dir_all(&dir).unwrap();
        let store_dir = dir.join("store");
        let mut run = Run {
            bootstrap: cluster.bootstrap(),
            group: format!("{prefix}agg"),
            store: store_dir.to_str().unwrap().to_owned(),
            store_dir,
            env: Vec::new(),
            s3: None,
            prefix,
            dir,
        };
        let recovery = (s.run)(self, &mut run);
        let mut row = Row::measured(s.name, &self.expected, &run.store, recovery);
        if let Some(e) = &mut row.error {
            // The run's directory goes with the suite: what its processes logged goes into the
            // report.
            let mut logs: Vec<PathBuf> = std::fs::read_dir(&run.dir)
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            logs.retain(|p| p.extension().is_some_and(|x| x == "log"));
            logs.sort();
            for log in logs {
                e.push_str(&format!("\n--- {}:\n{}", log.display(), tail(&log)));
            }
        }
        row
    }

    /// `owsu-producer publish` of the year to the run's topics, in this process; its exit code.
    fn publish(&self, run: &Run) -> i32 {
        let outbox = run.dir.join("outbox");
        common::producer(&[
            "publish",
            "--input",
            self.import.to_str().unwrap(),
            "--brokers",
            &run.bootstrap,
            "--topic-prefix",
            &run.prefix,
            "--id-secret-file",
            self.secret.to_str().unwrap(),
            "--outbox",
            outbox.to_str().unwrap(),
        ])
    }

    /// Publishes on another thread, injects `fault` once the first records are in, and waits
    /// for the publish to succeed; the recovery is the time from the fault to the topics' next
    /// growth.
    fn publish_with(&self, run: &Run, fault: impl FnOnce()) -> Recovery {
        let before = self.end_offsets(run);
        let recovery = std::thread::scope(|s| {
            let publisher = s.spawn(|| self.publish(run));
            wait_for(
                Duration::from_secs(60),
                "the first published records",
                || self.end_offsets(run) > before || publisher.is_finished(),
            );
            let at_fault = self.end_offsets(run);
            let t = Instant::now();
            fault();
            let mut recovered = None;
            while !publisher.is_finished() {
                if recovered.is_none() && self.end_offsets(run) > at_fault {
                    recovered = Some(t.elapsed());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let code = publisher.join().expect("publisher thread");
            assert_eq!(code, 0, "publish failed during the fault");
            Recovery(recovered.or(Some(t.elapsed())))
        });
        self.cluster.heal();
        recovery
    }

    /// Sum of the end offsets of the run's event topics (0 while the cluster cannot say).
    fn end_offsets(&self, run: &Run) -> i64 {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &run.bootstrap)
            .create()
            .unwrap();
        let mut sum = 0;
        for k in owsu_schemas::RecordKind::ALL {
            let topic = format!("{}{}", run.prefix, k.topic());
            for p in 0..PARTITIONS {
                match c.fetch_watermarks(&topic, p, Duration::from_secs(2)) {
                    Ok((_, high)) => sum += high,
                    Err(_) => return 0,
                }
            }
        }
        sum
    }

    /// `owsu-aggregator run` as a child process (this binary, see `main`), stderr to `log`.
    fn spawn_aggregator(&self, run: &Run, until_caught_up: bool, log: &Path) -> Child {
        self.spawn_aggregator_with(run, until_caught_up, log, &[])
    }

    /// [`Self::spawn_aggregator`] with more arguments of `owsu-aggregator run`.
    fn spawn_aggregator_with(
        &self,
        run: &Run,
        until_caught_up: bool,
        log: &Path,
        extra: &[&str],
    ) -> Child {
        let mut args: Vec<String> = [
            "owsu-aggregator",
            "run",
            "--brokers",
            &run.bootstrap,
            "--topic-prefix",
            &run.prefix,
            "--group",
            &run.group,
            "--store",
            &run.store,
            "--state-dir",
            log.with_extension("state").to_str().unwrap(),
            "--snapshot-interval-s",
            "2",
            "--max-batch",
            "3000",
            "--linger-ms",
            "200",
            "--session-timeout-ms",
            "6000",
        ]
        .map(String::from)
        .to_vec();
        if until_caught_up {
            args.push("--until-caught-up".into());
        }
        if !extra.contains(&"--metrics-addr") {
            args.extend(["--metrics-addr".into(), String::new()]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        common::child_process(&args)
            .envs(run.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the aggregator")
    }

    /// Publishes, runs one aggregator until caught up, and injects `fault` once its first
    /// commit is in the lake; the recovery is the time from the fault to the next commit.
    fn aggregate_with(&self, run: &Run, fault: impl FnOnce()) -> Recovery {
        assert_eq!(self.publish(run), 0, "publish");
        let log = run.dir.join("aggregator.log");
        let mut child = self.spawn_aggregator(run, true, &log);
        // Version 0 of the table is its creation: wait for two batches after it.
        wait_for(
            Duration::from_secs(120),
            "the aggregator's first commits",
            || oracle::lake_commits(&run.store_dir) > 2 || child.try_wait().unwrap().is_some(),
        );
        let at_fault = oracle::lake_commits(&run.store_dir);
        let t = Instant::now();
        fault();
        let mut recovered = None;
        let limit = Duration::from_secs(600);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if recovered.is_none() && oracle::lake_commits(&run.store_dir) > at_fault {
                recovered = Some(t.elapsed());
            }
            if t.elapsed() > limit {
                let _ = child.kill();
                panic!(
                    "the aggregator did not finish within {limit:?}; log: {}",
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            status.success(),
            "the aggregator failed ({status}); its log:\n{}",
            tail(&log)
        );
        Recovery(recovered.or(Some(t.elapsed())))
    }
}

fn broker_killed_during_publish(suite: &Suite, run: &mut Run) -> Recovery {
    let topic = format!("{}{}", run.prefix, owsu_schemas::topics::SERVICE_EVENTS);
    let leader = suite.cluster.leader_of(&topic, 0);
    let r = suite.publish_with(run, || suite.cluster.kill(leader));
    aggregate_to_end(run);
    r
}

fn controller_killed_during_publish(suite: &Suite, run: &mut Run) -> Recovery {
    let controller = suite.cluster.quorum_leader();
    let r = suite.publish_with(run, || suite.cluster.kill(controller));
    aggregate_to_end(run);
    r
}

/// A leader hung (SIGSTOP) for 35 s: longer than the client's request timeout (30 s) and the
/// broker session timeout (9 s), so the controller moves its partitions while it hangs.
fn broker_hung_during_publish(suite: &Suite, run: &mut Run) -> Recovery {
    let topic = format!("{}{}", run.prefix, owsu_schemas::topics::SERVICE_EVENTS);
    let leader = suite.cluster.leader_of(&topic, 0);
    let r = suite.publish_with(run, || {
        suite.cluster.signal(leader, "STOP");
        std::thread::spawn({
            let pid = suite.cluster.pid(leader).unwrap();
            move || {
                std::thread::sleep(Duration::from_secs(35));
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(pid.to_string())
                    .status();
            }
        });
    });
    aggregate_to_end(run);
    r
}

fn broker_killed_during_aggregation(suite: &Suite, run: &mut Run) -> Recovery {
    let topic = format!("{}{}", run.prefix, owsu_schemas::topics::SERVICE_EVENTS);
    let r = suite.aggregate_with(run, || {
        suite.cluster.kill(suite.cluster.leader_of(&topic, 0))
    });
    suite.cluster.heal();
    r
}

/// A live aggregator's `owsu_under_replicated_partitions` (the metric the alert rule watches):
/// 0 on a whole cluster, above 0 once a node is killed and the controller shrinks its
/// partitions' in-sync replicas, 0 again once the node is back and has caught up. Meanwhile the
/// aggregator goes on landing every event. The recovery is the time from the node's restart to
/// the gauge's return to 0.
fn broker_down_seen_as_under_replicated(suite: &Suite, run: &mut Run) -> Recovery {
    const GAUGE: &str = "owsu_under_replicated_partitions";
    assert_eq!(suite.publish(run), 0, "publish");
    let log = run.dir.join("aggregator.log");
    let addr = owsu_tests::free_addr();
    let mut child = suite.spawn_aggregator_with(
        run,
        false,
        &log,
        &["--metrics-addr", &addr, "--replication-check-s", "1"],
    );
    let gauge = || owsu_tests::scrape(&addr, GAUGE);
    wait_for(
        Duration::from_secs(60),
        "the gauge at 0 on a whole cluster",
        || gauge() == Some(0.0) || child.try_wait().unwrap().is_some(),
    );
    if let Some(s) = child.try_wait().unwrap() {
        panic!("the aggregator ended ({s}); its log:\n{}", tail(&log));
    }
    let topic = format!("{}{}", run.prefix, owsu_schemas::topics::SERVICE_EVENTS);
    suite.cluster.kill(suite.cluster.leader_of(&topic, 0));
    // The controller shrinks the in-sync replicas once the node's session (9 s) expires.
    wait_for(
        Duration::from_secs(90),
        "the gauge above 0 with a node down",
        || gauge().is_some_and(|v| v > 0.0),
    );
    let down = gauge().unwrap_or(0.0);
    let healed = Instant::now();
    suite.cluster.heal();
    wait_for(Duration::from_secs(120), "the gauge back at 0", || {
        gauge() == Some(0.0)
    });
    let recovered = healed.elapsed();
    eprintln!("fault suite: {GAUGE} was {down} with a node down, 0 again after {recovered:?}");
    wait_for(
        Duration::from_secs(600),
        "the aggregator to land every event",
        || owsu_tests::group_done(&run.bootstrap, &run.group, &run.prefix, PARTITIONS),
    );
    signal_child(&child, "TERM");
    let s = child.wait().unwrap();
    assert!(
        s.success(),
        "the aggregator failed ({s}); log:\n{}",
        tail(&log)
    );
    Recovery(Some(recovered))
}

/// A node stopped cleanly and started again while the aggregator runs.
fn broker_restarted_during_aggregation(suite: &Suite, run: &mut Run) -> Recovery {
    let topic = format!("{}{}", run.prefix, owsu_schemas::topics::SERVICE_EVENTS);
    suite.aggregate_with(run, || {
        let node = suite.cluster.leader_of(&topic, 1);
        suite.cluster.signal(node, "TERM");
        wait_for(Duration::from_secs(60), "the node to stop", || {
            !pid_alive(suite.cluster.pid(node).unwrap())
        });
        suite.cluster.heal();
    })
}

/// The lake on a real S3-compatible server, killed for 45 s (longer than the client's own
/// retries, 30 s) while the aggregator catches up, then started again on the same data: the
/// aggregator must say so in its log, wait, and finish without loss. The recovery is the time
/// from the store's return to the next commit.
fn store_down_during_aggregation(suite: &Suite, run: &mut Run) -> Recovery {
    let mut s3 = suite
        .s3
        .lock()
        .expect("s3 lock")
        .take()
        .expect("the suite's S3 server, for one scenario");
    run.env = s3.env();
    run.store = "s3://owsu-faults/lake".into();
    run.store_dir = s3.root.join("owsu-faults/lake");
    assert_eq!(suite.publish(run), 0, "publish");
    let log = run.dir.join("aggregator.log");
    let mut child = suite.spawn_aggregator(run, true, &log);
    wait_for(
        Duration::from_secs(120),
        "the aggregator's first commits",
        || oracle::lake_commits(&run.store_dir) > 2 || child.try_wait().unwrap().is_some(),
    );
    if let Some(s) = child.try_wait().unwrap() {
        panic!(
            "the aggregator ended ({s}) before its third commit ({} in {}); its log:\n{}",
            oracle::lake_commits(&run.store_dir),
            run.store_dir.display(),
            tail(&log)
        );
    }
    s3.kill();
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(45) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the aggregator exited while the store was down; its log:\n{}",
            tail(&log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        said.contains("object store unavailable, consuming stopped"),
        "the aggregator did not report the outage; its log:\n{}",
        tail(&log)
    );
    let at_return = oracle::lake_commits(&run.store_dir);
    s3.restart();
    let back = Instant::now();
    let mut recovered = None;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if recovered.is_none() && oracle::lake_commits(&run.store_dir) > at_return {
            recovered = Some(back.elapsed());
        }
        assert!(
            back.elapsed() < Duration::from_secs(600),
            "no end after the store came back"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "the aggregator failed ({status}); its log:\n{}",
        tail(&log)
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("object store answers again"),
        "the aggregator did not report the store's return"
    );
    // The server (and the lake in it) must outlive the measurement that follows.
    run.s3 = Some(s3);
    Recovery(recovered.or(Some(back.elapsed())))
}

/// `kill -9` of the aggregator at five random moments of its catch-up, then a last run.
fn aggregator_killed_five_times(suite: &Suite, run: &mut Run) -> Recovery {
    assert_eq!(suite.publish(run), 0, "publish");
    let log = run.dir.join("aggregator.log");
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut killed_mid_run = 0;
    for _ in 0..5 {
        // At a random moment after this run's first commit, however fast the machine.
        let before = oracle::lake_commits(&run.store_dir);
        // Summary commits every 200 ms (2 s by default): killed a moment after its first
        // commit, a run is killed mid-run however fast the machine catches up.
        let mut child =
            suite.spawn_aggregator_with(run, true, &log, &["--summary-interval-ms", "200"]);
        let started = Instant::now();
        while oracle::lake_commits(&run.store_dir) == before
            && child.try_wait().unwrap().is_none()
            && started.elapsed() < Duration::from_secs(120)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..300)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed_mid_run += 1;
        }
        child.wait().unwrap();
    }
    assert!(
        killed_mid_run >= 3,
        "only {killed_mid_run} kills landed mid-run"
    );
    let at_last = oracle::lake_commits(&run.store_dir);
    let t = Instant::now();
    let mut last = suite.spawn_aggregator(run, true, &log);
    let mut recovered = None;
    let status = loop {
        if let Some(s) = last.try_wait().unwrap() {
            break s;
        }
        if recovered.is_none() && oracle::lake_commits(&run.store_dir) > at_last {
            recovered = Some(t.elapsed());
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "last run did not finish"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "last run failed; log:\n{}", tail(&log));
    Recovery(recovered.or(Some(t.elapsed())))
}

/// Two instances; A hangs (SIGSTOP) past its session timeout while B takes its partitions,
/// then resumes: its commits must be refused, B's and its own later ones must count once.
fn aggregator_stalled(suite: &Suite, run: &mut Run) -> Recovery {
    assert_eq!(suite.publish(run), 0, "publish");
    let (log_a, log_b) = (run.dir.join("a.log"), run.dir.join("b.log"));
    let mut a = suite.spawn_aggregator(run, false, &log_a);
    wait_for(Duration::from_secs(120), "A's first commits", || {
        oracle::lake_commits(&run.store_dir) > 2
    });
    signal_child(&a, "STOP");
    let t = Instant::now();
    let at_fault = oracle::lake_commits(&run.store_dir);
    let mut b = suite.spawn_aggregator(run, false, &log_b);
    let mut recovered = None;
    while t.elapsed() < Duration::from_secs(15) {
        if recovered.is_none() && oracle::lake_commits(&run.store_dir) > at_fault {
            recovered = Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    signal_child(&a, "CONT");
    wait_for(Duration::from_secs(600), "the pair to finish", || {
        owsu_tests::group_done(&run.bootstrap, &run.group, &run.prefix, PARTITIONS)
    });
    signal_child(&a, "TERM");
    signal_child(&b, "TERM");
    for (c, log) in [(&mut a, &log_a), (&mut b, &log_b)] {
        let s = c.wait().unwrap();
        assert!(s.success(), "an instance failed ({s}); log:\n{}", tail(log));
    }
    Recovery(recovered)
}

/// A closed port on loopback: Kafka as an office sees it while its link is down.
const UNREACHABLE: &str = "127.0.0.1:9";

/// The year split into seven exports, published one "day" after another while the office
/// cannot reach Kafka: every event must wait in the outbox (exit code 3 each day), the outbox
/// metrics file must show it growing; then the link returns and `owsu-producer flush` delivers
/// everything. The recovery is the flush's time.
fn office_offline_a_week(suite: &Suite, run: &mut Run) -> Recovery {
    let metrics = run.dir.join("outbox.prom");
    let mut waiting = Vec::new();
    for (day, file) in suite.week(run).iter().enumerate() {
        let code = common::producer(&[
            "publish",
            "--input",
            file.to_str().unwrap(),
            "--brokers",
            UNREACHABLE,
            "--topic-prefix",
            &run.prefix,
            "--id-secret-file",
            suite.secret.to_str().unwrap(),
            "--outbox",
            run.dir.join("outbox").to_str().unwrap(),
            "--delivery-timeout-secs",
            "1",
            "--metrics-file",
            metrics.to_str().unwrap(),
        ]);
        assert_eq!(
            code, 3,
            "day {day}: events wait in the outbox (exit code 3)"
        );
        waiting.push(outbox_events(&metrics));
    }
    assert!(
        waiting.windows(2).all(|w| w[1] > w[0]),
        "the outbox grows day by day: {waiting:?}"
    );
    assert_eq!(
        suite.end_offsets(run),
        0,
        "nothing reached Kafka while offline"
    );
    let t = Instant::now();
    assert_eq!(suite.flush(run, &metrics), 0, "flush once the link is back");
    let took = t.elapsed();
    assert_eq!(
        outbox_events(&metrics),
        0,
        "the outbox is empty after the flush"
    );
    aggregate_to_end(run);
    Recovery(Some(took))
}

/// The outbox full (offline), then `owsu-producer flush` killed with SIGKILL as soon as its
/// first events reach Kafka, and run again: events acknowledged before the kill but still in
/// the outbox are sent twice, and must be counted once.
fn producer_killed_mid_flush(suite: &Suite, run: &mut Run) -> Recovery {
    let metrics = run.dir.join("outbox.prom");
    let code = common::producer(&[
        "publish",
        "--input",
        suite.import.to_str().unwrap(),
        "--brokers",
        UNREACHABLE,
        "--topic-prefix",
        &run.prefix,
        "--id-secret-file",
        suite.secret.to_str().unwrap(),
        "--outbox",
        run.dir.join("outbox").to_str().unwrap(),
        "--delivery-timeout-secs",
        "1",
        "--chunk",
        "2000",
    ]);
    assert_eq!(code, 3, "the year waits in the outbox");
    let args: Vec<String> = [
        "owsu-producer",
        "flush",
        "--brokers",
        &run.bootstrap,
        "--topic-prefix",
        &run.prefix,
        "--outbox",
        run.dir.join("outbox").to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    let log = run.dir.join("flush.log");
    let mut child = common::child_process(&args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn the flush");
    wait_for(Duration::from_secs(60), "the flush's first events", || {
        suite.end_offsets(run) > 0
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "the flush ended before it could be killed; log:\n{}",
        tail(&log)
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let t = Instant::now();
    assert_eq!(suite.flush(run, &metrics), 0, "the second flush");
    let took = t.elapsed();
    assert_eq!(outbox_events(&metrics), 0, "the outbox is empty");
    aggregate_to_end(run);
    Recovery(Some(took))
}

/// `owsu_outbox_events` of a metrics file written by `--metrics-file`.
fn outbox_events(file: &Path) -> u64 {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    text.lines()
        .find(|l| l.starts_with("owsu_outbox_events{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no owsu_outbox_events in {}:\n{text}", file.display()))
        as u64
}

impl Suite {
    /// The year as seven exports of consecutive lines, in the run's directory.
    fn week(&self, run: &Run) -> Vec<PathBuf> {
        let text = std::fs::read_to_string(&self.import).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let per_day = lines.len().div_ceil(7);
        lines
            .chunks(per_day)
            .enumerate()
            .map(|(d, chunk)| {
                let f = run.dir.join(format!("day-{d}.jsonl"));
                std::fs::write(&f, chunk.join("\n") + "\n").unwrap();
                f
            })
            .collect()
    }

    /// `owsu-producer flush` of the run's outbox to the cluster, in this process.
    fn flush(&self, run: &Run, metrics: &Path) -> i32 {
        common::producer(&[
            "flush",
            "--brokers",
            &run.bootstrap,
            "--topic-prefix",
            &run.prefix,
            "--outbox",
            run.dir.join("outbox").to_str().unwrap(),
            "--metrics-file",
            metrics.to_str().unwrap(),
        ])
    }
}

/// The aggregator in this process until caught up (after a publish-side fault).
fn aggregate_to_end(run: &Run) {
    let args = [
        "owsu-aggregator",
        "run",
        "--brokers",
        &run.bootstrap,
        "--topic-prefix",
        &run.prefix,
        "--group",
        &run.group,
        "--store",
        &run.store,
        "--until-caught-up",
        "--metrics-addr",
        "",
    ];
    let code = owsu_aggregator::cli::run(owsu_aggregator::cli::Cli::parse_from(args))
        .unwrap_or_else(|e| panic!("aggregate: {e:#}"));
    assert_eq!(code, 0, "aggregate");
}

fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pid_alive(pid: u32) -> bool {
    Command::new("ps")
        .args(["-o", "stat=", "-p", &pid.to_string()])
        .output()
        .is_ok_and(|o| {
            let st = String::from_utf8_lossy(&o.stdout);
            !st.trim().is_empty() && !st.trim_start().starts_with('Z')
        })
}

fn signal_child(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {}", child.id());
}

/// The last 40 lines of a log, for a failure message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// One line of the report.
struct Row {
    scenario: &'static str,
    /// Distinct service and complaint events in the published file.
    sent: u64,
    /// Distinct event ids in the lake's raw service and complaint tables.
    landed: u64,
    /// Events sent but not in the lake's raw tables.
    lost: u64,
    /// Kafka offsets in the raw tables twice, plus counts the summaries have too many.
    doubled: u64,
    /// Summary cells that differ from the oracle's.
    cells_differing: usize,
    recovery: Option<Duration>,
    error: Option<String>,
}

impl Row {
    fn failed(scenario: &'static str, error: String) -> Self {
        Row {
            scenario,
            sent: 0,
            landed: 0,
            lost: 0,
            doubled: 0,
            cells_differing: 0,
            recovery: None,
            error: Some(error),
        }
    }

    fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// The lake against the oracle, after the scenario.
    fn measured(
        scenario: &'static str,
        expected: &Expected,
        store: &str,
        recovery: Recovery,
    ) -> Self {
        let actual = oracle::actual_from_url(store);
        let d = oracle::differences(expected, &actual);
        let sent = expected.distinct[0] + expected.distinct[1];
        let landed = [
            &owsu_lake::tables::RAW_SERVICE_EVENTS,
            &owsu_lake::tables::RAW_COMPLAINT_EVENTS,
        ]
        .iter()
        .map(|def| distinct(store, def.name, &["event_id"]))
        .sum::<u64>();
        let positions_twice: u64 = owsu_lake::tables::RAW
            .iter()
            .map(|def| {
                oracle::read_table_at(store, def.name).height() as u64
                    - distinct(store, def.name, &["kafka_partition", "kafka_offset"])
            })
            .sum();
        let mut row = Row {
            scenario,
            sent,
            landed,
            lost: sent.saturating_sub(landed),
            doubled: positions_twice + d.surplus,
            cells_differing: d.cells,
            recovery: recovery.0,
            error: None,
        };
        if row.lost > 0 || row.doubled > 0 || row.cells_differing > 0 || landed != sent {
            row.error = Some(format!(
                "{} events sent, {} landed, {} lost, {} doubled, {} summary cells differ:\n{}",
                row.sent,
                row.landed,
                row.lost,
                row.doubled,
                row.cells_differing,
                d.first.join("\n")
            ));
        }
        row
    }
}

fn distinct(store: &str, table: &str, columns: &[&str]) -> u64 {
    oracle::read_table_at(store, table)
        .select(columns.iter().copied())
        .unwrap()
        .unique_stable(None, polars::prelude::UniqueKeepStrategy::First, None)
        .unwrap()
        .height() as u64
}

/// Prints the report as a table and writes it as JSON; returns where.
fn print_and_keep(rows: &[Row], took: Duration) -> PathBuf {
    let path = std::env::var_os("OWSU_FAULTS_REPORT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("OWSU_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/owsu")
                })
                .join("faults/last-run.json")
        });
    let secs = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 10.0).round() / 10.0);
    eprintln!(
        "\n| scenario | sent | landed | lost | doubled | recovered after | result |\n| --- | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for r in rows {
        eprintln!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.sent,
            r.landed,
            r.lost,
            r.doubled,
            secs(r.recovery).map_or("-".into(), |s| format!("{s:.1} s")),
            if r.ok() { "pass" } else { "FAIL" }
        );
    }
    let json = json!({
        "finished_at": chrono::Utc::now().to_rfc3339(),
        "took_s": took.as_secs(),
        "scenarios": rows.iter().map(|r| json!({
            "scenario": r.scenario,
            "events_sent": r.sent,
            "events_landed": r.landed,
            "lost": r.lost,
            "doubled": r.doubled,
            "summary_cells_differing": r.cells_differing,
            "recovered_after_s": secs(r.recovery),
            "passed": r.ok(),
            "error": r.error,
        })).collect::<Vec<_>>(),
    });
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    eprintln!("\nreport: {} ({} s)", path.display(), took.as_secs());
    path
}
