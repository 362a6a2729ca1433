//! `owsu bench`: speed and memory, measured and printed (never asserted in tests).
//!
//! 1. codec: Avro single-object encode and decode rates;
//! 2. producer: simulate a ~1,000,000-event year into the import format, then `publish` it;
//! 3. aggregator: a clean `run --until-caught-up` as a child process (events/s, peak RSS);
//! 4. crashes: the same topics with a new consumer group and store, `kill -9` at random moments
//!    and restarted each time; its summaries must equal the clean run's, row for row.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use owsu_producer::import::pseudonymise;
use owsu_producer::simulate::{Emit, SimConfig, Simulator};
use owsu_schemas::ids::IdHasher;
use owsu_schemas::reference::Reference;
use polars::prelude::*;

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

pub fn run(a: BenchArgs) -> anyhow::Result<i32> {
    let reference = Reference::load(None)?;
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
        "Avro decode + schema resolution (events/s)",
        format!("{:.0}", events.len() as f64 / dec.as_secs_f64()),
    );
    say(
        &mut figures,
        "encoded size (bytes/event)",
        format!("{:.0}", bytes as f64 / events.len() as f64),
    );

    // 2. Producer.
    // A full year is 54,944 day closures plus about 4.95 million events that scale (seed 1, 2021).
    let scale = ((a.events as f64 - 54_944.0) / 4_953_742.0).max(0.001);
    let import = a.data_dir.join("year.jsonl");
    let secret = a.data_dir.join("secret");
    std::fs::write(&secret, "bench-secret-0123456789abcdef")?;
    let t = Instant::now();
    let code = owsu_producer::cli::run(owsu_producer::cli::Cli::parse_from([
        "owsu-producer",
        "simulate",
        "--year",
        "2021",
        "--scale",
        &format!("{scale:.4}"),
        "--out",
        import.to_str().unwrap(),
    ]))?;
    anyhow::ensure!(code == 0, "simulate failed");
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
    let code = owsu_producer::cli::run(owsu_producer::cli::Cli::parse_from([
        "owsu-producer",
        "publish",
        "--input",
        import.to_str().unwrap(),
        "--brokers",
        &brokers,
        "--topic-prefix",
        &prefix,
        "--id-secret-file",
        secret.to_str().unwrap(),
        "--outbox",
        outbox.to_str().unwrap(),
    ]))?;
    anyhow::ensure!(code == 0, "publish failed with exit code {code}");
    say(
        &mut figures,
        "publish: validate, hash, outbox fsync, Kafka acks=all (events/s)",
        format!("{:.0}", lines / t.elapsed().as_secs_f64()),
    );

    // 3. Clean aggregation.
    let spawn = |group: &str, store: &Path, log: &Path| -> anyhow::Result<Child> {
        Command::new(&agg_bin)
            .args([
                "run",
                "--brokers",
                &brokers,
                "--topic-prefix",
                &prefix,
                "--group",
                group,
                "--store",
            ])
            .arg(store)
            .args([
                "--until-caught-up",
                "--metrics-addr",
                "",
                "--session-timeout-ms",
                "6000",
            ])
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
        let wait = Duration::from_secs_f64(
            (clean_secs / (a.kills as f64 + 1.0)) * (0.5 + (state % 1000) as f64 / 1000.0) + 3.0,
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
    let mut equal = true;
    for table in [
        "services_daily",
        "complaints_daily",
        "unit_days",
        "processing_times",
    ] {
        let (x, y) = (
            read_sorted(&clean_store, table)?,
            read_sorted(&crash_store, table)?,
        );
        let same = x.height() > 0 && x.equals_missing(&y);
        equal &= same;
        say(
            &mut figures,
            &format!("crash-run {table} equals clean run"),
            format!("{} ({} rows)", if same { "yes" } else { "NO" }, x.height()),
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
    Ok(if equal { 0 } else { 1 })
}
