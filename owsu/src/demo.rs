//! `owsu demo`: the whole pipeline on one machine, as a newcomer's first command.
//!
//! Starts a local Kafka (unless `--brokers` names one), simulates 2020 and 2021 for all 228
//! units, aggregates until caught up, runs the three jobs and prints the national 2021 table and
//! where the outputs are. State lives in `--data-dir` (default `data/demo`): a second run reuses
//! the years already published; `--fresh` starts over on new topics. `--secure` runs the same on
//! the secure local deployment of [`crate::secure`] (TLS, principals, ACLs, signed events).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use owsu_aggregator::pipeline::PipelineConfig;
use owsu_lake::Store;
use owsu_producer::commands::{self, Pace, SimDestination};
use owsu_producer::publish::{Publisher, PublisherConfig};
use owsu_producer::simulate::SimConfig;
use owsu_runtime::kafka::KafkaArgs;
use owsu_runtime::logging::LogFormat;
use owsu_schemas::ids::IdHasher;
use owsu_schemas::reference::Reference;
use serde::{Deserialize, Serialize};

#[derive(Debug, Parser)]
#[command(
    name = "owsu",
    version,
    about = "The OWSU national pipeline, end to end on one machine."
)]
/// The `owsu` command line.
pub struct Cli {
    /// Print the log on the terminal too (by default the demo writes it to owsu.log in its data
    /// directory and shows only its steps and figures; the bench always prints it).
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// What to run.
    #[command(subcommand)]
    pub command: DemoCommand,
}

/// The umbrella's subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DemoCommand {
    /// Start Kafka if needed, simulate 2020 and 2021 for all 228 units, aggregate, and write the
    /// yearly review, the researchers' dataset and the oversight list.
    Demo(DemoArgs),
    /// Measure speed and memory side by side with Kafka's perf tools and DuckDB: codec, publish,
    /// a 1,000,000-event catch-up time-ordered and shuffled, takeover, kill -9 at random moments
    /// (its summaries must equal the clean run's), compact, rebuild, and five years of history.
    Bench(crate::bench::BenchArgs),
}

/// `owsu demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Kafka bootstrap servers. Default: start (or reuse) a local broker on 127.0.0.1:9092 with
    /// infra/kafka/kafka.sh.
    #[arg(long, env = "OWSU_BROKERS")]
    pub brokers: Option<String>,
    /// Where the demo keeps its store, outbox, secret and reports (default data/demo, or
    /// data/demo-secure with --secure).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Forget earlier runs: new topics, empty store.
    #[arg(long)]
    pub fresh: bool,
    /// Share of the national volume to simulate (1.0 = the published 2021 figures).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Simulation seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Partitions of each topic the demo creates.
    #[arg(long, default_value_t = 12)]
    pub partitions: i32,
    /// Run on the project's Kafka in secure mode (its own broker on port 9192): TLS with a
    /// private CA, SASL/SCRAM-SHA-512 principals with least-privilege ACLs (one for the
    /// simulated offices, one for the aggregator), every event signed with its unit's Ed25519
    /// key, and the aggregator dead-lettering any event not signed by its own unit.
    #[arg(long, conflicts_with = "brokers")]
    pub secure: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    topic_prefix: String,
    seed: u64,
    scale: f64,
    published: Vec<i32>,
    #[serde(default)]
    secure: bool,
}

const YEARS: [i32; 2] = [2020, 2021];

/// Simulated events per outbox segment and delivery round (as `owsu-producer simulate`).
const SIM_CHUNK: usize = 200_000;

/// Finds the repository (for infra/kafka/kafka.sh): from the working directory or the binary upwards.
pub(crate) fn repo_root() -> Option<PathBuf> {
    let starts = [std::env::current_dir().ok(), std::env::current_exe().ok()];
    for s in starts.into_iter().flatten() {
        for dir in s.ancestors() {
            if dir.join("infra/kafka/kafka.sh").is_file() {
                return Some(dir.to_path_buf());
            }
        }
    }
    None
}

struct Steps {
    started: Instant,
    n: usize,
}

impl Steps {
    fn step(&mut self, what: &str) -> Instant {
        self.n += 1;
        println!(
            "\n==> [{}/6] {what}  (t+{:.0}s)",
            self.n,
            self.started.elapsed().as_secs_f64()
        );
        Instant::now()
    }
}

