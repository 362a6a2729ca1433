//! `owsu-producer`: what runs at (or for) each of the 228 units.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use owsu_schemas::ids::IdHasher;
use owsu_schemas::record::RecordKind;
use owsu_schemas::reference::{Level, Reference};
use owsu_schemas::signing::{Keyring, OfficeKey};

use crate::commands::{self, PublishJob, Published, SimDestination, Simulated, Tally};
use crate::import::Format;
use crate::kafka::KafkaArgs;
use crate::outbox::OutboxStatus;
use crate::publish::{DeliveryReport, Publisher, PublisherConfig};
use crate::simulate::SimConfig;

/// Exit code when some records were rejected (the valid ones were still published).
pub(crate) const EXIT_REJECTED: i32 = 2;
/// Exit code when events wait in the outbox because Kafka did not acknowledge them.
pub(crate) const EXIT_QUEUED: i32 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "owsu-producer",
    version,
    about = "Publish One Window Service Unit events to Kafka: import office exports, simulate a national year.",
    long_about = "Publish One Window Service Unit events to Kafka.\n\n\
        Every accepted event is validated, has its citizen-linked ids replaced by keyed hashes, is written to a \
        durable local outbox, and leaves the outbox only when Kafka acknowledged it (idempotent producer, acks=all).\n\n\
        Exit codes: 0 all published; 2 some records rejected (see the rejects file); 3 events wait in the outbox \
        (run `owsu-producer flush` when Kafka is reachable); 1 any other error."
)]
/// The `owsu-producer` command line.
pub struct Cli {
    /// Log format and verbosity.
    #[command(flatten)]
    pub log: owsu_runtime::logging::LogArgs,

    /// Directory with units.csv, catalogue.json and holidays.csv (default: $OWSU_REFERENCE_DIR,
    /// reference/ beside the binary, or the copy built into it; never the working directory).
    #[arg(long, global = true, env = "OWSU_REFERENCE_DIR")]
    pub reference_dir: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The producer's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate, pseudonymise and publish an office system's export (JSON lines or CSV).
    Publish(PublishArgs),
    /// Deliver events waiting in the outbox (after Kafka was unreachable).
    Flush(FlushArgs),
    /// Simulate a national year for all 228 units, to a file or straight to Kafka.
    Simulate(SimulateArgs),
    /// Print the unit registry.
    Units(UnitsArgs),
    /// Print the sector and service catalogue.
    Catalogue(CatalogueArgs),
    /// Make an office's Ed25519 signing key: the private key to a new file (mode 0600, kept at
    /// the office), the public key printed as the line to add to the reference data's keys.csv.
    Keygen(KeygenArgs),
}

/// `owsu-producer keygen`.
#[derive(Debug, Clone, clap::Args)]
pub struct KeygenArgs {
    /// The unit the key signs for (a code of the registry).
    #[arg(long)]
    pub unit: String,
    /// File to write the private key to (must not exist).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Where the durable outbox lives and how long Kafka may take.
#[derive(Debug, Clone, clap::Args)]
pub struct OutboxArgs {
    /// Outbox directory: accepted events wait here (fsync'd) until Kafka acknowledges them.
    #[arg(long, env = "OWSU_OUTBOX", default_value = "data/outbox")]
    pub outbox: PathBuf,

    /// Seconds a message may wait for Kafka's acknowledgement before it stays in the outbox.
    /// Longer than a request's own timeout (30 s), as Kafka's Java default (120 s) is: a leader
    /// that hangs holds its requests that long, and they are then retried on the new leader.
    #[arg(long, env = "OWSU_DELIVERY_TIMEOUT_SECS", default_value_t = 120)]
    pub(crate) delivery_timeout_secs: u64,

    /// The office's signing key (`owsu-producer keygen`): every event sent is signed with it,
    /// and only events of its unit may be sent. Aggregators run with `--signatures required`
    /// dead-letter unsigned events.
    #[arg(long, env = "OWSU_SIGNING_KEY_FILE", value_name = "FILE")]
    pub(crate) signing_key_file: Option<PathBuf>,

