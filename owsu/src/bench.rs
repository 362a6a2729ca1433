//! `owsu bench`: speed and memory, measured side by side with the peers in one run, printed as
//! figures and ratios and written as JSON (never asserted in tests).
//!
//! 1. codec: Avro single-object encode and decode rates;
//! 2. Kafka's own `ProducerPerformance` (records of our encoded size, acks=all, idempotence) and,
//!    after publishing, `ConsumerPerformance` over our three event topics: the peers;
//! 3. producer: simulate a year into the import format, then `publish` it (÷ ProducerPerformance);
//! 4. aggregator catch-up on the time-ordered year and on the same events shuffled (a late bulk
//!    re-import), each a child process with a fresh store (÷ ConsumerPerformance; peak RSS; files);
//!    then the same year on a secure broker (TLS + SASL/SCRAM, every event signed and verified):
//!    publish and catch-up rates against the plaintext ones, summaries equal;
//! 5. takeover: a new instance with no local state on the caught-up store and group;
//! 6. crashes: a new group and store, `kill -9` at random moments; its summaries must equal the
//!    clean run's, row for row;
//! 7. `compact`, then `rebuild` against DuckDB computing the same four summaries from the same
//!    raw files (`infra/bench/duckdb_summaries.py`), totals compared;
//! 8. live freshness: the year replayed at 10× the national peak rate (its busiest minute, scaled)
//!    into a running aggregator; p50/p99 from Kafka timestamp to summary commit;
//! 9. history: `--history-years` simulated years (2021 on) aggregated one run per year on one
//!    store, peak RSS of each, then takeover of every partition by an instance with no local
//!    state (snapshots downloaded, nothing replayed from raw);
//! 10. the dashboard over the clean run's lake (between 7 and 8): its board's load time, and
//!     p50/p99 of each kind of page over HTTP (`--dashboard-only STORE` measures only this,
//!     over any lake).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use owsu_producer::commands::{self, PublishJob, SimDestination};
use owsu_producer::import::pseudonymise;
use owsu_producer::publish::{Publisher, PublisherConfig};
use owsu_producer::simulate::{Emit, SimConfig, Simulator};
use owsu_runtime::kafka::KafkaArgs;
use owsu_schemas::ids::IdHasher;
use owsu_schemas::reference::Reference;
use owsu_schemas::signing::Keyring;
use polars::prelude::*;

/// `owsu bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Kafka bootstrap servers (default: start or reuse the local broker of infra/kafka/kafka.sh).
    #[arg(long, env = "OWSU_BROKERS")]
    pub brokers: Option<String>,
    /// About how many events the pipeline runs carry.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// kill -9 this many times during the crash run.
    #[arg(long, default_value_t = 5)]
    pub kills: u32,
    /// Working directory (wiped at start).
    #[arg(long, default_value = "data/bench")]
    pub data_dir: PathBuf,
    /// Topic partitions.
    #[arg(long, default_value_t = 12)]
    pub partitions: i32,
    /// Seconds of the live-freshness run (events replayed at 10× the national peak rate while
    /// an aggregator runs live; 0 skips it).
    #[arg(long, default_value_t = 30)]
    pub(crate) live_secs: u64,
    /// Skip the secure run (TLS + SCRAM + signed events against plaintext, on a second broker).
    #[arg(long)]
    pub(crate) no_secure: bool,
    /// Simulated years of history for the memory and takeover figures (2021 on, one
    /// aggregator run per year on one store; 0 skips them).
    #[arg(long, default_value_t = 5)]
    pub(crate) history_years: i32,
    /// Only measure the dashboard (`owsu-jobs serve`) over this existing lake, e.g. one holding
    /// a national year, and skip every other stage.
    #[arg(long, value_name = "STORE")]
    pub(crate) dashboard_only: Option<String>,
    /// Simulated years (seeds 1 to N, each its own topics and lake) for the oversight rules'
    /// precision and recall against the problems the simulator planted (0 skips them).
    #[arg(long, default_value_t = 10)]
    pub(crate) detection_seeds: u64,
    /// Scale of each of those years (1.0: national volume).
    #[arg(long, default_value_t = 0.05)]
    pub(crate) detection_scale: f64,
    /// Only measure the oversight rules' precision and recall, and skip every other stage.
    #[arg(long)]
    pub(crate) detection_only: bool,
    /// The oversight rules' thresholds those runs judge with (`owsu-jobs inactive`'s flags).
    #[command(flatten)]
    pub(crate) rules: owsu_jobs::inactive::Rules,
}

fn say(figures: &mut Vec<(String, String)>, k: &str, v: String) {
    println!("  {k:<44} {v}");
    figures.push((k.to_owned(), v));
}

