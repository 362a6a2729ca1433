//! What `owsu-producer publish` and `owsu-producer simulate` do, as typed functions: the CLI
//! (`cli`) and the umbrella (`owsu demo`, `owsu bench`) both call these and print what they
//! return. Nothing here prints; progress bars go to the terminal only when it is one.
//!
//! Guarantees of both: an event reaches Kafka only after it was validated, pseudonymised and made
//! durable in the outbox; what Kafka did not acknowledge stays in the outbox and is counted in
//! [`DeliveryReport::pending`]; a rejected record is written to the rejects file with its line,
//! field and reason, never dropped silently.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use owsu_schemas::ids::IdHasher;
use owsu_schemas::record::{Event, RecordKind};
use owsu_schemas::reference::Reference;
use owsu_schemas::time::now_millis;
use owsu_schemas::Flags;

use crate::import::{self, Format, RecordError};
use crate::outbox::OutboxRecord;
use crate::publish::{DeliveryReport, Publisher};
use crate::simulate::{Emit, SimConfig, Simulator, Truth};

/// Counts of what a command did, by record kind, with rejects and business-rule flags.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    by_kind: [u64; 3],
    rejected: u64,
    /// Accepted records that break a business rule, by rule (they are published all the same).
    flagged: std::collections::BTreeMap<owsu_schemas::Rule, u64>,
}

impl Tally {
    fn add(&mut self, e: &Event) {
        self.by_kind[e.kind() as usize] += 1;
    }

    fn flag(&mut self, flags: Flags) {
        for r in flags.iter() {
            *self.flagged.entry(r).or_default() += 1;
        }
    }

    /// Records accepted (valid, sent or waiting in the outbox), all kinds.
    pub fn accepted(&self) -> u64 {
        self.by_kind.iter().sum()
    }

    /// Records refused (written to the rejects file with line, field and reason).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// "service N, complaint N, unit_day N".
    pub fn kinds(&self) -> String {
        format!(
            "service {}, complaint {}, unit_day {}",
            self.by_kind[0], self.by_kind[1], self.by_kind[2]
        )
    }

    /// "; flagged as anomalies, counted all the same: FEE_ABOVE_SCHEDULE 10, …", or nothing.
    pub(crate) fn flagged_summary(&self) -> String {
        if self.flagged.is_empty() {
            return String::new();
        }
        let rules: Vec<String> = self
            .flagged
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        format!(
            "; flagged as anomalies, counted all the same: {}",
            rules.join(", ")
        )
    }
}

/// An office system's export to publish.
#[derive(Debug, Clone)]
pub struct PublishJob {
    /// The export: JSON lines with a `kind` field, or CSV.
    pub input: PathBuf,
    /// How to read it.
    pub format: Format,
    /// Record kind of a CSV file without a `kind` column (None: inferred from its columns).
    pub kind: Option<RecordKind>,
    /// Where rejected records go, one JSON line each (created only if there is one).
    pub rejects: PathBuf,
    /// Records read, staged in the outbox and sent at a time.
    pub chunk: usize,
    /// At most this many events per second (0: as fast as Kafka takes them).
    pub rate: u64,
}

impl PublishJob {
    /// The whole of `input` as fast as possible: format from its extension, rejects beside it
    /// (`INPUT.rejects.jsonl`), 100,000 records a chunk.
    pub fn new(input: &Path) -> Self {
        let mut rejects = input.as_os_str().to_owned();
        rejects.push(".rejects.jsonl");
        PublishJob {
            input: input.to_owned(),
            format: Format::from_path(input),
            kind: None,
            rejects: rejects.into(),
            chunk: 100_000,
            rate: 0,
        }
    }
}

/// What publishing a file did.
#[derive(Debug)]
pub struct Published {
    /// Records accepted, rejected and flagged.
    pub tally: Tally,
    /// Events Kafka acknowledged, and events left waiting in the outbox.
    pub report: DeliveryReport,
    /// Wall-clock time of the whole publish.
    pub took: Duration,
}

/// Lines handled at a time by all cores in [`publish_file`].
const PARALLEL_LINES: usize = 8192;

/// A record of the export after checking: its line as read, and the event, its business-rule
/// flags and its Avro payload, or why it was refused.
type Checked = (String, Result<(Event, Flags, Vec<u8>), RecordError>);

