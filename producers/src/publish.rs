//! From accepted events to acknowledged Kafka messages, through the durable `Outbox`.
//!
//! The producer is idempotent with `acks=all`: a retry inside librdkafka never duplicates a
//! message, and an acknowledgement means every in-sync replica has it. Key = unit code, so a
//! unit's events keep their order on one partition.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use owsu_schemas::record::Event;
use owsu_schemas::FastMap;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::kafka::KafkaArgs;
use crate::outbox::{Outbox, OutboxRecord};

const PENDING: u8 = 0;
const ACKED: u8 = 1;
const FAILED: u8 = 2;

/// Records delivery results of the segments in flight. A message's opaque is
/// `slot << 32 | index`: its segment's slot and its index in the segment.
///
/// Every acknowledged message passes through [`AckContext::delivery`] on librdkafka's polling
/// thread, so the slot lookup is made cheap: a [`FastMap`] (a slot is a counter of ours), and the
/// status stored under the lock rather than after cloning the segment's `Arc`.
#[derive(Default)]
pub(crate) struct AckContext {
    slots: Mutex<FastMap<usize, Arc<Vec<AtomicU8>>>>,
    last_error: Mutex<Option<String>>,
    acked_total: AtomicU64,
    failed_total: AtomicU64,
}

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let (slot, index) = (opaque >> 32, opaque & 0xffff_ffff);
        let slots = self.slots.lock().expect("ack lock");
        let Some(statuses) = slots.get(&slot) else {
            return; // a segment given up on (delivery timeout): it stays in the outbox
        };
        match result {
            Ok(_) => {
                statuses[index].store(ACKED, Ordering::Release);
                self.acked_total.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                statuses[index].store(FAILED, Ordering::Release);
                drop(slots); // never held with the error's lock
                self.failed_total.fetch_add(1, Ordering::Relaxed);
                *self.last_error.lock().expect("error lock") = Some(e.to_string());
            }
        }
    }
}

/// A segment sent and not yet settled.
struct InFlight {
    segment: PathBuf,
    records: Vec<OutboxRecord>,
    slot: usize,
    statuses: Arc<Vec<AtomicU8>>,
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
    /// Brokers, security settings, `-X` overrides and topic prefix.
    pub kafka: KafkaArgs,
    /// Directory of the durable outbox.
    pub outbox_dir: std::path::PathBuf,
    /// How long a message may wait for an acknowledgement before it stays in the outbox.
    pub delivery_timeout: Duration,
    /// Records per outbox segment (one fsync each).
    pub segment_records: usize,
    /// The office's key: every message is signed with it (header `owsu-signature`).
    pub signing: Option<owsu_schemas::signing::Keyring>,
}

/// Sends events to Kafka through the durable outbox, whose lock it holds while it lives: a
/// message leaves the outbox only once every in-sync replica has it (`acks=all`), and
/// librdkafka's own retries never duplicate it (idempotent producer).
pub struct Publisher {
    producer: ThreadedProducer<AckContext>,
    outbox: Outbox,
    config: PublisherConfig,
    progress: ProgressBar,
    next_slot: usize,
    in_flight: VecDeque<InFlight>,
}