fn secret(dir: &Path) -> anyhow::Result<PathBuf> {
    let p = dir.join("id-secret");
    if p.exists() {
        // Made by an earlier release with the default mode: keep the secret, make it private.
        let secret = std::fs::read(&p)?;
        owsu_schemas::ids::write_secret_file(&p, &secret)?;
    } else {
        let mut bytes = [0u8; 32];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        owsu_schemas::ids::write_secret_file(&p, hex.as_bytes())?;
    }
    Ok(p)
}

pub(crate) fn ensure_topics(brokers: &str, prefix: &str, partitions: i32) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let names: Vec<String> = [
        owsu_schemas::topics::SERVICE_EVENTS,
        owsu_schemas::topics::COMPLAINT_EVENTS,
        owsu_schemas::topics::UNIT_DAYS,
        owsu_schemas::topics::DEAD_LETTER,
    ]
    .iter()
    .map(|t| format!("{prefix}{t}"))
    .collect();
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for r in rt.block_on(admin.create_topics(
        &topics,
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))? {
        match r {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, e)) => anyhow::bail!("creating topic {name} on {brokers}: {e}"),
        }
    }
    Ok(())
}

/// Uses `brokers` (creating the topics) or starts/reuses the local broker; returns the bootstrap.
pub fn kafka(brokers: Option<&str>, prefix: &str, partitions: i32) -> anyhow::Result<String> {
    match brokers {
        Some(b) => {
            ensure_topics(b, prefix, partitions)?;
            println!("using Kafka at {b}, topics {prefix}*");
            Ok(b.to_owned())
        }
        None => {
            let root = repo_root().context(
                "infra/kafka/kafka.sh not found: run from the repository, or pass --brokers",
            )?;
            let status = Command::new("bash")
                .arg(root.join("infra/kafka/kafka.sh"))
                .arg("start")
                .env("OWSU_KAFKA_TOPIC_PREFIX", prefix)
                .env("OWSU_KAFKA_PARTITIONS", partitions.to_string())
                .status()
                .context("running infra/kafka/kafka.sh")?;
            anyhow::ensure!(
                status.success(),
                "infra/kafka/kafka.sh start failed (see above)"
            );
            Ok(format!(
                "127.0.0.1:{}",
                std::env::var("OWSU_KAFKA_PORT").unwrap_or_else(|_| "9092".into())
            ))
        }
    }
}