    /// A directory of signing keys (`*.key`, one per unit), for a process that publishes for
    /// several offices: a provincial gateway relaying its districts, or the demo playing all
    /// 228. Each event is signed with its own unit's key; an event of a unit without one is not
    /// sent.
    #[arg(
        long,
        env = "OWSU_SIGNING_KEY_DIR",
        value_name = "DIR",
        conflicts_with = "signing_key_file"
    )]
    pub(crate) signing_key_dir: Option<PathBuf>,

    /// At the end, write the outbox's depth to this file in the Prometheus text format, for
    /// node_exporter's textfile collector: owsu_outbox_events, owsu_outbox_segments and
    /// owsu_outbox_oldest_age_seconds (the alert rules in infra/prometheus watch the age).
    #[arg(long, env = "OWSU_OUTBOX_METRICS_FILE", value_name = "FILE")]
    pub(crate) metrics_file: Option<PathBuf>,
}

/// The deployment's secret for pseudonymous ids.
#[derive(Debug, Clone, clap::Args)]
pub struct SecretArgs {
    /// File holding the deployment's id secret (at least 16 bytes). Without a secret the
    /// producer refuses to run: raw request and complaint numbers must never leave the office.
    #[arg(long, env = "OWSU_ID_SECRET_FILE")]
    pub(crate) id_secret_file: Option<PathBuf>,
}

impl SecretArgs {
    /// The keyed hasher of the deployment's secret (file, or `OWSU_ID_SECRET`); an error that
    /// says how to make one when there is none.
    pub fn hasher(&self) -> anyhow::Result<IdHasher> {
        let secret = match (&self.id_secret_file, std::env::var("OWSU_ID_SECRET")) {
            (Some(f), _) => owsu_schemas::ids::read_secret_file(f)?,
            (None, Ok(s)) => s.into_bytes(),
            (None, Err(_)) => bail!(
                "no id secret: pass --id-secret-file FILE or set OWSU_ID_SECRET. Request and complaint numbers \
                 are replaced by keyed hashes before anything is stored or sent, and that needs the deployment's secret \
                 (e.g. `head -c 32 /dev/urandom | base64 > secret.key`)."
            ),
        };
        Ok(IdHasher::new(&secret)?)
    }
}

/// `owsu-producer publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The export file: JSON lines with a `kind` field, or CSV (one kind per file).
    #[arg(long, short)]
    pub input: PathBuf,
    /// File format (default: from the extension; .csv is CSV, anything else JSON lines).
    #[arg(long)]
    pub format: Option<Format>,
    /// Record kind of a CSV file without a `kind` column (default: inferred from its columns).
    #[arg(long, value_parser = parse_kind)]
    pub kind: Option<RecordKind>,
    /// Where rejected records go, with line, field and reason (default: INPUT.rejects.jsonl).
    #[arg(long)]
    pub rejects: Option<PathBuf>,
    /// Records read, staged and sent at a time.
    #[arg(long, default_value_t = 100_000)]
    pub chunk: usize,
    /// Send at most this many events per second (0: as fast as possible), e.g. to replay an
    /// export at a live rate; with a small `--chunk` the pace is smooth.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// The id secret.
    #[command(flatten)]
    pub secret: SecretArgs,
    /// The outbox and signing.
    #[command(flatten)]
    pub outbox: OutboxArgs,
    /// Kafka connection and topic prefix.
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

fn parse_kind(s: &str) -> Result<RecordKind, String> {
    RecordKind::parse(s).ok_or_else(|| format!("{s:?} is not service, complaint or unit_day"))
}

/// `owsu-producer flush`.
#[derive(Debug, clap::Args)]
pub struct FlushArgs {
    /// The outbox and signing.
    #[command(flatten)]
    pub outbox: OutboxArgs,
    /// Kafka connection and topic prefix.
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// `--pace` of `owsu-producer simulate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pace {
    /// As fast as Kafka takes it.
    Max,
    /// One simulated working day every --seconds-per-day, as a live feed for dashboards.
    Realtime,
}

