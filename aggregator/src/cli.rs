//! `owsu-aggregator`: consume the event topics as a consumer group; keep raw and summaries.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use owsu_schemas::reference::Reference;

use crate::kafka::KafkaArgs;
use crate::pipeline::{defaults, PipelineConfig};
use owsu_lake::Store;

#[derive(Debug, Parser)]
#[command(
    name = "owsu-aggregator",
    version,
    about = "Roll OWSU events from Kafka into the lake's Delta tables (raw events and daily summaries), exactly once.",
    long_about = "Roll OWSU events from Kafka into the lake's Delta tables (raw events and daily summaries), exactly once.\n\n\
        Run several instances with the same --group to share the partitions. Every Delta commit carries the Kafka \
        offsets it covers, and the tables, not Kafka, say where to resume; an instance that lost its partitions \
        cannot commit over the new owner. Events are counted once per event_id, so a crash or a rebalance at any \
        moment loses and doubles nothing. Bad records go to owsu.dead-letter.v1 with the reason."
)]
/// The `owsu-aggregator` command line.
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

// Parsed once per process: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
/// The aggregator's subcommands.
pub enum Command {
    /// Consume, land raw events, keep summaries current.
    Run(RunArgs),
    /// Recompute every summary table from the raw tables, one commit per table (the numbers
    /// equal the live ones). Stop the aggregators first.
    Rebuild(RebuildArgs),
    /// Bin-pack the raw tables' small files into large ones (Delta OPTIMIZE); safe while
    /// aggregators run: readers see the same rows.
    Compact(CompactArgs),
    /// Delete files that no table version younger than --retain-hours needs (Delta VACUUM).
    Vacuum(VacuumArgs),
}

/// Which lake, and how much I/O at once.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// The lake: a directory, file:///dir, or s3://bucket/prefix (credentials and endpoint from
    /// AWS_* variables, e.g. AWS_ENDPOINT and AWS_ALLOW_HTTP=true for a local S3 server; the
    /// server must support conditional writes, If-None-Match, which Delta commits rely on).
    #[arg(long, env = "OWSU_STORE", default_value = "data/store")]
    pub store: String,

    /// Object reads and writes in flight at once.
    #[arg(long, default_value_t = defaults::IO_CONCURRENCY)]
    pub(crate) io_concurrency: usize,
}

/// Whether events must be signed by their unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Signatures {
    /// Not checked (the local demo's default).
    Off,
    /// Every service and complaint event must carry a valid signature of its unit.
    Required,
}