/// Peak resident memory of a running child, read from /proc (VmHWM), in MiB.
fn peak_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn wait_measuring(child: &mut Child) -> anyhow::Result<(std::process::ExitStatus, f64)> {
    let mut peak = 0.0f64;
    loop {
        if let Some(p) = peak_mib(child.id()) {
            peak = peak.max(p);
        }
        if let Some(s) = child.try_wait()? {
            return Ok((s, peak));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Each summary table of two stores: its name, whether the two are equal row for row (and not
/// empty), and its rows in `a`.
fn same_summaries(a: &Path, b: &Path) -> anyhow::Result<Vec<(&'static str, bool, usize)>> {
    owsu_lake::tables::SUMMARIES
        .into_iter()
        .map(|def| {
            let (x, y) = (read_sorted(a, def.name)?, read_sorted(b, def.name)?);
            Ok((def.name, x.height() > 0 && x.equals_missing(&y), x.height()))
        })
        .collect()
}

fn read_sorted(store: &Path, table: &str) -> anyhow::Result<DataFrame> {
    let def = owsu_lake::tables::by_name(table).context("no such table")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let df = rt.block_on(async {
        let store = owsu_lake::Store::open_existing(store.to_str().context("utf-8 path")?)?;
        let snap = owsu_lake::Snapshot::open(&store, &[def], None).await?;
        anyhow::Ok(snap.read(def, None, None).await?)
    })?;
    let cols: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|c| c.to_string())
        .collect();
    Ok(if cols.is_empty() {
        df
    } else {
        df.sort(cols, Default::default())?
    })
}

/// Python with DuckDB and deltalake for the peer of `rebuild`: `$OWSU_PYTHON`, or the tests'
/// environment under `$OWSU_CACHE` (created here with pinned versions if missing).
fn python() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("OWSU_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let cache = std::env::var_os("OWSU_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                .join(".cache/owsu")
        });
    let venv = cache.join("bench-pyenv");
    let py = venv.join("bin/python");
    if !venv.join(".ready").exists() {
        println!(
            "  (installing DuckDB and deltalake for Python into {})",
            venv.display()
        );
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()?
            .success()
            && Command::new(&py)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "duckdb==2.0.0",
                    "deltalake==1.6.6",
                ])
                .status()?
                .success();
        anyhow::ensure!(ok, "could not install DuckDB and deltalake for Python (python3 with venv and PyPI access are needed)");
        std::fs::write(venv.join(".ready"), b"ok")?;
    }
    Ok(py)
}

/// Runs one of Kafka's own tools through infra/kafka/kafka.sh; returns its standard output.
fn kafka_tool(class: &str, args: &[&str]) -> anyhow::Result<String> {
    let root = crate::demo::repo_root()
        .context("infra/kafka/kafka.sh not found: run from the repository")?;
    let out = Command::new("bash")
        .arg(root.join("infra/kafka/kafka.sh"))
        .arg("tool")
        .arg(class)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {class}"))?;
    anyhow::ensure!(out.status.success(), "{class} failed");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Messages per second from ProducerPerformance's last line ("N records sent, R records/sec ...").
fn producer_perf_rate(out: &str) -> Option<f64> {
    let line = out.lines().rev().find(|l| l.contains("records/sec"))?;
    line.split(", ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// (messages, seconds fetching) from ConsumerPerformance's CSV line: `data.consumed.in.nMsg`
/// (column 5) and `fetch.time.ms` (column 8), which leaves out joining the group, so the peer's
/// rate is its best.
fn consumer_perf(out: &str) -> Option<(f64, f64)> {
    let line = out
        .lines()
        .rev()
        .find(|l| l.split(',').count() >= 10 && !l.contains("start.time"))?;
    let f: Vec<&str> = line.split(',').map(str::trim).collect();
    let msgs: f64 = f[4].parse().ok()?;
    let fetch_ms: f64 = f[7].parse().ok()?;
    Some((msgs, fetch_ms / 1000.0))
}

/// Messages in a topic now (sum of high − low watermarks).
fn topic_messages(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let mut n = 0;
    for p in 0..partitions {
        let (lo, hi) = c.fetch_watermarks(topic, p, Duration::from_secs(30))?;
        n += hi - lo;
    }
    Ok(n)
}

/// Active files of every table of a local store, and all Parquet files on its disk.
fn files_in_store(store: &Path) -> anyhow::Result<(usize, usize)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let active = rt.block_on(async {
        let s = owsu_lake::Store::open_existing(store.to_str().context("utf-8 path")?)?;
        let mut n = 0;
        for def in owsu_lake::tables::ALL {
            if let Some(t) = owsu_lake::LakeTable::open(&s, def, None).await? {
                n += t.files().await?.len();
            }
        }
        anyhow::Ok(n)
    })?;
    let mut on_disk = 0;
    let mut stack = vec![store.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)?.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet")
                && !p.to_string_lossy().contains("_delta_log")
            {
                on_disk += 1;
            }
        }
    }
    Ok((active, on_disk))
}

/// A simulated year (seed 1) written to `out` in the import format, as
/// `owsu-producer simulate --out` does.
fn simulate(reference: &Reference, year: i32, scale: f64, out: &Path) -> anyhow::Result<()> {
    let config = SimConfig {
        scale,
        ..SimConfig::new(year, 1)
    };
    commands::simulate(reference, config, SimDestination::File(out))?;
    Ok(())
}

/// How the bench publishes a file: to which Kafka, signed or not, how fast.
struct Publishing {
    kafka: KafkaArgs,
    signing: Option<Keyring>,
    /// Events per second (0: as fast as possible).
    rate: u64,
}

impl Publishing {
    /// Plaintext to `brokers`, topics under `prefix`, unsigned, as fast as possible.
    fn plain(brokers: &str, prefix: &str) -> Self {
        Publishing {
            kafka: KafkaArgs::local(brokers, prefix),
            signing: None,
            rate: 0,
        }
    }
}

/// Publishes `input` as `owsu-producer publish` does (same validation, outbox and delivery
/// settings), in this process; every record must be accepted and acknowledged.
fn publish(
    reference: &Reference,
    input: &Path,
    how: Publishing,
    secret: &Path,
    outbox: &Path,
) -> anyhow::Result<()> {
    let hasher = IdHasher::new(&owsu_schemas::ids::read_secret_file(secret)?)?;
    let mut job = PublishJob::new(input);
    job.rate = how.rate;
    if how.rate > 0 {
        // Small chunks keep a paced feed smooth (twenty a second).
        job.chunk = (how.rate / 20).max(1) as usize;
    }
    let mut publisher = Publisher::new(PublisherConfig {
        kafka: how.kafka,
        outbox_dir: outbox.to_owned(),
        delivery_timeout: Duration::from_secs(30),
        segment_records: job.chunk,
        signing: how.signing,
    })?;
    let done = commands::publish_file(reference, &job, &hasher, &mut publisher)?;
    anyhow::ensure!(
        done.report.pending == 0 && done.tally.rejected() == 0,
        "publishing {}: {} events wait in the outbox, {} records rejected (see {})",
        input.display(),
        done.report.pending,
        done.tally.rejected(),
        job.rejects.display()
    );
    Ok(())
}