/// Runs `owsu demo` or `owsu bench`; returns the exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let a = match cli.command {
        DemoCommand::Demo(a) => a,
        DemoCommand::Bench(b) => {
            owsu_runtime::logging::init(LogFormat::Human);
            return crate::bench::run(b);
        }
    };
    let mut steps = Steps {
        started: Instant::now(),
        n: 0,
    };
    let reference = Reference::load(None)?;
    let data_dir = a.data_dir.clone().unwrap_or_else(|| {
        PathBuf::from(if a.secure {
            "data/demo-secure"
        } else {
            "data/demo"
        })
    });
    let state_file = data_dir.join("demo.json");
    if a.fresh && data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("removing {}", data_dir.display()))?;
    }
    std::fs::create_dir_all(&data_dir)?;
    let log = data_dir.join("owsu.log");
    if cli.verbose {
        owsu_runtime::logging::init(LogFormat::Human);
    } else {
        owsu_runtime::logging::init_to_file(LogFormat::Human, &log)
            .with_context(|| format!("opening the log {}", log.display()))?;
        println!("log: {} (or run with -v to see it here)", log.display());
    }
    let mut state: State = match std::fs::read(&state_file) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("{} is damaged; run with --fresh", state_file.display()))?,
        Err(_) => State {
            topic_prefix: format!(
                "demo-{}.",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs()
            ),
            seed: a.seed,
            scale: a.scale,
            published: vec![],
            secure: a.secure,
        },
    };
    if state.secure != a.secure {
        anyhow::bail!(
            "{} holds a {} run; use another --data-dir, or --fresh to start over",
            data_dir.display(),
            if state.secure { "secure" } else { "plaintext" }
        );
    }
    if (state.seed, state.scale) != (a.seed, a.scale) && !state.published.is_empty() {
        anyhow::bail!(
            "{} holds a run with seed {} and scale {}; run with --fresh to start over with seed {} and scale {}",
            data_dir.display(),
            state.seed,
            state.scale,
            a.seed,
            a.scale
        );
    }
    let save =
        |s: &State| std::fs::write(&state_file, serde_json::to_vec_pretty(s).expect("state"));
    save(&state)?;
    let prefix = state.topic_prefix.clone();

    // 1. Kafka.
    let group = format!("{prefix}aggregator");
    let (brokers, secure) = if a.secure {
        let t =
            steps.step("Kafka in secure mode: TLS, SCRAM principals, ACLs, office signing keys");
        let port = crate::secure::DEFAULT_PORT;
        let s = crate::secure::start(
            port,
            &crate::secure::default_state(port)?,
            &prefix,
            a.partitions,
            &group,
            &data_dir,
            &reference,
        )?;
        println!("Kafka ready in {:.1} s", t.elapsed().as_secs_f64());
        (s.bootstrap.clone(), Some(s))
    } else {
        let t = steps.step("Kafka");
        let brokers = kafka(a.brokers.as_deref(), &prefix, a.partitions)?;
        println!("Kafka ready in {:.1} s", t.elapsed().as_secs_f64());
        (brokers, None)
    };
    // Plaintext: where to connect. Secure: also who connects, and the offices' keys.
    let plain = KafkaArgs::local(&brokers, &prefix);
    let (producer_kafka, aggregator_kafka, signing) = match &secure {
        Some(s) => (
            s.kafka(&s.offices, &prefix),
            s.kafka(&s.aggregator, &prefix),
            Some(s.keyring()?),
        ),
        None => (plain.clone(), plain, None),
    };

    // 2-3. Simulate and publish each year not yet published.
    let hasher = IdHasher::new(&owsu_schemas::ids::read_secret_file(&secret(&data_dir)?)?)?;
    let mut publisher = Publisher::new(PublisherConfig {
        kafka: producer_kafka,
        outbox_dir: data_dir.join("outbox"),
        delivery_timeout: Duration::from_secs(30),
        segment_records: SIM_CHUNK,
        signing,
    })?;
    for year in YEARS {
        let t = steps.step(&format!(
            "simulating {year} for all 228 units and publishing to Kafka"
        ));
        if state.published.contains(&year) {
            println!("{year} already published in an earlier run (use --fresh to start over)");
            continue;
        }
        let config = SimConfig {
            scale: a.scale,
            ..SimConfig::new(year, a.seed)
        };
        let sim = commands::simulate(
            &reference,
            config,
            SimDestination::Kafka {
                hasher: &hasher,
                publisher: &mut publisher,
                pace: Pace::Max { chunk: SIM_CHUNK },
            },
        )?;
        anyhow::ensure!(
            sim.report.pending == 0 && sim.tally.rejected() == 0,
            "simulating {year}: {} events wait in the outbox, {} were rejected (see {})",
            sim.report.pending,
            sim.tally.rejected(),
            data_dir.join("owsu.log").display()
        );
        let truth = data_dir.join(format!("truth-{year}.json"));
        std::fs::write(&truth, serde_json::to_vec_pretty(&sim.truth)?)
            .with_context(|| format!("writing {}", truth.display()))?;
        state.published.push(year);
        save(&state)?;
        println!(
            "{year} published in {:.1} s: {} events ({})",
            t.elapsed().as_secs_f64(),
            sim.tally.accepted(),
            sim.tally.kinds()
        );
    }
    drop(publisher);

    // 4. Aggregate.
    let t = steps.step("aggregating until caught up (raw and summary Delta tables)");
    let store_dir = data_dir.join("store");
    let store = Store::open(
        store_dir
            .to_str()
            .context("the data directory is not UTF-8")?,
    )?;
    let mut config = PipelineConfig::new(aggregator_kafka, &group, store.url());
    config.until_caught_up = true;
    config.signatures_required = secure.is_some();
    // The secure deployment's reference data lists every unit's public key.
    let agg_reference = match &secure {
        Some(s) => Reference::load(Some(&s.reference_dir))?,
        None => reference.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let r = owsu_aggregator::service::run(&rt, config, store.clone(), agg_reference, None)?;
    println!(
        "aggregated {} messages in {:.1} s: {} events counted, {} duplicates, {} dead-lettered",
        r.messages,
        t.elapsed().as_secs_f64(),
        r.accepted_total(),
        r.duplicates,
        r.dead_lettered
    );

    // 5. Jobs.
    let t =
        steps.step("running the jobs: yearly review, sector demand, oversight list, data quality");
    let reports = data_dir.join("reports");
    let review = rt.block_on(owsu_jobs::review::compute(&store, &reference, 2021, None))?;
    let html = owsu_jobs::review::write(&review, &reports.join("review-2021"))?;
    let demand = rt.block_on(owsu_jobs::demand::run(
        &store,
        &reference,
        (2020, 1),
        (2021, 12),
        None,
        &reports.join("demand"),
    ))?;
    let as_of = chrono::NaiveDate::from_ymd_opt(2021, 12, 31).expect("date");
    let oversight = rt.block_on(owsu_jobs::inactive::run(
        &store,
        &reference,
        as_of,
        None,
        &owsu_jobs::inactive::Rules::default(),
    ))?;
    let (inactive_csv, _) = owsu_jobs::inactive::write(&oversight, &reports.join("inactive"))?;
    let quality = rt.block_on(owsu_jobs::quality::compute(&store, &reference, 2021, None))?;
    let quality_html = owsu_jobs::quality::write(&quality, &reports.join("quality-2021"))?;
    let truth_check = std::fs::read(data_dir.join("truth-2021.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<owsu_producer::simulate::Truth>(&b).ok())
        .map(|t| crate::truth::check_truth(&oversight, &t.planted));
    println!("jobs done in {:.1} s", t.elapsed().as_secs_f64());

    // 6. The answer.
    steps.step("national 2021 table");
    print!("{}", owsu_jobs::review::facts_table(&review));
    println!("\nPublished (FACTS.md, 2021): capital/provincial 442,108 services, > US$21M; district 750,869 services, > US$3M;");
    println!("complaints 1,417 / 885 within / 779 resolved / 33 more info; district 11,909 / 305 within / 218 outside / 11,386 more info.");
    println!(
        "\nOversight as of {as_of}: {} of {} units flagged.{}",
        oversight.units_flagged(),
        oversight.units_checked,
        truth_check
            .map(|c| format!(
                " Planted problems found: {} of {}{}; units flagged without a planted problem: {}.",
                c.found,
                c.planted,
                if c.missed.is_empty() {
                    String::new()
                } else {
                    format!(" (missed: {})", c.missed.join("; "))
                },
                c.unplanted_units.len()
            ))
            .unwrap_or_default()
    );
    let rules: Vec<String> = quality
        .rules
        .iter()
        .map(|r| format!("{} {}", r.rule, r.count))
        .collect();
    println!(
        "\nData quality 2021: {} of {} events carry a business-rule anomaly, all counted in the figures ({}).",
        owsu_jobs::html::thousands(quality.events_flagged as i64),
        owsu_jobs::html::thousands(quality.events_checked as i64),
        if rules.is_empty() { "none".to_owned() } else { rules.join(", ") }
    );
    println!("\nOutputs:");
    println!("  yearly review (HTML):     {}", html.display());
    println!("  data quality (HTML):      {}", quality_html.display());
    println!(
        "  researcher dataset:       {} (Parquet), {} (CSV), {}",
        demand.parquet_dir.display(),
        demand.csv.display(),
        demand.dictionary.display()
    );
    println!("  oversight list:           {}", inactive_csv.display());
    println!(
        "  the lake (Delta tables):  {}/raw/ and {0}/summaries/",
        store_dir.display()
    );
    if let Some(s) = &secure {
        println!(
            "\nSecure mode: {brokers} over TLS (CA {}), offices as {} and the aggregator as {} \
             (SCRAM-SHA-512, ACLs); every event signed with its unit's key ({}), verified \
             against {}/keys.csv.",
            s.ca.display(),
            s.offices.name,
            s.aggregator.name,
            s.keys_dir.display(),
            s.reference_dir.display()
        );
    }
    println!(
        "\nDone in {:.0} s. Kafka keeps running: `{}infra/kafka/kafka.sh stop` stops it.",
        steps.started.elapsed().as_secs_f64(),
        if a.secure {
            format!("OWSU_KAFKA_PORT={} ", crate::secure::DEFAULT_PORT)
        } else {
            String::new()
        }
    );
    Ok(0)
}