/// `owsu-aggregator run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Consumer group: instances with the same group share the topics' partitions.
    #[arg(long, env = "OWSU_GROUP", default_value = "owsu-aggregator")]
    pub group: String,

    /// `required`: every service and complaint event must carry a valid signature of its unit
    /// (the reference data's keys.csv, at the message's time); any other goes to the
    /// dead-letter topic with the reason. `off` (the local demo's default): not checked.
    #[arg(long, env = "OWSU_SIGNATURES", value_enum, default_value_t = Signatures::Off)]
    pub signatures: Signatures,

    /// Stop cleanly once everything that was in the topics at start-up is processed and
    /// committed (for the demo, tests and scheduled batch runs).
    #[arg(long)]
    pub until_caught_up: bool,

    /// Accept, as NAME, that Kafka deleted events the lake never held (retention passed while
    /// no aggregator ran): resume such partitions at the log start and record each gap in the
    /// lake's audit/offset_gaps table. Without it such a partition stops the aggregator with
    /// an error naming it, and nothing is skipped.
    #[arg(long, value_name = "NAME")]
    pub accept_gaps_by: Option<String>,

    /// Close a batch at this many messages.
    #[arg(long, default_value_t = defaults::MAX_BATCH)]
    pub(crate) max_batch: usize,

    /// ...or this many milliseconds after its first message (summaries are visible within
    /// about this long of an event's arrival).
    #[arg(long, default_value_t = defaults::LINGER_MS)]
    pub(crate) linger_ms: u64,

    /// Kafka session timeout in ms: how soon a dead instance's partitions move to the others.
    #[arg(long, default_value_t = defaults::SESSION_TIMEOUT_MS)]
    pub(crate) session_timeout_ms: u64,

    /// Local directory of the partition state files (default: one per store and group under
    /// ~/.cache/owsu/aggregator-state). Give each instance on one machine its own.
    #[arg(long, env = "OWSU_STATE_DIR")]
    pub(crate) state_dir: Option<PathBuf>,

    /// Page cache of each partition's state file, in MiB: the memory the state may use does
    /// not grow with history (an instance owning 12 partitions uses 12 times this).
    #[arg(long, default_value_t = defaults::STATE_CACHE_MIB)]
    pub(crate) state_cache_mib: usize,

    /// Seconds between snapshots of the changed partitions' state to the store (a new owner of a
    /// partition restores the snapshot and replays only what followed it from Kafka).
    #[arg(long, default_value_t = defaults::SNAPSHOT_INTERVAL_S)]
    pub(crate) snapshot_interval_s: u64,

    /// Seconds between commits of the partition state to its local file. Batches in between
    /// share one write transaction (much less written than a commit per batch); a crash loses
    /// what followed the last commit, and the restart replays it from Kafka.
    #[arg(long, env = "OWSU_STATE_COMMIT_INTERVAL_S", default_value_t = defaults::STATE_COMMIT_INTERVAL_S)]
    pub(crate) state_commit_interval_s: u64,

    /// A raw table's next file is written once it reaches this many MiB (its rows are encoded
    /// as batches arrive and held compressed in memory; catching up gives files of this size)...
    #[arg(long, default_value_t = defaults::RAW_FLUSH_MIB)]
    pub(crate) raw_flush_mib: usize,

    /// ...or this many seconds after the first of them arrived (live: a file a minute or so).
    /// Raw rows are not what the summaries wait for: those follow every batch.
    #[arg(long, default_value_t = defaults::RAW_FLUSH_S)]
    pub(crate) raw_flush_s: u64,

    /// While catching up, summary files are rewritten at most this often, in ms (a quarter
    /// touched by many batches is written once); a batch that finds Kafka drained commits them
    /// at once, so live figures follow within about a second.
    #[arg(long, default_value_t = defaults::SUMMARY_INTERVAL_MS)]
    pub(crate) summary_interval_ms: u64,

    /// Seconds between compactions of the raw tables' small files while running (0: never;
    /// `owsu-aggregator compact` does the same on demand).
    #[arg(long, default_value_t = defaults::COMPACT_INTERVAL_S)]
    pub(crate) compact_interval_s: u64,

    /// Seconds between reads of the event topics' metadata for partitions with fewer in-sync
    /// replicas than replicas (metric owsu_under_replicated_partitions; a broker down or behind).
    #[arg(long, default_value_t = defaults::REPLICATION_CHECK_S)]
    pub(crate) replication_check_s: u64,

    /// Serve metrics at http://ADDR/metrics (OpenMetrics, for Prometheus) and the probes
    /// http://ADDR/health/live and /health/ready (200 or 503); off when empty.
    #[arg(long, env = "OWSU_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub(crate) metrics_addr: String,

    /// The lake.
    #[command(flatten)]
    pub store: StoreArgs,

    /// Kafka connection and topic prefix.
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// `owsu-aggregator rebuild`.
#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    /// Memory the partitions' states may take, in MiB, before the largest move to temporary
    /// files on disk (slower, but memory stays bounded whatever the history).
    #[arg(long, default_value_t = defaults::REBUILD_MEMORY_MIB)]
    pub(crate) memory_mib: usize,

    /// The lake.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `owsu-aggregator compact`.
#[derive(Debug, clap::Args)]
pub struct CompactArgs {
    /// Target size of a compacted file, in MiB (files under half of it are merged).
    #[arg(long, default_value_t = defaults::COMPACT_TARGET_MIB)]
    pub(crate) target_mib: u64,

    /// The lake.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `owsu-aggregator vacuum`.
#[derive(Debug, clap::Args)]
pub struct VacuumArgs {
    /// Keep every file a table version of the last this-many hours needs (time travel reaches
    /// back this far; readers still on an older version may fail).
    #[arg(long, default_value_t = 168)]
    pub(crate) retain_hours: u64,

