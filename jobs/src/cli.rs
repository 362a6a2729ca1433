//! The command line of `owsu-jobs`: the yearly review, the sector-demand dataset, the
//! oversight list and the data-quality report.
//!
//! [`run`] loads the reference data, opens the store (a local one must exist), runs one job,
//! prints its summary on stdout and returns the exit code: 0, or [`EXIT_FLAGGED`] when
//! `inactive` flags a unit. An error is returned to `main`, which exits with 1.

use std::path::PathBuf;

use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use owsu_lake::Store;
use owsu_schemas::reference::Reference;

use crate::inactive::Rules;

/// Exit code of `inactive` when at least one unit is flagged (0 when none).
pub const EXIT_FLAGGED: i32 = 10;

/// The parsed command line: global options and one job.
///
/// The help text comes from `about`/`long_about` below, not from this comment.
#[derive(Debug, Parser)]
#[command(
    name = "owsu-jobs",
    version,
    about = "Turn the OWSU summaries into the yearly review, a research dataset and the oversight list.",
    long_about = "Turn the OWSU summaries into what people use:\n\
        - review:   the yearly review for the secretary-general (HTML, JSON, CSV), nationally or for one province;\n\
        - demand:   the sector-demand dataset for researchers (Parquet by year, CSV, data dictionary);\n\
        - inactive: the oversight list of silent and anomalous units (table, CSV, JSON; exit code 10 when any unit is flagged);\n\
        - quality:  the data-quality report: anomalous events per unit and rule, fees above the schedule (HTML, CSV, JSON)."
)]
pub struct Cli {
    /// `--log-format` (human or json), shared by every OWSU binary.
    #[command(flatten)]
    pub log: owsu_runtime::logging::LogArgs,

    /// Directory with units.csv, catalogue.json and holidays.csv (default: $OWSU_REFERENCE_DIR,
    /// reference/ beside the binary, or the copy built into it; never the working directory).
    #[arg(long, global = true, env = "OWSU_REFERENCE_DIR")]
    pub reference_dir: Option<PathBuf>,

    /// Object store holding the summaries: a directory, file:///dir or s3://bucket/prefix.
    #[arg(long, global = true, env = "OWSU_STORE", default_value = "data/store")]
    pub store: String,

    /// The job to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The jobs, one subcommand each. Each variant's comment is its `--help` text.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The yearly review: services, revenue and complaints by level, sector and province, with
    /// year-on-year change, processing times and reporting completeness.
    Review(YearReport),
    /// Sector demand for researchers: month × province × unit × sector × service.
    Demand {
        /// First month, YYYY-MM.
        #[arg(long)]
        from: String,
        /// Last month, YYYY-MM (inclusive).
        #[arg(long)]
        to: String,
        /// Only this province or unit.
        #[arg(long)]
        scope: Option<String>,
        /// Output directory (default reports/demand).
        #[arg(long, default_value = "reports/demand")]
        out: PathBuf,
    },
    /// The data-quality report for oversight: business-rule anomalies per unit and rule, with
    /// monthly trends and examples, and fees above the legal schedule ranked by unit. Anomalous
    /// events are counted in every figure; this report says which they are.
    Quality(YearReport),
    /// Inactive and anomalous units, for oversight. Exit code 10 when any unit is flagged.
    Inactive {
        /// The day to judge from (YYYY-MM-DD); only data up to it is used.
        #[arg(long)]
        as_of: NaiveDate,
        /// Only this province or unit.
        #[arg(long)]
        scope: Option<String>,
        /// Output directory for inactive.csv and inactive.json (default reports/inactive).
        #[arg(long, default_value = "reports/inactive")]
        out: PathBuf,
        /// The rules' thresholds (see [`Rules`]).
        #[command(flatten)]
        rules: Rules,
    },
}

/// What the yearly reports (review, quality) are asked for.
#[derive(Debug, clap::Args)]
pub struct YearReport {
    /// The year to report on.
    #[arg(long)]
    pub year: i32,
    /// Only this province (KH-PP: the province and its districts) or unit (KH-PPDD).
    #[arg(long)]
    pub scope: Option<String>,
    /// Output directory (default reports/review-YEAR[-SCOPE] or reports/quality-YEAR[-SCOPE]).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl YearReport {
    /// `--out`, or the job's default directory.
    fn out_dir(&self, job: &str) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| PathBuf::from(report_dir(job, self.year, self.scope.as_deref())))
    }
}

/// A yearly report's default directory, `reports/JOB-YEAR[-SCOPE]` (the review links to the
/// quality report's by it).
pub(crate) fn report_dir(job: &str, year: i32, scope: Option<&str>) -> String {
    format!(
        "reports/{job}-{year}{}",
        scope.map(|s| format!("-{s}")).unwrap_or_default()
    )
}

/// Runs the parsed command and returns the process exit code (0, or [`EXIT_FLAGGED`]).
///
/// Loads the reference data, opens the store (a local directory must exist), runs the job on a
/// two-thread tokio runtime, writes its files and prints its summary on stdout. Fails when the
/// reference data does not load, the store cannot be opened, or the job fails.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let reference = Reference::load(cli.reference_dir.as_deref())?;
    let store = Store::open_existing(&cli.store)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cli.command {
        Command::Review(a) => {
            let (year, out) = (a.year, a.out_dir("review"));
            let review = rt.block_on(crate::review::compute(
                &store,
                &reference,
                year,
                a.scope.as_deref(),
            ))?;
            let html = crate::review::write(&review, &out)?;
            print!("{}", crate::review::facts_table(&review));
            println!(
                "{} events in these figures carry a business-rule anomaly: `owsu-jobs quality --year {year}` lists them.",
                review.flagged_events
            );
            println!(
                "review written: {} (and review.json, one CSV per table, in {})",
                html.display(),
                out.display()
            );
            Ok(0)
        }
        Command::Quality(a) => {
            let out = a.out_dir("quality");
            let q = rt.block_on(crate::quality::compute(
                &store,
                &reference,
                a.year,
                a.scope.as_deref(),
            ))?;
            let html = crate::quality::write(&q, &out)?;
            print!("{}", crate::quality::table(&q));
            println!(
                "quality report written: {} (and quality.json, anomalies.csv, overcharging.csv, waiting_corrections.csv)",
                html.display()
            );
            Ok(0)
        }
        Command::Demand {
            from,
            to,
            scope,
            out,
        } => {
            let (f, t) = (
                crate::demand::parse_month(&from)?,
                crate::demand::parse_month(&to)?,
            );
            let o = rt.block_on(crate::demand::run(
                &store,
                &reference,
                f,
                t,
                scope.as_deref(),
                &out,
            ))?;
            println!(
                "sector demand {from} to {to}: {} rows; Parquet {} (Hive, by year), CSV {}, dictionary {}",
                o.rows,
                o.parquet_dir.display(),
                o.csv.display(),
                o.dictionary.display()
            );
            Ok(0)
        }
        Command::Inactive {
            as_of,
            scope,
            out,
            rules,
        } => {
            let report = rt.block_on(crate::inactive::run(
                &store,
                &reference,
                as_of,
                scope.as_deref(),
                &rules,
            ))?;
            print!("{}", crate::inactive::table(&report));
            let (csv, json) = crate::inactive::write(&report, &out)?;
            println!("written: {} and {}", csv.display(), json.display());
            Ok(if report.flags.is_empty() {
                0
            } else {
                EXIT_FLAGGED
            })
        }
    }
}