/// `owsu-producer simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Calendar year to simulate (2021 reproduces FACTS.md's published figures).
    #[arg(long)]
    pub year: i32,
    /// Seed: the same seed gives the same year, event for event.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Multiply every target by this (1.0 = the national year; 0.01 for a quick look).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Write the import format (JSON lines) to this file instead of publishing to Kafka.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write what was generated and which problems were planted (JSON) to this file.
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Publishing pace.
    #[arg(long, value_enum, default_value = "max")]
    pub pace: Pace,
    /// With --pace realtime: wall-clock seconds per simulated working day.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) seconds_per_day: f64,
    /// Do not plant oversight problems (silent units, collapse, stopped border passes, gaps).
    #[arg(long)]
    pub(crate) no_problems: bool,
    /// Do not add duplicates, corrections and late records.
    #[arg(long)]
    pub(crate) no_noise: bool,
    /// Events per outbox segment and delivery round.
    #[arg(long, default_value_t = 200_000)]
    pub chunk: usize,
    /// The id secret.
    #[command(flatten)]
    pub secret: SecretArgs,
    /// The outbox and signing.
    #[command(flatten)]
    pub outbox: OutboxArgs,
    /// Kafka connection and topic prefix.
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// How `units` and `catalogue` print.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TableFormat {
    /// Aligned columns for a terminal.
    Table,
    /// CSV with a header line.
    Csv,
    /// A JSON array.
    Json,
}

/// `owsu-producer units`.
#[derive(Debug, clap::Args)]
pub struct UnitsArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: TableFormat,
    /// Only this province (KH-PP) and its districts.
    #[arg(long)]
    pub province: Option<String>,
}

/// `owsu-producer catalogue`.
#[derive(Debug, clap::Args)]
pub struct CatalogueArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: TableFormat,
}

/// Runs a parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let reference = Reference::load(cli.reference_dir.as_deref())?;
    tracing::debug!(source = %reference.source, "reference data loaded");
    match cli.command {
        Command::Publish(a) => publish(&reference, a),
        Command::Flush(a) => flush(a),
        Command::Simulate(a) => simulate(&reference, a),
        Command::Units(a) => units(&reference, a),
        Command::Catalogue(a) => catalogue(&reference, a),
        Command::Keygen(a) => keygen(&reference, a),
    }
}

fn keygen(reference: &Reference, a: KeygenArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        reference.registry.get(&a.unit).is_some(),
        "--unit {}: not a unit of the registry ({})",
        a.unit,
        reference.source
    );
    let key = OfficeKey::generate(&a.unit);
    key.write(&a.out)?;
    let today = chrono::Utc::now().date_naive();
    println!(
        "wrote the private key of {} to {} (mode 0600: keep it at the office, never send it)",
        a.unit,
        a.out.display()
    );
    println!("public key {} (key id {})", key.public_hex(), key.key_id());
    println!("add this line to keys.csv of the reference data the aggregators read:");
    println!("{}", key.keys_csv_line(today));
    Ok(0)
}

fn publisher(
    kafka: &KafkaArgs,
    outbox: &OutboxArgs,
    segment_records: usize,
) -> anyhow::Result<Publisher> {
    Publisher::new(PublisherConfig {
        kafka: kafka.clone(),
        outbox_dir: outbox.outbox.clone(),
        delivery_timeout: Duration::from_secs(outbox.delivery_timeout_secs.max(1)),
        segment_records,
        signing: match (&outbox.signing_key_file, &outbox.signing_key_dir) {
            (Some(f), _) => Some(Keyring::single(OfficeKey::read(f)?)),
            (None, Some(d)) => Some(Keyring::read_dir(d)?),
            (None, None) => None,
        },
    })
}

fn rate(n: u64, t: Duration) -> String {
    format!("{:.0}/s", n as f64 / t.as_secs_f64().max(1e-3))
}

fn publish(reference: &Reference, a: PublishArgs) -> anyhow::Result<i32> {
    let hasher = a.secret.hasher()?;
    let mut job = PublishJob::new(&a.input);
    job.format = a.format.unwrap_or(job.format);
    job.kind = a.kind;
    job.rejects = a.rejects.clone().unwrap_or(job.rejects);
    job.chunk = a.chunk.max(1);
    job.rate = a.rate;
    let mut publisher = publisher(&a.kafka, &a.outbox, job.chunk)?;
    let Published {
        tally,
        report,
        took,
    } = commands::publish_file(reference, &job, &hasher, &mut publisher)?;
    if tally.accepted() == 0 && tally.rejected() == 0 {
        eprintln!("note: {} holds no records", a.input.display());
    }
    println!(
        "published {} of {} valid records from {} ({}{}); rejected {}{}; waiting in outbox {}; {:.1} s, {}",
        report.delivered,
        tally.accepted(),
        a.input.display(),
        tally.kinds(),
        tally.flagged_summary(),
        tally.rejected(),
        if tally.rejected() > 0 { format!(" (see {})", job.rejects.display()) } else { String::new() },
        report.pending,
        took.as_secs_f64(),
        rate(report.delivered, took),
    );
    Ok(exit_code(&tally, &report, &a.outbox))
}