/// Runs every stage of the bench and prints its figures and ratios; returns the exit code
/// (non-zero when a correctness check of the bench, such as the crash run's tables equalling the
/// clean run's, fails).
pub(crate) fn run(a: BenchArgs) -> anyhow::Result<i32> {
    let reference = Reference::load(None)?;
    if a.detection_only {
        let prefix = format!("bench-det-{}.", std::process::id());
        let brokers = crate::demo::kafka(a.brokers.as_deref(), &prefix, a.partitions)?;
        std::fs::create_dir_all(&a.data_dir)?;
        let mut figures = Vec::new();
        detection(&reference, &brokers, &prefix, &a, &mut figures)?;
        return Ok(0);
    }
    if let Some(store) = &a.dashboard_only {
        let mut figures = Vec::new();
        println!("owsu bench: the dashboard over {store}");
        dashboard(&reference, store, &mut figures)?;
        return Ok(0);
    }
    if a.data_dir.exists() {
        std::fs::remove_dir_all(&a.data_dir)?;
    }
    std::fs::create_dir_all(&a.data_dir)?;
    let agg_bin = std::env::current_exe()?.with_file_name("owsu-aggregator");
    anyhow::ensure!(
        agg_bin.exists(),
        "{} not found: build all binaries first (cargo build --release --workspace)",
        agg_bin.display()
    );
    let prefix = format!(
        "bench-{}.",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    let brokers = crate::demo::kafka(a.brokers.as_deref(), &prefix, a.partitions)?;
    let mut figures: Vec<(String, String)> = Vec::new();
    println!(
        "owsu bench: {} events, {} kills, {} partitions, broker {brokers}",
        a.events, a.kills, a.partitions
    );

    // 1. Codec.
    let hasher = IdHasher::new(b"bench-secret-0123456789abcdef")?;
    let sim = Simulator::new(
        &reference,
        SimConfig {
            scale: 0.04,
            ..SimConfig::new(2021, 1)
        },
    );
    let mut events = Vec::new();
    sim.run(|e| {
        if let Emit::Event(e) = e {
            if events.len() < 200_000 {
                events.push(pseudonymise(e.clone(), &hasher));
            }
        }
        Ok(())
    })?;
    let t = Instant::now();
    let encoded: Vec<Vec<u8>> = events
        .iter()
        .map(owsu_schemas::encode)
        .collect::<Result<_, _>>()?;
    let enc = t.elapsed();
    let t = Instant::now();
    for b in &encoded {
        owsu_schemas::decode(b)?;
    }
    let dec = t.elapsed();
    let bytes: usize = encoded.iter().map(Vec::len).sum();
    say(
        &mut figures,
        "Avro encode (events/s)",
        format!("{:.0}", events.len() as f64 / enc.as_secs_f64()),
    );
    say(
        &mut figures,
        "Avro decode, latest schema version (events/s)",
        format!("{:.0}", events.len() as f64 / dec.as_secs_f64()),
    );
    say(
        &mut figures,
        "encoded size (bytes/event)",
        format!("{:.0}", bytes as f64 / events.len() as f64),
    );

    // What signed events cost (issue 11): one office key signing, one verifying, on one core,
    // over the same encoded events (a sample: signing is the slow part).
    let sample = &encoded[..encoded.len().min(100_000)];
    let key = owsu_schemas::signing::OfficeKey::generate("KH-0101");
    let keys = owsu_schemas::signing::PublicKeys::new(vec![owsu_schemas::signing::PublicKey {
        unit_code: "KH-0101".into(),
        key_id: key.key_id(),
        key: key.public_key(),
        valid_from: 0,
        valid_until: None,
    }]);
    let t = Instant::now();
    let signatures: Vec<String> = sample.iter().map(|b| key.sign(b)).collect();
    let sign = t.elapsed();
    let t = Instant::now();
    for (b, s) in sample.iter().zip(&signatures) {
        keys.verify("KH-0101", b, Some(s.as_bytes()), 1)
            .map_err(|e| anyhow::anyhow!("bench signature: {e}"))?;
    }
    let verify = t.elapsed();
    say(
        &mut figures,
        "Ed25519 sign / verify, one core (events/s)",
        format!(
            "{:.0} / {:.0}",
            sample.len() as f64 / sign.as_secs_f64(),
            sample.len() as f64 / verify.as_secs_f64()
        ),
    );

    // 2. The peer of publish: Kafka's ProducerPerformance, records of our encoded size.
    let record_size = format!("{:.0}", bytes as f64 / events.len() as f64);
    let perf_prefix = format!("{prefix}perf.");
    crate::demo::ensure_topics(&brokers, &perf_prefix, a.partitions)?;
    let perf_topic = format!("{perf_prefix}{}", owsu_schemas::topics::SERVICE_EVENTS);
    let out = kafka_tool(
        "org.apache.kafka.tools.ProducerPerformance",
        &[
            "--topic",
            &perf_topic,
            "--num-records",
            &a.events.to_string(),
            "--record-size",
            &record_size,
            "--throughput",
            "-1",
            "--producer-props",
            &format!("bootstrap.servers={brokers}"),
            "acks=all",
            "enable.idempotence=true",
        ],
    )?;
    let producer_perf =
        producer_perf_rate(&out).context("no rate in ProducerPerformance's output")?;
    say(
        &mut figures,
        "Kafka ProducerPerformance (records/s)",
        format!("{producer_perf:.0} ({record_size} B, acks=all, idempotent)"),
    );

    // 3. Producer.
    // A full year is 54,944 day closures plus about 4.95 million events that scale (seed 1, 2021).
    let scale = ((a.events as f64 - 54_944.0) / 4_953_742.0).max(0.001);
    let import = a.data_dir.join("year.jsonl");
    let secret = a.data_dir.join("secret");
    owsu_schemas::ids::write_secret_file(&secret, b"bench-secret-0123456789abcdef")?;
    let t = Instant::now();
    simulate(&reference, 2021, scale, &import)?;
    let lines = std::fs::read_to_string(&import)?.lines().count() as f64;
    say(
        &mut figures,
        "simulate to import file (events/s)",
        format!(
            "{:.0} ({} events)",
            lines / t.elapsed().as_secs_f64(),
            lines
        ),
    );
    let t = Instant::now();
    let outbox = a.data_dir.join("outbox");
    publish(
        &reference,
        &import,
        Publishing::plain(&brokers, &prefix),
        &secret,
        &outbox,
    )?;
    let publish_rate = lines / t.elapsed().as_secs_f64();
    say(
        &mut figures,
        "publish: validate, hash, outbox fsync, Kafka acks=all (events/s)",
        format!("{publish_rate:.0}"),
    );
    say(
        &mut figures,
        "publish ÷ ProducerPerformance",
        format!("{:.2}", publish_rate / producer_perf),
    );

    // The peer of the aggregator: Kafka's ConsumerPerformance over our three event topics.
    let (mut perf_msgs, mut perf_secs) = (0.0, 0.0);
    for k in owsu_schemas::RecordKind::ALL {
        let topic = format!("{prefix}{}", k.topic());
        let n = topic_messages(&brokers, &topic, a.partitions)?;
        if n == 0 {
            continue;
        }
        let out = kafka_tool(
            "org.apache.kafka.tools.ConsumerPerformance",
            &[
                "--bootstrap-server",
                &brokers,
                "--topic",
                &topic,
                "--messages",
                &n.to_string(),
                "--timeout",
                "60000",
            ],
        )?;
        let (m, secs) =
            consumer_perf(&out).context("no figures in ConsumerPerformance's output")?;
        perf_msgs += m;
        perf_secs += secs;
    }
    let consumer_perf_rate = perf_msgs / perf_secs.max(1e-9);
    say(
        &mut figures,
        "Kafka ConsumerPerformance, our topics (messages/s)",
        format!("{consumer_perf_rate:.0} ({perf_msgs:.0} messages)"),
    );

    // 3. Clean aggregation.
    // An aggregator on `broker` (with `extra` arguments: the secure run's credentials).
    let spawn_with = |broker: &str,
                      extra: &[String],
                      prefix: &str,
                      group: &str,
                      store: &Path,
                      log: &Path|
     -> anyhow::Result<Child> {
        Command::new(&agg_bin)
            .args([
                "run",
                "--brokers",
                broker,
                "--topic-prefix",
                prefix,
                "--group",
                group,
                "--store",
            ])
            .arg(store)
            .arg("--state-dir")
            .arg(log.with_extension("state"))
            .args([
                "--until-caught-up",
                "--metrics-addr",
                "",
                "--session-timeout-ms",
                "6000",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)?,
            )
            .spawn()
            .context("spawning owsu-aggregator")
    };
    let spawn_on = |prefix: &str, group: &str, store: &Path, log: &Path| {
        spawn_with(&brokers, &[], prefix, group, store, log)
    };
    let spawn = |group: &str, store: &Path, log: &Path| spawn_on(&prefix, group, store, log);
    let clean_store = a.data_dir.join("store-clean");
    let t = Instant::now();
    let mut child = spawn(
        &format!("{prefix}clean"),
        &clean_store,
        &a.data_dir.join("clean.log"),
    )?;
    let (status, peak) = wait_measuring(&mut child)?;
    anyhow::ensure!(
        status.success(),
        "aggregator failed: see {}",
        a.data_dir.join("clean.log").display()
    );
    let clean_secs = t.elapsed().as_secs_f64();
    say(
        &mut figures,
        "aggregate, clean run (events/s)",
        format!("{:.0} ({clean_secs:.1} s)", lines / clean_secs),
    );
    say(
        &mut figures,
        "aggregate, clean run peak RSS (MiB)",
        format!("{peak:.0}"),
    );
    say(
        &mut figures,
        "catch-up, time-ordered ÷ ConsumerPerformance",
        format!("{:.3}", lines / clean_secs / consumer_perf_rate),
    );
    let (active, on_disk) = files_in_store(&clean_store)?;
    say(
        &mut figures,
        "files in the store, time-ordered (active / on disk)",
        format!("{active} / {on_disk}"),
    );

    let mut equal = true;
    // What security costs: the same year over TLS + SASL/SCRAM with every event signed by its
    // unit's key (publish) and every signature verified (aggregate), on a secure broker of the
    // same build beside the plaintext one, against the plaintext figures above.
    if !a.no_secure {
        let port = crate::secure::DEFAULT_PORT + 100;
        let group = format!("{prefix}secure");
        let state = a.data_dir.join("secure-kafka");
        let s = crate::secure::start(
            port,
            &state,
            &prefix,
            a.partitions,
            &group,
            &a.data_dir.join("secure"),
            &reference,
        )?;
        let signed = Publishing {
            kafka: s.kafka(&s.offices, &prefix),
            signing: Some(s.keyring()?),
            rate: 0,
        };
        let t = Instant::now();
        publish(
            &reference,
            &import,
            signed,
            &secret,
            &a.data_dir.join("outbox-secure"),
        )?;
        let secure_publish = lines / t.elapsed().as_secs_f64();
        let log = a.data_dir.join("secure.log");
        let t = Instant::now();
        let mut child = spawn_with(
            &s.bootstrap,
            &s.aggregator_args(),
            &prefix,
            &group,
            &a.data_dir.join("store-secure"),
            &log,
        )?;
        let (status, _) = wait_measuring(&mut child)?;
        anyhow::ensure!(
            status.success(),
            "aggregator failed on the secure broker: see {}",
            log.display()
        );
        let secure_secs = t.elapsed().as_secs_f64();
        s.stop()?;
        // Every event was signed by its own unit: nothing may be missing.
        for (table, same, rows) in same_summaries(&clean_store, &a.data_dir.join("store-secure"))? {
            equal &= same;
            say(
                &mut figures,
                &format!("secure run {table} equals plaintext run"),
                format!("{} ({rows} rows)", if same { "yes" } else { "NO" }),
            );
        }
        say(
            &mut figures,
            "publish, TLS + SCRAM + Ed25519 signing (events/s)",
            format!("{secure_publish:.0}"),
        );
        say(
            &mut figures,
            "publish, secure ÷ plaintext",
            format!("{:.2}", secure_publish / publish_rate),
        );
        say(
            &mut figures,
            "aggregate, TLS + SCRAM + signatures verified (events/s)",
            format!("{:.0} ({secure_secs:.1} s)", lines / secure_secs),
        );
        say(
            &mut figures,
            "aggregate, secure ÷ plaintext",
            format!("{:.2}", clean_secs / secure_secs),
        );
    }

    // The same events shuffled: a late bulk re-import.
    let mut rows: Vec<String> = std::fs::read_to_string(&import)?
        .lines()
        .map(str::to_owned)
        .collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..rows.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        rows.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let shuffled = a.data_dir.join("shuffled.jsonl");
    std::fs::write(&shuffled, rows.join("\n") + "\n")?;
    drop(rows);
    let shuf_prefix = format!("{prefix}shuf.");
    crate::demo::ensure_topics(&brokers, &shuf_prefix, a.partitions)?;
    publish(
        &reference,
        &shuffled,
        Publishing::plain(&brokers, &shuf_prefix),
        &secret,
        &a.data_dir.join("outbox-shuffled"),
    )?;
    let shuf_store = a.data_dir.join("store-shuffled");
    let t = Instant::now();
    let mut child = spawn_on(
        &shuf_prefix,
        &format!("{prefix}shuf"),
        &shuf_store,
        &a.data_dir.join("shuffled.log"),
    )?;
    let (status, shuf_peak) = wait_measuring(&mut child)?;
    anyhow::ensure!(
        status.success(),
        "aggregator failed on the shuffled events: see {}",
        a.data_dir.join("shuffled.log").display()
    );
    let shuf_secs = t.elapsed().as_secs_f64();
    say(
        &mut figures,
        "aggregate, shuffled events (events/s)",
        format!(
            "{:.0} ({shuf_secs:.1} s), peak RSS {shuf_peak:.0} MiB",
            lines / shuf_secs
        ),
    );
    say(
        &mut figures,
        "catch-up, shuffled ÷ ConsumerPerformance",
        format!("{:.3}", lines / shuf_secs / consumer_perf_rate),
    );
    let (active, on_disk) = files_in_store(&shuf_store)?;
    say(
        &mut figures,
        "files in the store, shuffled (active / on disk)",
        format!("{active} / {on_disk}"),
    );

    // Takeover: a new instance with no local state takes every partition of the caught-up group.
    let t = Instant::now();
    let mut child = spawn(
        &format!("{prefix}clean"),
        &clean_store,
        &a.data_dir.join("takeover.log"),
    )?;
    let (status, _) = wait_measuring(&mut child)?;
    anyhow::ensure!(
        status.success(),
        "takeover run failed: see {}",
        a.data_dir.join("takeover.log").display()
    );
    say(
        &mut figures,
        "takeover of every partition, no local state (s)",
        format!("{:.1}", t.elapsed().as_secs_f64()),
    );

    // 4. Crash run.
    let crash_store = a.data_dir.join("store-crash");
    let log = a.data_dir.join("crash.log");
    let group = format!("{prefix}crash");
    let mut kills = 0;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let t = Instant::now();
    let mut crash_peak = 0.0f64;
    while kills < a.kills {
        let mut c = spawn(&group, &crash_store, &log)?;
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Short enough that every kill lands before the run could finish: about a second to
        // start and restore, then up to a fraction of the clean run's work.
        let wait = Duration::from_secs_f64(
            (clean_secs / (a.kills as f64 + 2.0)) * (0.5 + (state % 1000) as f64 / 1000.0) + 1.0,
        );
        let start = Instant::now();
        while start.elapsed() < wait && c.try_wait()?.is_none() {
            crash_peak = crash_peak.max(peak_mib(c.id()).unwrap_or(0.0));
            std::thread::sleep(Duration::from_millis(100));
        }
        if c.try_wait()?.is_some() {
            break; // finished before the kill
        }
        c.kill()?;
        c.wait()?;
        kills += 1;
        println!(
            "    kill -9 #{kills} after {:.1} s",
            start.elapsed().as_secs_f64()
        );
    }
    let mut c = spawn(&group, &crash_store, &log)?;
    let (status, p) = wait_measuring(&mut c)?;
    anyhow::ensure!(
        status.success(),
        "aggregator failed after kills: see {}",
        log.display()
    );
    say(
        &mut figures,
        "aggregate with kill -9 (kills, total wall s)",
        format!("{kills} kills, {:.1} s", t.elapsed().as_secs_f64()),
    );
    say(
        &mut figures,
        "aggregate after restarts peak RSS (MiB)",
        format!("{:.0}", crash_peak.max(p)),
    );
    for (table, same, rows) in same_summaries(&clean_store, &crash_store)? {
        equal &= same;
        say(
            &mut figures,
            &format!("crash-run {table} equals clean run"),
            format!("{} ({rows} rows)", if same { "yes" } else { "NO" }),
        );
    }
    // Compaction, then rebuild against DuckDB on the same raw files.
    let run_agg = |args: &[&str], log: &str| -> anyhow::Result<(f64, f64)> {
        let t = Instant::now();
        let mut c = Command::new(&agg_bin)
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(a.data_dir.join(log))?)
            .spawn()?;
        let (status, peak) = wait_measuring(&mut c)?;
        anyhow::ensure!(
            status.success(),
            "owsu-aggregator {} failed: see {log}",
            args[0]
        );
        Ok((t.elapsed().as_secs_f64(), peak))
    };
    let store_arg = clean_store.to_str().context("utf-8 path")?;
    let (secs, _) = run_agg(&["compact", "--store", store_arg], "compact.log")?;
    let (active, _) = files_in_store(&clean_store)?;
    say(
        &mut figures,
        "compact the raw tables (s; active files after)",
        format!("{secs:.1}; {active}"),
    );
    let (rebuild_secs, rebuild_peak) = run_agg(&["rebuild", "--store", store_arg], "rebuild.log")?;
    say(
        &mut figures,
        "rebuild: all summaries from raw (s)",
        format!("{rebuild_secs:.1}, peak RSS {rebuild_peak:.0} MiB"),
    );
    let script = crate::demo::repo_root()
        .context("infra/bench not found: run from the repository")?
        .join("infra/bench/duckdb_summaries.py");
    let py = python()?;
    let t = Instant::now();
    let out = Command::new(&py).arg(&script).arg(&clean_store).output()?;
    let duck_secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "DuckDB script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let duck: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    say(
        &mut figures,
        "DuckDB: the same summaries from the same raw files (s)",
        format!("{duck_secs:.1}"),
    );
    say(
        &mut figures,
        "rebuild ÷ DuckDB (time)",
        format!("{:.2}", rebuild_secs / duck_secs),
    );
    let ours = read_sorted(&clean_store, "services_daily")?;
    let delivered = ours.column("services_delivered")?.i64()?.sum().unwrap_or(0);
    let revenue = ours.column("revenue_riel")?.i64()?.sum().unwrap_or(0);
    let same = duck["services_delivered"].as_i64() == Some(delivered)
        && duck["revenue_riel"].as_i64() == Some(revenue);
    equal &= same;
    say(
        &mut figures,
        "DuckDB totals equal ours (delivered, revenue)",
        format!(
            "{} ({delivered}, {revenue})",
            if same { "yes" } else { "NO" }
        ),
    );

    // The dashboard over the clean run's lake.
    dashboard(
        &reference,
        clean_store.to_str().context("utf-8 store path")?,
        &mut figures,
    )?;

    // The oversight rules against the simulator's planted problems, over several seeds.
    detection(&reference, &brokers, &prefix, &a, &mut figures)?;

    // Live freshness: the time-ordered year replayed at 10× the national peak rate into a live
    // aggregator; each message's Kafka timestamp to the commit that put it in the summaries.
    if a.live_secs > 0 {
        // The national peak: the busiest minute of the simulated year, scaled to full volume.
        let mut per_minute: std::collections::HashMap<String, u64> = Default::default();
        let text = std::fs::read_to_string(&import)?;
        for l in text.lines() {
            if let Some(i) = l.find("\"occurred_at\":\"") {
                let at = &l[i + 15..];
                if let Some(minute) = at.get(..16) {
                    *per_minute.entry(minute.to_owned()).or_default() += 1;
                }
            }
        }
        let busiest = per_minute.values().copied().max().unwrap_or(0) as f64;
        let peak = busiest / 60.0 / scale;
        let rate = (peak * 10.0).ceil().max(1.0) as u64;
        let n = (rate * a.live_secs) as usize;
        let live_file = a.data_dir.join("live.jsonl");
        std::fs::write(
            &live_file,
            text.lines().take(n).collect::<Vec<_>>().join("\n") + "\n",
        )?;
        drop(text);
        let live_prefix = format!("{prefix}live.");
        crate::demo::ensure_topics(&brokers, &live_prefix, a.partitions)?;
        let log = a.data_dir.join("live.log");
        let mut agg = Command::new(&agg_bin)
            .args([
                "--log-format",
                "json",
                "run",
                "--brokers",
                &brokers,
                "--topic-prefix",
                &live_prefix,
                "--group",
                &format!("{prefix}live"),
                "--store",
            ])
            .arg(a.data_dir.join("store-live"))
            .arg("--state-dir")
            .arg(log.with_extension("state"))
            .args(["--metrics-addr", ""])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let started = Instant::now();
        while !std::fs::read_to_string(&log)?.contains("partitions assigned") {
            anyhow::ensure!(
                agg.try_wait()?.is_none() && started.elapsed() < Duration::from_secs(120),
                "live aggregator did not start: see {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        publish(
            &reference,
            &live_file,
            Publishing {
                rate,
                ..Publishing::plain(&brokers, &live_prefix)
            },
            &secret,
            &a.data_dir.join("outbox-live"),
        )?;
        std::thread::sleep(Duration::from_secs(3));
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(agg.id().to_string())
            .status();
        let (status, _) = wait_measuring(&mut agg)?;
        anyhow::ensure!(
            status.success(),
            "live aggregator failed: see {}",
            log.display()
        );
        let f: serde_json::Value = std::fs::read_to_string(&log)?
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .rfind(|v| {
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("freshness"))
            })
            .context("the live aggregator logged no freshness")?;
        say(
            &mut figures,
            "national peak (busiest minute, events/s); replay rate",
            format!("{peak:.1}; {rate} events/s for {} s", a.live_secs),
        );
        say(
            &mut figures,
            "live freshness, Kafka timestamp to summary commit (ms)",
            format!(
                "p50 {}, p99 {}, max {} ({} events)",
                f["fields"]["p50_ms"],
                f["fields"]["p99_ms"],
                f["fields"]["max_ms"],
                f["fields"]["events"]
            ),
        );
    }

    // History: one run per simulated year on one store and group, each resuming from its local
    // state; then an instance with no local state takes every partition over.
    if a.history_years > 0 {
        let hist_prefix = format!("{prefix}hist.");
        crate::demo::ensure_topics(&brokers, &hist_prefix, a.partitions)?;
        let hist_store = a.data_dir.join("store-history");
        let group = format!("{prefix}hist");
        let log = a.data_dir.join("history.log");
        let mut peaks = Vec::new();
        for y in 0..a.history_years {
            let year = 2021 + y;
            let file = a.data_dir.join(format!("history-{year}.jsonl"));
            simulate(&reference, year, scale, &file)?;
            publish(
                &reference,
                &file,
                Publishing::plain(&brokers, &hist_prefix),
                &secret,
                &a.data_dir.join("outbox-history"),
            )?;
            let events = std::fs::read_to_string(&file)?.lines().count() as f64;
            std::fs::remove_file(&file)?;
            let t = Instant::now();
            let mut child = spawn_on(&hist_prefix, &group, &hist_store, &log)?;
            let (status, peak) = wait_measuring(&mut child)?;
            anyhow::ensure!(
                status.success(),
                "aggregator failed on year {}: see {}",
                y + 1,
                log.display()
            );
            let secs = t.elapsed().as_secs_f64();
            peaks.push(peak);
            say(
                &mut figures,
                &format!("history year {} ({year}): events/s, peak RSS", y + 1),
                format!(
                    "{:.0} ({events:.0} events, {secs:.1} s), {peak:.0} MiB",
                    events / secs
                ),
            );
        }
        let state_mib = std::fs::read_dir(hist_store.join("state"))?
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "redb"))
            .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
            .sum::<u64>() as f64
            / (1 << 20) as f64;
        let t = Instant::now();
        let takeover_log = a.data_dir.join("history-takeover.log");
        let mut child = spawn_on(&hist_prefix, &group, &hist_store, &takeover_log)?;
        let (status, peak) = wait_measuring(&mut child)?;
        anyhow::ensure!(
            status.success(),
            "takeover after {} years failed: see {}",
            a.history_years,
            takeover_log.display()
        );
        say(
            &mut figures,
            &format!(
                "takeover after {} years, no local state (s)",
                a.history_years
            ),
            format!(
                "{:.1} ({state_mib:.0} MiB of state snapshots), peak RSS {peak:.0} MiB",
                t.elapsed().as_secs_f64()
            ),
        );
        say(
            &mut figures,
            &format!("peak RSS year 1 -> year {} (MiB)", a.history_years),
            format!(
                "{:.0} -> {:.0}",
                peaks.first().copied().unwrap_or(0.0),
                peaks.last().copied().unwrap_or(0.0)
            ),
        );
    }

    std::fs::write(
        a.data_dir.join("figures.json"),
        serde_json::to_vec_pretty(
            &figures
                .iter()
                .map(|(k, v)| serde_json::json!({"figure": k, "value": v}))
                .collect::<Vec<_>>(),
        )?,
    )?;
    println!(
        "figures written to {}",
        a.data_dir.join("figures.json").display()
    );
    clean_up(&brokers, &prefix, &a.data_dir)?;
    Ok(if equal { 0 } else { 1 })
}