/// Validates, pseudonymises and publishes `job.input` through `publisher` (whose outbox is
/// delivered first if an earlier run left events in it).
///
/// Three stages overlap: a reader thread parses, validates, pseudonymises and encodes the next
/// chunk while this thread makes the previous one durable in the outbox and hands it to
/// librdkafka, whose acknowledgements of earlier chunks arrive meanwhile. The channel holds at
/// most two chunks and the outbox's segments in flight are bounded by librdkafka's queue, so
/// memory stays bounded whatever the size of the file.
pub fn publish_file(
    reference: &Reference,
    job: &PublishJob,
    hasher: &IdHasher,
    publisher: &mut Publisher,
) -> anyhow::Result<Published> {
    // Fail on an unreadable file before anything else starts.
    drop(
        import::read_file(&job.input, job.format, job.kind)
            .with_context(|| format!("opening {}", job.input.display()))?,
    );
    let waiting_before = publisher.outbox().pending()?;
    if waiting_before > 0 {
        tracing::info!(
            waiting = waiting_before,
            "delivering events left in the outbox by an earlier run first"
        );
    }
    let started = Instant::now();
    let now = now_millis();
    publisher.show_progress(0, "publishing");
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<OutboxRecord>>(2);
    let kafka = publisher.kafka().clone();
    let (tally, mut report) = std::thread::scope(|scope| -> anyhow::Result<_> {
        let reader = scope.spawn(|| -> anyhow::Result<Tally> {
            let lines = checked_lines(reference, job, hasher, now)?;
            stage_chunks(job, &kafka, lines, tx)
        });
        let sent = send_chunks(publisher, rx, job.rate, started);
        let tally = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the reader thread panicked"))??;
        Ok((tally, sent?))
    })?;
    report.pending = publisher.outbox().pending()? as u64;
    publisher.finish_progress();
    Ok(Published {
        tally,
        report,
        took: started.elapsed(),
    })
}

/// The export's records, parsed, pseudonymised, validated and encoded on all cores
/// (`PARALLEL_LINES` at a time, results in file order).
///
/// Event ids are derived with each record's occurrence in this export, counted in file order
/// across chunks (`ExportIds`), before the lines are checked.
fn checked_lines<'a>(
    reference: &'a Reference,
    job: &'a PublishJob,
    hasher: &'a IdHasher,
    now: i64,
) -> anyhow::Result<Box<dyn Iterator<Item = Checked> + 'a>> {
    use rayon::prelude::*;
    let check = move |line: import::Line| -> Checked {
        let refused = |field, reason| RecordError {
            file: job.input.clone(),
            line: line.number,
            field,
            reason,
        };
        let checked = line.parsed.and_then(|e| {
            owsu_schemas::validate(&e, reference, now)
                .map(|flags| (e, flags))
                .map_err(|v| {
                    let reason = v
                        .to_string()
                        .split_once(": ")
                        .map(|(_, r)| r.to_owned())
                        .unwrap_or_else(|| v.to_string());
                    refused(Some(v.field()), reason)
                })
        });
        let encoded = checked.and_then(|(e, flags)| {
            let payload = owsu_schemas::encode(&e)
                .map_err(|x| refused(None, format!("could not be encoded: {x}")))?;
            Ok((e, flags, payload))
        });
        (line.text, encoded)
    };
    let mut ids = import::ExportIds::new();
    let opening = || format!("opening {}", job.input.display());
    Ok(match job.format {
        Format::Jsonl => {
            let raw = import::json_lines(&job.input).with_context(opening)?;
            Box::new(read_ahead(chunks(raw, PARALLEL_LINES)).flat_map(move |c| {
                let mut lines: Vec<import::Line> = c
                    .into_par_iter()
                    .filter_map(|(n, l)| import::parse_json_line(&job.input, n, l, job.kind))
                    .collect();
                ids.pseudonymise_lines(&mut lines, hasher);
                lines.into_par_iter().map(check).collect::<Vec<_>>()
            }))
        }
        Format::Csv => {
            let parsed =
                import::read_file(&job.input, job.format, job.kind).with_context(opening)?;
            Box::new(chunks(parsed, PARALLEL_LINES).flat_map(move |mut lines| {
                ids.pseudonymise_lines(&mut lines, hasher);
                lines.into_par_iter().map(check).collect::<Vec<_>>()
            }))
        }
    })
}

/// Counts the checked records, writes the refused ones to the rejects file, and sends the
/// accepted ones to `tx` in chunks of `job.chunk` outbox records.
fn stage_chunks(
    job: &PublishJob,
    kafka: &owsu_runtime::kafka::KafkaArgs,
    lines: impl Iterator<Item = Checked>,
    tx: std::sync::mpsc::SyncSender<Vec<OutboxRecord>>,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let mut rejects = Rejects::new(&job.rejects);
    let topics = RecordKind::ALL.map(|k| kafka.topic(k.topic()));
    let mut chunk: Vec<OutboxRecord> = Vec::with_capacity(job.chunk.min(1 << 20));
    for (text, checked) in lines {
        match checked {
            Ok((e, flags, payload)) => {
                tally.add(&e);
                tally.flag(flags);
                chunk.push(OutboxRecord {
                    topic: topics[e.kind() as usize].clone(),
                    key: e.unit_code().to_owned(),
                    payload,
                });
                if chunk.len() >= job.chunk && tx.send(std::mem::take(&mut chunk)).is_err() {
                    return Ok(tally); // the sender stopped on an error of its own
                }
            }
            Err(err) => {
                tally.rejected += 1;
                tracing::warn!("rejected {err}");
                rejects.write(&err, &text)?;
            }
        }
    }
    if !chunk.is_empty() {
        let _ = tx.send(chunk);
    }
    rejects.finish()?;
    Ok(tally)
}

