//! From accepted events to acknowledged Kafka messages, through the durable [`Outbox`].
//!
//! The producer is idempotent with `acks=all`: a retry inside librdkafka never duplicates a
//! message, and an acknowledgement means every in-sync replica has it. Key = unit code, so a
//! unit's events keep their order on one partition.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use owsu_schemas::record::Event;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::kafka::KafkaArgs;
use crate::outbox::{Outbox, OutboxRecord};

const PENDING: u8 = 0;
const ACKED: u8 = 1;
const FAILED: u8 = 2;

/// Records delivery results of the batch in flight (one segment at a time).
#[derive(Default)]
pub struct AckContext {
    statuses: Mutex<Arc<Vec<AtomicU8>>>,
    last_error: Mutex<Option<String>>,
    acked_total: AtomicU64,
}

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let statuses = self.statuses.lock().expect("ack lock").clone();
        match result {
            Ok(_) => {
                statuses[index].store(ACKED, Ordering::Release);
                self.acked_total.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                statuses[index].store(FAILED, Ordering::Release);
                *self.last_error.lock().expect("error lock") = Some(e.to_string());
            }
        }
    }
}

/// What a delivery round achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Acknowledged by Kafka and removed from the outbox.
    pub delivered: u64,
    /// Still in the outbox (broker unreachable, timed out, or refused).
    pub pending: u64,
}

/// Settings of the publishing side.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    pub kafka: KafkaArgs,
    /// Directory of the durable outbox.
    pub outbox_dir: std::path::PathBuf,
    /// How long a message may wait for an acknowledgement before it stays in the outbox.
    pub delivery_timeout: Duration,
    /// Records per outbox segment (one fsync each).
    pub segment_records: usize,
}

pub struct Publisher {
    producer: ThreadedProducer<AckContext>,
    outbox: Outbox,
    config: PublisherConfig,
    progress: ProgressBar,
}

impl Publisher {
    pub fn new(config: PublisherConfig) -> anyhow::Result<Self> {
        let mut c = config.kafka.client_config();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "zstd")
            .set("linger.ms", "20")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "200000")
            .set(
                "message.timeout.ms",
                config.delivery_timeout.as_millis().to_string(),
            );
        config.kafka.apply_overrides(&mut c);
        let producer: ThreadedProducer<AckContext> = c.create_with_context(AckContext::default())?;
        let outbox = Outbox::open(&config.outbox_dir)?;
        Ok(Publisher {
            producer,
            outbox,
            config,
            progress: ProgressBar::hidden(),
        })
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub fn kafka(&self) -> &KafkaArgs {
        &self.config.kafka
    }

    /// Shows a progress bar (on a terminal) counting acknowledged messages against `total`.
    pub fn show_progress(&mut self, total: u64, what: &str) {
        let pb = ProgressBar::new(total);
        pb.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:40}] {human_pos}/{human_len} ({per_sec}, eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb.set_message(what.to_owned());
        self.progress = pb;
    }

    pub fn finish_progress(&self) {
        self.progress.finish_and_clear();
    }

    /// Encodes events and makes them durable in the outbox. Returns how many were staged.
    pub fn stage(&self, events: &[Event]) -> anyhow::Result<usize> {
        let mut batch = Vec::with_capacity(self.config.segment_records.min(events.len()));
        for chunk in events.chunks(self.config.segment_records.max(1)) {
            batch.clear();
            for e in chunk {
                batch.push(OutboxRecord {
                    topic: self.config.kafka.topic(e.kind().topic()),
                    key: e.unit_code().to_owned(),
                    payload: owsu_schemas::encode(e)?,
                });
            }
            self.outbox.append(&batch)?;
        }
        Ok(events.len())
    }

    /// Makes already encoded records durable in the outbox (one segment).
    pub fn stage_records(&self, records: &[OutboxRecord]) -> anyhow::Result<usize> {
        self.outbox.append(records)?;
        Ok(records.len())
    }

    /// Sends every segment in the outbox; removes what Kafka acknowledged.
    pub fn deliver(&self) -> anyhow::Result<DeliveryReport> {
        let mut report = DeliveryReport::default();
        let segments = self.outbox.segments()?;
        let mut broker_down = false;
        for seg in segments {
            let records = Outbox::read(&seg)?;
            if broker_down {
                report.pending += records.len() as u64;
                continue;
            }
            let keep = self.send_segment(&records)?;
            let left = self.outbox.retain(&seg, records, &keep)? as u64;
            report.delivered += keep.iter().filter(|k| !**k).count() as u64;
            report.pending += left;
            if left > 0 {
                // Nothing later will fare better in this round; leave it for the next flush.
                broker_down = true;
                let why = self
                    .producer
                    .context()
                    .last_error
                    .lock()
                    .expect("error lock")
                    .clone();
                tracing::warn!(
                    waiting = left,
                    error = why.as_deref().unwrap_or("no acknowledgement in time"),
                    "Kafka did not acknowledge every message; they stay in the outbox for the next flush"
                );
            }
        }
        Ok(report)
    }

    /// Sends one segment and waits for all acknowledgements (or the delivery timeout).
    /// Returns, per record, whether it must stay in the outbox.
    fn send_segment(&self, records: &[OutboxRecord]) -> anyhow::Result<Vec<bool>> {
        let statuses: Arc<Vec<AtomicU8>> =
            Arc::new((0..records.len()).map(|_| AtomicU8::new(PENDING)).collect());
        *self.producer.context().statuses.lock().expect("ack lock") = statuses.clone();
        let started = Instant::now();
        for (i, r) in records.iter().enumerate() {
            let mut record = BaseRecord::with_opaque_to(&r.topic, i)
                .key(r.key.as_str())
                .payload(r.payload.as_slice());
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        self.tick();
                        std::thread::sleep(Duration::from_millis(5));
                        if started.elapsed() > self.config.delivery_timeout * 2 {
                            // The queue never drains: the broker is gone. Everything from here stays.
                            break;
                        }
                    }
                    Err((e, _)) => {
                        return Err(anyhow::anyhow!(
                            "could not hand message {i} to librdkafka: {e}"
                        ))
                    }
                }
            }
            if i % 4096 == 0 {
                self.tick();
            }
        }
        // flush waits for every in-flight message's outcome; message.timeout.ms bounds it.
        let deadline = Instant::now() + self.config.delivery_timeout + Duration::from_secs(5);
        while self.producer.in_flight_count() > 0 && Instant::now() < deadline {
            let _ = self.producer.flush(Duration::from_millis(200));
            self.tick();
        }
        self.tick();
        Ok(statuses
            .iter()
            .map(|s| s.load(Ordering::Acquire) != ACKED)
            .collect())
    }

    fn tick(&self) {
        self.progress
            .set_position(self.producer.context().acked_total.load(Ordering::Relaxed));
    }

    /// Messages acknowledged since this publisher started.
    pub fn acked_total(&self) -> u64 {
        self.producer.context().acked_total.load(Ordering::Relaxed)
    }
}