/// The exit code of a publishing command, saying on stderr what an operator must do about
/// events left in the outbox.
fn exit_code(tally: &Tally, report: &DeliveryReport, outbox: &OutboxArgs) -> i32 {
    if let Some(file) = &outbox.metrics_file {
        let written =
            OutboxStatus::of(&outbox.outbox).and_then(|s| s.write_metrics(&outbox.outbox, file));
        if let Err(e) = written {
            eprintln!(
                "warning: writing the outbox metrics to {}: {e}",
                file.display()
            );
        }
    }
    if report.pending > 0 {
        eprintln!(
            "{} events wait in {}: run `owsu-producer flush` when Kafka is reachable.",
            report.pending,
            outbox.outbox.display()
        );
        EXIT_QUEUED
    } else if tally.rejected() > 0 {
        EXIT_REJECTED
    } else {
        0
    }
}

fn flush(a: FlushArgs) -> anyhow::Result<i32> {
    let mut publisher = publisher(&a.kafka, &a.outbox, 100_000)?;
    let waiting = publisher.outbox().pending()? as u64;
    let started = Instant::now();
    publisher.show_progress(waiting, "flushing outbox");
    let report = publisher.deliver()?;
    publisher.finish_progress();
    println!(
        "flushed {} of {} waiting events to {}; still waiting {}; {:.1} s",
        report.delivered,
        waiting,
        a.kafka.brokers,
        report.pending,
        started.elapsed().as_secs_f64()
    );
    Ok(exit_code(&Tally::default(), &report, &a.outbox))
}