/// The oversight rules (issue 13): for seeds 1 to `--detection-seeds`, a 2021 at
/// `--detection-scale` simulated with its planted problems (units falling silent, a volume
/// collapse, a border pass no longer recorded, unit-days losing events: at random units and
/// dates per seed), published to topics of its own, aggregated into a lake of its own, and
/// `owsu-jobs inactive --as-of 2021-12-31` held against what was planted: per rule, recall
/// (planted problems found) and precision (flags a planted problem explains).
fn detection(
    reference: &Reference,
    brokers: &str,
    prefix: &str,
    a: &BenchArgs,
    figures: &mut Vec<(String, String)>,
) -> anyhow::Result<()> {
    use crate::truth::{score, RuleScore, RULES};
    use owsu_producer::commands::Pace;
    if a.detection_seeds == 0 {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let secret = a.data_dir.join("detection-secret");
    owsu_schemas::ids::write_secret_file(&secret, b"bench-detection-0123456789abcdef")?;
    let hasher = IdHasher::new(&owsu_schemas::ids::read_secret_file(&secret)?)?;
    let mut totals: Vec<(&str, RuleScore)> =
        RULES.iter().map(|r| (*r, RuleScore::default())).collect();
    let t = Instant::now();
    for seed in 1..=a.detection_seeds {
        let topics = format!("{prefix}det{seed}.");
        crate::demo::ensure_topics(brokers, &topics, a.partitions)?;
        let mut publisher = Publisher::new(PublisherConfig {
            kafka: KafkaArgs::local(brokers, &topics),
            outbox_dir: a.data_dir.join(format!("outbox-det{seed}")),
            delivery_timeout: Duration::from_secs(30),
            segment_records: 200_000,
            signing: None,
        })?;
        let config = SimConfig {
            scale: a.detection_scale,
            ..SimConfig::new(2021, seed)
        };
        let sim = commands::simulate(
            reference,
            config,
            SimDestination::Kafka {
                hasher: &hasher,
                publisher: &mut publisher,
                pace: Pace::Max { chunk: 200_000 },
            },
        )?;
        drop(publisher);
        anyhow::ensure!(
            sim.report.pending == 0,
            "seed {seed}: events left in the outbox"
        );
        let store_dir = a.data_dir.join(format!("store-det{seed}"));
        let store = owsu_lake::Store::open(store_dir.to_str().context("utf-8 path")?)?;
        let mut pipeline = owsu_aggregator::pipeline::PipelineConfig::new(
            KafkaArgs::local(brokers, &topics),
            &format!("{topics}agg"),
            store.url(),
        );
        pipeline.until_caught_up = true;
        owsu_aggregator::service::run(&rt, pipeline, store.clone(), reference.clone(), None)?;
        let as_of = chrono::NaiveDate::from_ymd_opt(2021, 12, 31).expect("date");
        let report = rt.block_on(owsu_jobs::inactive::run(
            &store, reference, as_of, None, &a.rules,
        ))?;
        for ((_, total), (_, s)) in totals.iter_mut().zip(score(&report, &sim.truth.planted)) {
            total.add(s);
        }
        // The flags no planted problem explains, with their evidence: what a false positive is.
        for f in report
            .flags
            .iter()
            .filter(|f| !sim.truth.planted.iter().any(|p| crate::truth::finds(f, p)))
        {
            println!(
                "  seed {seed}: unplanted {} at {} since {}: {}",
                f.reason,
                f.unit_code,
                f.since,
                f.evidence()
            );
        }
        std::fs::remove_dir_all(&store_dir).ok();
        std::fs::remove_dir_all(a.data_dir.join(format!("outbox-det{seed}"))).ok();
    }
    let ratio = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.2}"));
    say(
        figures,
        "oversight rules: seeds × scale (s)",
        format!(
            "{} × {} ({:.0} s)",
            a.detection_seeds,
            a.detection_scale,
            t.elapsed().as_secs_f64()
        ),
    );
    for (rule, s) in totals {
        say(
            figures,
            &format!("rule {rule}: recall, precision"),
            format!(
                "{} ({}/{}), {} ({}/{})",
                ratio(s.recall()),
                s.found,
                s.planted,
                ratio(s.precision()),
                s.true_flags,
                s.flags
            ),
        );
    }
    Ok(())
}