/// Makes each chunk durable in the outbox and hands it to Kafka, at most `rate` events a second;
/// returns what Kafka acknowledged.
///
/// Once a delivery round leaves events waiting, Kafka is unreachable: later chunks are only made
/// durable in the outbox, rather than each waiting out the delivery timeout.
fn send_chunks(
    publisher: &mut Publisher,
    rx: std::sync::mpsc::Receiver<Vec<OutboxRecord>>,
    rate: u64,
    started: Instant,
) -> anyhow::Result<DeliveryReport> {
    let mut report = DeliveryReport::default();
    let mut kafka_down = false;
    let mut rounds = 0;
    let mut handed = 0u64;
    for records in rx.iter() {
        if rate > 0 {
            let due = started + Duration::from_secs_f64(handed as f64 / rate as f64);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        handed += records.len() as u64;
        if kafka_down {
            publisher.stage_records(&records)?;
        } else {
            let r = publisher.publish_segment(records)?;
            report.delivered += r.delivered;
            kafka_down = r.pending > 0;
            rounds += 1;
        }
    }
    report.delivered += publisher.settle_all()?.delivered;
    // A file with nothing valid still delivers what an earlier run left in the outbox.
    if rounds == 0 && !kafka_down {
        report.delivered += publisher.deliver()?.delivered;
    }
    Ok(report)
}

/// The rejects file, created on the first refused record (a clean export leaves none).
struct Rejects<'p> {
    path: &'p Path,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl<'p> Rejects<'p> {
    fn new(path: &'p Path) -> Self {
        Rejects { path, file: None }
    }

    /// One JSON line: file, line, field, reason, and the record with its ids redacted.
    fn write(&mut self, err: &RecordError, text: &str) -> anyhow::Result<()> {
        let w = match &mut self.file {
            Some(w) => w,
            None => self.file.insert(std::io::BufWriter::new(
                std::fs::File::create(self.path)
                    .with_context(|| format!("creating {}", self.path.display()))?,
            )),
        };
        serde_json::to_writer(
            &mut *w,
            &serde_json::json!({
                "file": err.file, "line": err.line, "field": err.field, "reason": err.reason,
                "record": import::redacted(text),
            }),
        )?;
        w.write_all(b"\n")?;
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        if let Some(mut w) = self.file {
            w.flush()?;
        }
        Ok(())
    }
}

/// An iterator's items in vectors of `n`.
/// The items of `it`, produced on a thread of their own at most two ahead of the consumer: the
/// file's next lines are read while all cores check the current ones (reading them in turn
/// left a core idle about a tenth of a publish). The thread ends when the consumer drops the
/// iterator, or at the end of `it`.
fn read_ahead<T: Send + 'static>(
    it: impl Iterator<Item = T> + Send + 'static,
) -> impl Iterator<Item = T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(2);
    std::thread::spawn(move || {
        for item in it {
            if tx.send(item).is_err() {
                break;
            }
        }
    });
    rx.into_iter()
}

fn chunks<T>(mut it: impl Iterator<Item = T>, n: usize) -> impl Iterator<Item = Vec<T>> {
    std::iter::from_fn(move || {
        let c: Vec<T> = it.by_ref().take(n).collect();
        (!c.is_empty()).then_some(c)
    })
}

/// How fast a simulated year goes to Kafka.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// As fast as Kafka takes it, `chunk` events per outbox segment.
    Max {
        /// Events per outbox segment and delivery round.
        chunk: usize,
    },
    /// One simulated working day per `day` of wall-clock time, as a live feed for dashboards.
    Realtime {
        /// Wall-clock time of one simulated day.
        day: Duration,
    },
}

/// Where a simulated year goes.
pub enum SimDestination<'a> {
    /// The import format (JSON lines), to be published later with [`publish_file`].
    File(&'a Path),
    /// Straight to Kafka, pseudonymised and validated like an office's export.
    Kafka {
        /// The deployment's id hasher (request and complaint numbers are never sent raw).
        hasher: &'a IdHasher,
        /// The publisher and its outbox.
        publisher: &'a mut Publisher,
        /// How fast.
        pace: Pace,
    },
}

