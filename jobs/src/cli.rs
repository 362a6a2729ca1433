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
        - approve, restatements, approvals: approved reviews that stay put, and what changed since;\n\
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
    /// year-on-year change, processing times and reporting completeness. An approved year shows
    /// its approved figures (the same bytes as when approved) and the restatements pending.
    Review(ReviewArgs),
    /// Approve a year's review as it stands: records who, when, the table versions and a digest
    /// of the figures in the lake's audit/approvals table. From then on `review` shows these
    /// figures, whatever arrives later; a new approval supersedes this one.
    Approve {
        /// The year to approve.
        #[arg(long)]
        year: i32,
        /// Only this province or unit's review.
        #[arg(long)]
        scope: Option<String>,
        /// Who approves (recorded).
        #[arg(long)]
        by: String,
    },
    /// What changed since a year's approval: per unit and figure, approved and current value,
    /// and the late events and corrections that explain them (CSV and JSON).
    Restatements(YearReport),
    /// Every approval of a year's review, oldest first (the last one holds).
    Approvals {
        /// The year.
        #[arg(long)]
        year: i32,
        /// Only this province or unit's review.
        #[arg(long)]
        scope: Option<String>,
    },
    /// Reporting completeness and timeliness per unit and month, as DHIS2 reports them: working
    /// days expected (Monday to Friday less the public holidays of holidays.csv), unit-days
    /// closed, closed on time and reconciled (own count equals what arrived); per month,
    /// province and unit, with the least complete units first (CSV and JSON).
    Completeness {
        /// Year, scope and output directory (default reports/completeness-YEAR[-SCOPE]).
        #[command(flatten)]
        report: YearReport,
        /// A close is on time when recorded before this hour (Cambodia time) of the next
        /// working day.
        #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(0..24))]
        deadline_hour: u32,
    },
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
    /// The live oversight dashboard: national figures of the day and the year to date, the
    /// provinces, inactive units, completeness and anomalies, per province (/p/KH-PP) and unit
    /// (/u/KH-PPDD), in English or Khmer (?lang=km). Server-rendered HTML, no script.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
        /// Seconds between loads of the board from the lake.
        #[arg(long, default_value_t = 60)]
        refresh_s: u64,
        /// The day to show (default: the latest day with figures, at every refresh).
        #[arg(long)]
        as_of: Option<NaiveDate>,
    },
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

/// `owsu-jobs review`.
#[derive(Debug, clap::Args)]
pub struct ReviewArgs {
    /// Year, scope and output directory.
    #[command(flatten)]
    pub report: YearReport,
    /// The current figures even when the year is approved (labelled as not approved).
    #[arg(long)]
    pub current: bool,
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
        Command::Review(ReviewArgs { report: a, current }) => {
            let (year, out, scope) = (a.year, a.out_dir("review"), a.scope.as_deref());
            let (review, approval, pending) = rt.block_on(async {
                let (review, approval) = if current {
                    (
                        crate::review::compute(&store, &reference, year, scope).await?,
                        None,
                    )
                } else {
                    crate::approval::review_as_approved(&store, &reference, year, scope).await?
                };
                let pending = match approval {
                    Some(_) => crate::approval::restatements(&store, &reference, year, scope)
                        .await?
                        .restated
                        .len(),
                    None => 0,
                };
                anyhow::Ok((review, approval, pending))
            })?;
            let status = crate::approval::status_line(approval.as_ref(), pending, year);
            let html = crate::review::write_with_status(&review, &out, Some(&status))?;
            print!("{}", crate::review::facts_table(&review));
            println!("{status}");
            println!(
                "{} events in these figures carry a business-rule anomaly: `owsu-jobs quality --year {year}` lists them.",
                review.flagged_events
            );
            if !review.lost_events.is_none() {
                println!(
                    "{} events are in no figure: Kafka deleted them before the lake held them ({} gaps accepted by {}; audit/offset_gaps).",
                    review.lost_events.events,
                    review.lost_events.gaps,
                    review.lost_events.accepted_by.join(", ")
                );
            }
            println!(
                "review written: {} (and review.json, one CSV per table, in {})",
                html.display(),
                out.display()
            );
            Ok(0)
        }
        Command::Approve { year, scope, by } => {
            let (a, review) = rt.block_on(crate::approval::approve(
                &store,
                &reference,
                year,
                scope.as_deref(),
                &by,
            ))?;
            print!("{}", crate::review::facts_table(&review));
            println!(
                "approved the review of {year} ({}) as {by}: {}, from tables {}{}",
                scope.as_deref().unwrap_or("national"),
                a.digest,
                a.table_versions,
                a.supersedes
                    .map(|d| format!("; supersedes {d}"))
                    .unwrap_or_default()
            );
            Ok(0)
        }
        Command::Restatements(a) => {
            let out = a.out_dir("restatements");
            let r = rt.block_on(crate::approval::restatements(
                &store,
                &reference,
                a.year,
                a.scope.as_deref(),
            ))?;
            let csv = crate::approval::write(&r, &out)?;
            print!("{}", crate::approval::table(&r));
            println!(
                "written: {} (and late_events.csv, restatements.json)",
                csv.display()
            );
            Ok(0)
        }
        Command::Approvals { year, scope } => {
            let list = rt.block_on(crate::approval::list(&store, year, scope.as_deref()))?;
            anyhow::ensure!(
                !list.is_empty(),
                "the review of {year} has no approval yet (owsu-jobs approve --year {year} --by NAME)"
            );
            print!("{}", crate::approval::approvals_table(&list));
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
        Command::Serve {
            addr,
            refresh_s,
            as_of,
        } => {
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(addr).await?;
                crate::serve::serve(
                    store,
                    reference,
                    crate::serve::ServeConfig {
                        refresh: std::time::Duration::from_secs(refresh_s.max(1)),
                        as_of,
                    },
                    listener,
                )
                .await
            })?;
            Ok(0)
        }
        Command::Completeness {
            report: a,
            deadline_hour,
        } => {
            let out = a.out_dir("completeness");
            let r = rt.block_on(crate::completeness::run(
                &store,
                &reference,
                a.year,
                a.scope.as_deref(),
                crate::completeness::Deadline {
                    hour: deadline_hour,
                },
            ))?;
            let csv = crate::completeness::write(&r, &out)?;
            print!("{}", crate::completeness::table(&r));
            println!(
                "written: {} (and completeness_monthly.csv, completeness_by_province.csv, least_complete_units.csv, completeness.json)",
                csv.display()
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