    /// The lake.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Runs a parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let reference = Reference::load(cli.reference_dir.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cli.command {
        Command::Run(a) => {
            let store = Store::open(&a.store.store)?;
            let metrics_addr = if a.metrics_addr.is_empty() {
                None
            } else {
                Some(a.metrics_addr.parse()?)
            };
            tracing::info!(store = store.url(), group = %a.group, brokers = %a.kafka.brokers, reference = %reference.source, "aggregator starting");
            let mut config = PipelineConfig::new(a.kafka, &a.group, store.url());
            config.max_batch = a.max_batch.max(1);
            config.linger = Duration::from_millis(a.linger_ms);
            config.until_caught_up = a.until_caught_up;
            config.session_timeout = Duration::from_millis(a.session_timeout_ms);
            config.write_concurrency = a.store.io_concurrency.max(1);
            config.compact_interval =
                (a.compact_interval_s > 0).then(|| Duration::from_secs(a.compact_interval_s));
            config.replication_check = Duration::from_secs(a.replication_check_s.max(1));
            config.signatures_required = a.signatures == Signatures::Required;
            config.accept_gaps_by = a.accept_gaps_by;
            config.flush.raw_bytes = a.raw_flush_mib.max(1) << 20;
            config.flush.raw_interval = Duration::from_secs(a.raw_flush_s);
            config.flush.summary_interval = Duration::from_millis(a.summary_interval_ms);
            if let Some(dir) = a.state_dir {
                config.state.dir = dir;
            }
            config.state.cache_bytes = a.state_cache_mib.max(1) << 20;
            config.state.snapshot_interval = Duration::from_secs(a.snapshot_interval_s);
            config.state.commit_interval = Duration::from_secs(a.state_commit_interval_s);
            let r = crate::service::run(&rt, config, store, reference, metrics_addr)?;
            println!(
                "aggregated {} messages in {:.1} s ({:.0}/s): service {}, complaint {}, unit_day {} accepted ({} duplicates), {} dead-lettered; {} batches, {} files",
                r.messages,
                r.elapsed.as_secs_f64(),
                r.messages as f64 / r.elapsed.as_secs_f64().max(1e-3),
                r.accepted[0],
                r.accepted[1],
                r.accepted[2],
                r.duplicates,
                r.dead_lettered,
                r.batches,
                r.files
            );
            Ok(0)
        }
        Command::Rebuild(a) => {
            let store = Store::open_existing(&a.store.store)?;
            let r = rt.block_on(crate::maintenance::rebuild(
                &store,
                &reference,
                a.store.io_concurrency.max(1),
                a.memory_mib << 20,
            ))?;
            println!(
                "rebuilt summaries from {} raw files ({} events, {} partitions): replaced {} files with {} in {:.1} s",
                r.raw_files,
                r.events,
                r.partitions,
                r.removed,
                r.written,
                r.elapsed.as_secs_f64()
            );
            Ok(0)
        }
        Command::Compact(a) => {
            let store = Store::open_existing(&a.store.store)?;
            let r = rt.block_on(crate::maintenance::compact(
                &store,
                (a.target_mib.max(1) * 1024 * 1024) as i64,
                a.store.io_concurrency.max(1),
            ))?;
            for (table, c) in &r.tables {
                if c.files_removed == 0 {
                    println!("{table}: nothing to compact");
                } else {
                    println!(
                        "{table}: {} files merged into {} ({:.1} MiB), version {}",
                        c.files_removed,
                        c.files_added,
                        c.bytes_added as f64 / 1048576.0,
                        c.version
                    );
                }
            }
            Ok(0)
        }
        Command::Vacuum(a) => {
            let store = Store::open_existing(&a.store.store)?;
            let r = rt.block_on(crate::maintenance::vacuum(
                &store,
                Duration::from_secs(a.retain_hours * 3600),
            ))?;
            for (table, n) in &r {
                println!("{table}: {n} files deleted");
            }
            Ok(0)
        }
    }
}