impl Publisher {
    /// Creates the producer (idempotent, `acks=all`, murmur2 partitioner as Kafka's Java client,
    /// zstd level 1, `message.timeout.ms` = the delivery timeout; `-X` overrides applied last) and opens
    /// the outbox. Fails on a refused `-X` override, an unreadable SASL password, or an outbox
    /// another producer holds.
    pub fn new(config: PublisherConfig) -> anyhow::Result<Self> {
        let mut c = config.kafka.client_config()?;
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            // Kafka's Java client partitions keyed records by murmur2; librdkafka's default is
            // CRC32. Any producer an office or a later tool uses must put a unit on the same
            // partition (its state lives there), so use the Java client's hash.
            .set("partitioner", "murmur2_random")
            .set("compression.type", "zstd")
            // Level 1, not zstd's default 3: compressing was a tenth of publish's CPU at level
            // 3. A year's service events take 49.7 MB on the broker at level 1 against 46.8 MB
            // at 3 (lz4: 79 MB), and catch-up reads either as fast.
            .set("compression.level", "1")
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
            next_slot: 0,
            in_flight: VecDeque::new(),
        })
    }

    /// The outbox this publisher stages into and sends from.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The Kafka settings it was created with (for topic names).
    pub fn kafka(&self) -> &KafkaArgs {
        &self.config.kafka
    }

    /// Shows a progress bar (on a terminal) counting acknowledged messages against `total`.
    pub(crate) fn show_progress(&mut self, total: u64, what: &str) {
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

    /// Removes the progress bar from the terminal.
    pub(crate) fn finish_progress(&self) {
        self.progress.finish_and_clear();
    }

    /// Encodes events and makes them durable in the outbox, `segment_records` per segment,
    /// without sending them. Returns how many were staged (all of them, or an error).
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
    pub(crate) fn stage_records(&self, records: &[OutboxRecord]) -> anyhow::Result<usize> {
        self.outbox.append(records)?;
        Ok(records.len())
    }

    /// Sends every segment in the outbox, waiting for each one's acknowledgements; removes
    /// what Kafka acknowledged.
    pub fn deliver(&mut self) -> anyhow::Result<DeliveryReport> {
        let mut report = self.settle_all()?;
        let segments = self.outbox.segments()?;
        let mut broker_down = report.pending > 0;
        for seg in segments {
            let records = Outbox::read(&seg)?;
            if broker_down {
                report.pending += records.len() as u64;
                continue;
            }
            self.send(seg, records)?;
            let r = self.settle_all()?;
            report.delivered += r.delivered;
            report.pending += r.pending;
            broker_down = r.pending > 0;
        }
        Ok(report)
    }

    /// Makes records durable in the outbox as a segment and sends them without waiting for
    /// their acknowledgements, so the next segment is prepared while Kafka acknowledges this
    /// one. Segments whose acknowledgements are all in leave the outbox (or shrink to what
    /// failed). `pending` > 0 in the report means Kafka is not acknowledging.
    pub(crate) fn publish_segment(
        &mut self,
        records: Vec<OutboxRecord>,
    ) -> anyhow::Result<DeliveryReport> {
        let seg = self.outbox.append(&records)?;
        let stalled = self.send(seg, records)?;
        let mut report = self.settle(false)?;
        if stalled {
            let r = self.settle_all()?;
            report.delivered += r.delivered;
            report.pending += r.pending.max(1);
        }
        Ok(report)
    }

    /// Waits for every segment in flight (at most the delivery timeout) and settles it.
    pub(crate) fn settle_all(&mut self) -> anyhow::Result<DeliveryReport> {
        // flush waits for every in-flight message's outcome; message.timeout.ms bounds it.
        let deadline = Instant::now() + self.config.delivery_timeout + Duration::from_secs(5);
        while self.producer.in_flight_count() > 0 && Instant::now() < deadline {
            let _ = self.producer.flush(Duration::from_millis(200));
            self.tick();
        }
        self.tick();
        self.settle(true)
    }

    /// Settles the oldest segments whose messages all have an outcome (with `all`, every
    /// segment: what has none by now stays in the outbox).
    fn settle(&mut self, all: bool) -> anyhow::Result<DeliveryReport> {
        let mut report = DeliveryReport::default();
        while let Some(f) = self.in_flight.front() {
            if !all
                && f.statuses
                    .iter()
                    .any(|s| s.load(Ordering::Acquire) == PENDING)
            {
                break;
            }
            let f = self.in_flight.pop_front().expect("front exists");
            self.producer
                .context()
                .slots
                .lock()
                .expect("ack lock")
                .remove(&f.slot);
            let keep: Vec<bool> = f
                .statuses
                .iter()
                .map(|s| s.load(Ordering::Acquire) != ACKED)
                .collect();
            let left = self.outbox.retain(&f.segment, f.records, &keep)? as u64;
            report.delivered += keep.iter().filter(|k| !**k).count() as u64;
            report.pending += left;
            if left > 0 {
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

    /// Hands a segment's records to librdkafka. Returns true when its queue stopped draining
    /// (the broker is gone): the records not handed over stay in the outbox.
    fn send(&mut self, segment: PathBuf, records: Vec<OutboxRecord>) -> anyhow::Result<bool> {
        // Signing is the costly part of a signed send (an Ed25519 signature per event): done for
        // the whole segment on every core before the records are handed over in order.
        let signatures: Option<Vec<String>> = match &self.config.signing {
            None => None,
            Some(ring) => {
                use rayon::prelude::*;
                Some(
                    records
                        .par_iter()
                        .with_min_len(1024)
                        .map(|r| {
                            // The key is the unit code: an office signs its own unit's events only.
                            let k = ring.get(&r.key).with_context(|| {
                                format!(
                                    "the outbox holds an event of unit {} but the signing keys \
                                     are of {}: publish each unit's events with its own key",
                                    r.key,
                                    ring.units().join(", ")
                                )
                            })?;
                            Ok(k.sign(&r.payload))
                        })
                        .collect::<anyhow::Result<_>>()?,
                )
            }
        };
        let slot = self.next_slot;
        self.next_slot += 1;
        let statuses: Arc<Vec<AtomicU8>> =
            Arc::new((0..records.len()).map(|_| AtomicU8::new(PENDING)).collect());
        self.producer
            .context()
            .slots
            .lock()
            .expect("ack lock")
            .insert(slot, statuses.clone());
        let started = Instant::now();
        let failed_before = self.producer.context().failed_total.load(Ordering::Relaxed);
        let mut stalled = false;
        'records: for (i, r) in records.iter().enumerate() {
            let mut record = BaseRecord::with_opaque_to(&r.topic, (slot << 32) | i)
                .key(r.key.as_str())
                .payload(r.payload.as_slice());
            if let Some(signatures) = &signatures {
                record = record.headers(OwnedHeaders::new().insert(Header {
                    key: owsu_schemas::signing::HEADER,
                    value: Some(signatures[i].as_bytes()),
                }));
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        self.tick();
                        std::thread::sleep(Duration::from_millis(5));
                        let failing = self.producer.context().failed_total.load(Ordering::Relaxed)
                            > failed_before;
                        if failing || started.elapsed() > self.config.delivery_timeout * 2 {
                            // The queue does not drain: the broker is gone. The rest stays.
                            stalled = true;
                            break 'records;
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
        self.in_flight.push_back(InFlight {
            segment,
            records,
            slot,
            statuses,
        });
        Ok(stalled)
    }

    fn tick(&self) {
        self.progress
            .set_position(self.producer.context().acked_total.load(Ordering::Relaxed));
    }
}