/// Requests per dashboard page measured.
const DASHBOARD_REQUESTS: usize = 50;

/// The dashboard (issue 13): the time to load its board from the lake (what each background
/// refresh costs), then `owsu-jobs serve` on a loopback port and [`DASHBOARD_REQUESTS`] HTTP
/// requests of each kind of page, one after another: p50, p99 and the slowest, whole response.
fn dashboard(
    reference: &Reference,
    store_url: &str,
    figures: &mut Vec<(String, String)>,
) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let store = owsu_lake::Store::open_existing(store_url)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let t = Instant::now();
    let board = rt.block_on(owsu_jobs::dashboard::load(&store, reference, None))?;
    say(
        figures,
        "dashboard: board loaded from the lake (s)",
        format!("{:.2} (as of {})", t.elapsed().as_secs_f64(), board.as_of),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let served = reference.clone();
    // The server lives until the bench ends (its refresh would not come within the bench).
    std::thread::spawn(move || {
        let config = owsu_jobs::serve::ServeConfig {
            refresh: Duration::from_secs(24 * 3600),
            as_of: None,
        };
        let result = rt.block_on(async {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            owsu_jobs::serve::serve(store, served, config, listener).await
        });
        if let Err(e) = result {
            eprintln!("dashboard server: {e:#}");
        }
    });
    let get = |path: &str| -> anyhow::Result<(Duration, usize)> {
        let t = Instant::now();
        let mut c = std::net::TcpStream::connect(addr)?;
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut body = Vec::new();
        c.read_to_end(&mut body)?;
        anyhow::ensure!(body.starts_with(b"HTTP/1.1 200"), "GET {path}: not 200");
        Ok((t.elapsed(), body.len()))
    };
    let started = Instant::now();
    while get("/health/ready").is_err() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(300),
            "the dashboard did not come up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for path in ["/", "/?lang=km", "/p/KH-12", "/u/KH-1201"] {
        let mut times = Vec::with_capacity(DASHBOARD_REQUESTS);
        let mut bytes = 0;
        for _ in 0..DASHBOARD_REQUESTS {
            let (t, n) = get(path)?;
            times.push(t.as_secs_f64() * 1000.0);
            bytes = n;
        }
        times.sort_by(f64::total_cmp);
        let at =
            |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
        say(
            figures,
            &format!("dashboard GET {path} (ms)"),
            format!(
                "p50 {:.1}, p99 {:.1}, max {:.1} ({} kB)",
                at(0.5),
                at(0.99),
                times[times.len() - 1],
                bytes / 1000
            ),
        );
    }
    Ok(())
}

/// A run leaves several GB behind (five years of history, stores, import files, topics): only
/// the figures, the logs and the clean run's store stay.
fn clean_up(brokers: &str, prefix: &str, dir: &Path) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    for e in std::fs::read_dir(dir)?.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let keep = name == "figures.json" || name == "store-clean" || name.ends_with(".log");
        if !keep {
            if p.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else {
                std::fs::remove_file(&p)?;
            }
        }
    }
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let md = c.fetch_metadata(None, Duration::from_secs(30))?;
    let topics: Vec<String> = md
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|t| t.starts_with(prefix))
        .collect();
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    for r in rt.block_on(admin.delete_topics(
        &names,
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))? {
        if let Err((t, e)) = r {
            eprintln!("  (could not delete the bench's topic {t}: {e})");
        }
    }
    println!(
        "removed {} topics and the intermediate files (kept: figures, logs, the clean run's store)",
        names.len()
    );
    Ok(())
}