fn simulate(reference: &Reference, a: SimulateArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(a.scale > 0.0, "--scale must be positive");
    let config = SimConfig {
        scale: a.scale,
        plant_problems: !a.no_problems,
        transport_noise: !a.no_noise,
        ..SimConfig::new(a.year, a.seed)
    };
    let t = crate::simulate::targets_for(a.year, a.scale);
    tracing::info!(
        year = a.year,
        seed = a.seed,
        scale = a.scale,
        delivered_provincial = t.delivered_provincial,
        delivered_district = t.delivered_district,
        "simulating"
    );
    let (sim, destination) = if let Some(out) = &a.out {
        (
            commands::simulate(reference, config, SimDestination::File(out))?,
            out.display().to_string(),
        )
    } else {
        let hasher = a.secret.hasher()?;
        let mut publisher = publisher(&a.kafka, &a.outbox, a.chunk)?;
        let pace = match a.pace {
            Pace::Max => commands::Pace::Max { chunk: a.chunk },
            Pace::Realtime => commands::Pace::Realtime {
                day: Duration::from_secs_f64(a.seconds_per_day.max(0.0)),
            },
        };
        let destination = SimDestination::Kafka {
            hasher: &hasher,
            publisher: &mut publisher,
            pace,
        };
        (
            commands::simulate(reference, config, destination)?,
            format!("Kafka at {}", a.kafka.brokers),
        )
    };
    let Simulated {
        truth,
        tally,
        report,
        took,
    } = sim;
    if let Some(p) = &a.truth {
        std::fs::write(p, serde_json::to_vec_pretty(&truth)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    let usd = |riel: i64| riel as f64 / owsu_schemas::RIEL_PER_USD as f64 / 1e6;
    println!(
        "simulated {} (seed {}, scale {}): {} events to {} ({}; duplicates {}, corrections {}, late {}{}); rejected {}; waiting in outbox {}; {:.1} s, {}",
        a.year,
        a.seed,
        a.scale,
        tally.accepted(),
        destination,
        tally.kinds(),
        truth.events.duplicates,
        truth.events.corrections,
        truth.events.late,
        tally.flagged_summary(),
        tally.rejected(),
        report.pending,
        took.as_secs_f64(),
        rate(tally.accepted(), took)
    );
    for (label, lt) in [
        (Level::Provincial.label(), &truth.provincial),
        (Level::District.label(), &truth.district),
    ] {
        let f = &lt.complaints;
        println!(
            "  {label:<24} services {:>9}  revenue US${:>6.2}M ({} riel)  complaints {} / within {} / outside {} / resolved {} / more info {}",
            lt.services_delivered,
            usd(lt.revenue_riel),
            lt.revenue_riel,
            f.received(),
            f.within(),
            f.outside(),
            f.within_resolved,
            f.more_info()
        );
    }
    if !truth.planted.is_empty() {
        println!("  planted problems: {}", truth.planted.len());
    }
    Ok(exit_code(&tally, &report, &a.outbox))
}

fn units(reference: &Reference, a: UnitsArgs) -> anyhow::Result<i32> {
    let units: Vec<_> = match &a.province {
        Some(p) => reference.registry.in_scope(p).collect(),
        None => reference.registry.units.iter().collect(),
    };
    if units.is_empty() {
        bail!("no units match {:?}", a.province);
    }
    let mut out = std::io::stdout().lock();
    match a.format {
        TableFormat::Json => serde_json::to_writer_pretty(&mut out, &units)?,
        TableFormat::Csv => {
            let mut w = csv::Writer::from_writer(&mut out);
            for u in &units {
                w.serialize(u)?;
            }
            w.flush()?;
        }
        TableFormat::Table => {
            let mut t = owsu_runtime::table::new(
                &[
                    "code",
                    "level",
                    "kind",
                    "province",
                    "name",
                    "owsu",
                    "ombudsman",
                    "border",
                ],
                &[],
            );
            for u in &units {
                let yes = |b: bool| if b { "yes" } else { "-" };
                t.add_row(vec![
                    u.code.as_str(),
                    u.level.as_str(),
                    &u.kind,
                    &u.province_name,
                    &u.name,
                    yes(u.has_owsu),
                    yes(u.has_ombudsman),
                    yes(u.border_province),
                ]);
            }
            write!(out, "{}", owsu_runtime::table::render(&t))?;
            let prov = units
                .iter()
                .filter(|u| u.level == Level::Provincial)
                .count();
            writeln!(
                out,
                "{} units: {} capital/provincial, {} municipal/district/khan (source: {})",
                units.len(),
                prov,
                units.len() - prov,
                reference.source
            )?;
        }
    }
    out.write_all(b"\n")?;
    Ok(0)
}

fn catalogue(reference: &Reference, a: CatalogueArgs) -> anyhow::Result<i32> {
    let c = &reference.catalogue;
    let mut out = std::io::stdout().lock();
    match a.format {
        TableFormat::Json => serde_json::to_writer_pretty(&mut out, &c.sectors)?,
        TableFormat::Csv => {
            let mut w = csv::Writer::from_writer(&mut out);
            w.write_record([
                "sector_code",
                "sector_name",
                "service_code",
                "service_name",
                "levels",
                "fee_min_riel",
                "fee_max_riel",
                "typical_days",
                "border_pass",
            ])?;
            for (s, v) in c.services() {
                let levels: Vec<&str> = v.levels.iter().map(|l| l.as_str()).collect();
                w.write_record([
                    &s.code,
                    &s.name,
                    &v.code,
                    &v.name,
                    &levels.join("+"),
                    &v.fee_min_riel.to_string(),
                    &v.fee_max_riel.to_string(),
                    &v.typical_days.to_string(),
                    &v.border_pass.to_string(),
                ])?;
            }
            w.flush()?;
        }
        TableFormat::Table => {
            for s in &c.sectors {
                writeln!(out, "{} {}", s.code, s.name)?;
                for v in &s.services {
                    let levels: Vec<&str> = v.levels.iter().map(|l| l.as_str()).collect();
                    writeln!(
                        out,
                        "    {:<20} {:<48} {:<20} {:>9}-{:<9} riel  ~{} days{}",
                        v.code,
                        v.name,
                        levels.join("+"),
                        v.fee_min_riel,
                        v.fee_max_riel,
                        v.typical_days,
                        if v.border_pass { "  [border pass]" } else { "" }
                    )?;
                }
            }
            writeln!(
                out,
                "{} sectors, {} service types (catalogue {}, source: {})",
                c.sectors.len(),
                c.services().count(),
                c.version,
                reference.source
            )?;
        }
    }
    out.write_all(b"\n")?;
    Ok(0)
}