/// What simulating a year did.
#[derive(Debug)]
pub struct Simulated {
    /// What was generated and which problems were planted.
    pub truth: Truth,
    /// Events by kind, flags, and simulated events that failed validation (a simulator bug).
    pub tally: Tally,
    /// Events Kafka acknowledged and events left in the outbox (for a file: all delivered).
    pub report: DeliveryReport,
    /// Wall-clock time.
    pub took: Duration,
}

/// Simulates `config`'s year for all 228 units of `reference` into `destination`, with a
/// progress bar of simulated days.
pub fn simulate(
    reference: &Reference,
    config: SimConfig,
    destination: SimDestination<'_>,
) -> anyhow::Result<Simulated> {
    let year = config.year;
    let sim = Simulator::new(reference, config);
    let started = Instant::now();
    let progress = indicatif::ProgressBar::new(365);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] day {pos}/{len} ({elapsed})")
            .expect("template"),
    );
    progress.set_message(format!("simulating {year}"));
    let day_done =
        |d: chrono::NaiveDate| progress.set_position(chrono::Datelike::ordinal(&d) as u64);
    let (truth, tally, report) = match destination {
        SimDestination::File(out) => simulate_to_file(&sim, out, day_done)?,
        SimDestination::Kafka {
            hasher,
            publisher,
            pace,
        } => simulate_to_kafka(reference, &sim, hasher, publisher, pace, day_done)?,
    };
    progress.finish_and_clear();
    Ok(Simulated {
        truth,
        tally,
        report,
        took: started.elapsed(),
    })
}

/// The year as JSON lines of the import format.
fn simulate_to_file(
    sim: &Simulator<'_>,
    out: &Path,
    day_done: impl Fn(chrono::NaiveDate),
) -> anyhow::Result<(Truth, Tally, DeliveryReport)> {
    let mut tally = Tally::default();
    let mut w = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
    );
    let truth = sim.run(|emit| {
        match emit {
            Emit::Event(e) => {
                tally.add(e);
                serde_json::to_writer(&mut w, &import::to_import_json(e))?;
                w.write_all(b"\n")?;
            }
            Emit::DayEnd(d) => day_done(d),
        }
        Ok(())
    })?;
    w.flush()
        .with_context(|| format!("writing {}", out.display()))?;
    let report = DeliveryReport {
        delivered: tally.accepted(),
        pending: 0,
    };
    Ok((truth, tally, report))
}

/// The year to Kafka through the outbox, a day's events staged at a time once `chunk` are
/// gathered (or every day when real-time).
fn simulate_to_kafka(
    reference: &Reference,
    sim: &Simulator<'_>,
    hasher: &IdHasher,
    publisher: &mut Publisher,
    pace: Pace,
    day_done: impl Fn(chrono::NaiveDate),
) -> anyhow::Result<(Truth, Tally, DeliveryReport)> {
    let mut tally = Tally::default();
    let (chunk_len, day_pause) = match pace {
        Pace::Max { chunk } => (chunk.max(1), None),
        Pace::Realtime { day } => (0, Some(day)),
    };
    let mut chunk: Vec<Event> = Vec::with_capacity(chunk_len);
    let mut report = DeliveryReport::default();
    let now = now_millis();
    let mut kafka_down = false;
    let truth = sim.run(|emit| {
        match emit {
            Emit::Event(e) => {
                let e = import::pseudonymise(e.clone(), hasher);
                match owsu_schemas::validate(&e, reference, now) {
                    Ok(flags) => tally.flag(flags),
                    Err(v) => {
                        // The simulator's own output failing validation is a bug: say so.
                        tally.rejected += 1;
                        tracing::error!("simulated event rejected: {v}");
                        return Ok(());
                    }
                }
                tally.add(&e);
                chunk.push(e);
            }
            Emit::DayEnd(d) => {
                day_done(d);
                if chunk.len() >= chunk_len || day_pause.is_some() {
                    let t0 = Instant::now();
                    publisher.stage(&chunk)?;
                    chunk.clear();
                    if !kafka_down {
                        let r = publisher.deliver()?;
                        report.delivered += r.delivered;
                        kafka_down = r.pending > 0;
                    }
                    if let Some(day) = day_pause {
                        std::thread::sleep(day.saturating_sub(t0.elapsed()));
                    }
                }
            }
        }
        Ok(())
    })?;
    publisher.stage(&chunk)?;
    if !kafka_down {
        report.delivered += publisher.deliver()?.delivered;
    }
    report.pending = publisher.outbox().pending()? as u64;
    Ok((truth, tally, report))
}
