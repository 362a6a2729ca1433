//! The consumer loop: Kafka → raw Delta tables → summary Delta tables, exactly once by the table.
//!
//! One batch at a time, in this order:
//! 1. collect messages until the batch is full or `linger` has passed since its first message;
//! 2. decode and validate; bad records go to the dead-letter topic with the reason and their
//!    source topic/partition/offset in headers, and their acknowledgements are awaited;
//! 3. append the good ones to the raw tables, one file per table, committed with the batch's last
//!    offset of each partition in a Delta `txn` action (app id `<topic>/<partition>`);
//! 4. fold them into the per-partition state and replace the summary files of the months they
//!    touched, each summary table's commit carrying the same offsets;
//! 5. commit the offsets to Kafka too, for lag monitoring only.
//!
//! The tables, not Kafka, say where to resume: on every assignment the consumer starts each
//! partition after the lowest offset its raw and summary tables hold. A crash between steps 3
//! and 4 replays the batch: its rows are already in raw (not appended again, the txn says so),
//! the state counts them once by `event_id`, and the summaries are written. Every commit checks
//! that the table's offsets are the ones this instance expects; if another instance committed
//! the partition meanwhile (this one stalled past its session timeout), the commit is refused,
//! the batch dropped, and the offsets read again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use owsu_lake::tables::{TableDef, RAW, SUMMARIES};
use owsu_lake::{app_id, LakeTable, Store};
use owsu_schemas::record::RecordKind;
use owsu_schemas::reference::Reference;
use owsu_schemas::time::now_millis;
use owsu_schemas::FastMap;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message};
use tokio::runtime::Handle;

use crate::flush::{self, Fenced, FlushConfig, LakeOffsets, Pending};
use crate::gaps;
use crate::kafka::KafkaArgs;
use crate::metrics::{BatchCommitted, DeadLettered, Metrics};
use crate::raw::{self, Landed};
use crate::restore::{self, StateConfig};
use crate::state::{PartitionState, Rejected};
use crate::summary::{self, Codes, Quarter, Table};

/// The defaults of `owsu-aggregator run`, defined once for its flags and [`PipelineConfig::new`].
pub mod defaults {
    /// Messages that close a batch.
    pub(crate) const MAX_BATCH: usize = 50_000;
    /// Milliseconds after its first message that close a batch (summaries are visible about
    /// this long after an event arrives).
    pub(crate) const LINGER_MS: u64 = 500;
    /// Kafka session timeout in ms: how soon a dead instance's partitions move to the others.
    pub(crate) const SESSION_TIMEOUT_MS: u64 = 10_000;
    /// Object reads and writes in flight at once.
    pub(crate) const IO_CONCURRENCY: usize = 16;
    /// Page cache of each partition's state file, MiB. Small on purpose: the operating
    /// system's page cache already holds the file, and 2 MiB caught up a national year (5 M
    /// events, time-ordered or shuffled) as fast as 8 did with 70 to 90 MiB less peak RSS.
    pub(crate) const STATE_CACHE_MIB: usize = 2;
    /// Seconds between snapshots of changed partitions' state to the store.
    pub(crate) const SNAPSHOT_INTERVAL_S: u64 = 300;
    /// Seconds between commits of the partition state's open write transaction (a crash
    /// replays at most about this much from Kafka).
    pub(crate) const STATE_COMMIT_INTERVAL_S: u64 = 10;
    /// Seconds between compactions of the raw tables while running (0: never).
    pub(crate) const COMPACT_INTERVAL_S: u64 = 600;
    /// Seconds between reads of the topics' metadata for under-replicated partitions.
    pub(crate) const REPLICATION_CHECK_S: u64 = 30;
    /// Size of a compacted raw file, MiB.
    pub(crate) const COMPACT_TARGET_MIB: u64 = 128;
    /// Size a raw table's next file (encoded as batches come, held in memory) is written at, MiB.
    pub(crate) const RAW_FLUSH_MIB: usize = 32;
    /// Seconds after their first row that close a raw table's next file.
    pub(crate) const RAW_FLUSH_S: u64 = 60;
    /// Milliseconds between summary commits while catching up (live: after every batch that
    /// finds Kafka drained). 10 s was tried (paired over a national year of 1 M events: shuffled
    /// catch-up 9.9 -> 8.8 s, peak RSS 370 -> 320 MiB) but an instance taking over a stalled
    /// one's backlog then showed nothing in the lake for more than 15 s (the fault suite's
    /// window), so the default stays at 2 s and 10 s is a flag for bulk re-imports.
    pub(crate) const SUMMARY_INTERVAL_MS: u64 = 2_000;
    /// Memory `rebuild` may hold partitions' states in, MiB (about 200 bytes an event: a
    /// national year of ~1 M events fits; past it, the largest partitions go to disk).
    pub(crate) const REBUILD_MEMORY_MIB: usize = 512;
}

/// How the aggregator runs.
#[derive(Clone)]
pub struct PipelineConfig {
    /// Where Kafka is and how to connect to it; topics under its prefix.
    pub kafka: KafkaArgs,
    /// Consumer group; instances with the same group share the partitions.
    pub group: String,
    /// Close a batch at this many messages...
    pub(crate) max_batch: usize,
    /// ...or this long after its first message.
    pub linger: Duration,
    /// Stop once everything that was in the topics at start-up is processed and committed.
    pub until_caught_up: bool,
    /// Kafka consumer session timeout: how fast a dead instance's partitions move on.
    pub(crate) session_timeout: Duration,
    /// Object writes in flight at once.
    pub(crate) write_concurrency: usize,
    /// Where partition state lives and how often it is snapshotted.
    pub state: StateConfig,
    /// How often the raw tables' small files are compacted while running (never when `None`).
    pub(crate) compact_interval: Option<Duration>,
    /// Size of a compacted raw file.
    pub(crate) compact_target_bytes: i64,
    /// How often the event topics' metadata is read for partitions with fewer in-sync
    /// replicas than replicas (the `owsu_under_replicated_partitions` gauge).
    pub(crate) replication_check: Duration,
    /// When raw rows and summaries are committed.
    pub flush: FlushConfig,
    /// Dead-letter service and complaint events without a valid signature of their unit.
    pub signatures_required: bool,
    /// Resume a partition whose next offset Kafka deleted at its log start, recording the gap
    /// with this name; `None` (the default): such a partition stops the aggregator.
    pub accept_gaps_by: Option<String>,
}

impl PipelineConfig {
    /// The configuration of `owsu-aggregator run --group GROUP` with every other flag at its
    /// default ([`defaults`]): runs until stopped, signatures not required, partition state in
    /// the default directory of `store_url` and `group`.
    pub fn new(kafka: KafkaArgs, group: &str, store_url: &str) -> Self {
        let secs = Duration::from_secs;
        PipelineConfig {
            kafka,
            group: group.to_owned(),
            max_batch: defaults::MAX_BATCH,
            linger: Duration::from_millis(defaults::LINGER_MS),
            until_caught_up: false,
            session_timeout: Duration::from_millis(defaults::SESSION_TIMEOUT_MS),
            write_concurrency: defaults::IO_CONCURRENCY,
            state: StateConfig {
                dir: restore::default_dir(store_url, group),
                cache_bytes: defaults::STATE_CACHE_MIB << 20,
                snapshot_interval: secs(defaults::SNAPSHOT_INTERVAL_S),
                commit_interval: secs(defaults::STATE_COMMIT_INTERVAL_S),
            },
            compact_interval: Some(secs(defaults::COMPACT_INTERVAL_S)),
            compact_target_bytes: (defaults::COMPACT_TARGET_MIB << 20) as i64,
            replication_check: secs(defaults::REPLICATION_CHECK_S),
            flush: FlushConfig {
                raw_bytes: defaults::RAW_FLUSH_MIB << 20,
                raw_interval: secs(defaults::RAW_FLUSH_S),
                summary_interval: Duration::from_millis(defaults::SUMMARY_INTERVAL_MS),
            },
            signatures_required: false,
            accept_gaps_by: None,
        }
    }
}

/// What a run did.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunReport {
    /// Kafka messages read (every one was counted, dead-lettered or found a duplicate).
    pub messages: u64,
    /// Valid events, by record kind (service, complaint, unit_day); duplicates included.
    pub accepted: [u64; 3],
    /// Events already counted (same `event_id`): redeliveries and office resends.
    pub duplicates: u64,
    /// Messages sent to the dead-letter topic with their reason.
    pub dead_lettered: u64,
    /// Batches committed.
    pub batches: u64,
    /// Data files written, raw and summary.
    pub files: u64,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
}

impl RunReport {
    /// Valid events, all kinds (duplicates included).
    pub fn accepted_total(&self) -> u64 {
        self.accepted.iter().sum()
    }
}

/// Which tables hold offsets of a topic partition: its kind's raw table and every summary table.
fn tables_of(kind: RecordKind) -> impl Iterator<Item = &'static TableDef> {
    std::iter::once(RAW[kind as usize]).chain(SUMMARIES)
}

/// The offsets every table of `tps`' record kinds holds for each of them, read from the lake.
async fn lake_offsets(store: &Store, tps: &[(String, i32)]) -> anyhow::Result<LakeOffsets> {
    let mut tables: HashMap<&'static str, LakeTable> = HashMap::new();
    for def in RAW.into_iter().chain(SUMMARIES) {
        if let Some(t) = LakeTable::open(store, def, None).await? {
            tables.insert(def.name, t);
        }
    }
    let mut offsets = LakeOffsets::new();
    for (topic, p) in tps {
        let Some(kind) = raw::kind_of_topic(topic) else {
            continue;
        };
        let app = app_id(topic, *p);
        for def in tables_of(kind) {
            let v = match tables.get_mut(def.name) {
                Some(t) => t.txn_version(&app).await?,
                None => None,
            };
            offsets.insert((def.name, app.clone()), v);
        }
    }
    Ok(offsets)
}

/// Whether every table of `topic`'s kind holds partition `p` up to `high` (exclusive).
fn in_lake(offsets: &LakeOffsets, topic: &str, p: i32, high: i64) -> bool {
    raw::kind_of_topic(topic).is_none() || landed(offsets, topic, p).is_some_and(|o| o + 1 >= high)
}

/// The last offset of `topic`'s partition `p` that every table of its kind holds (`None` while
/// one of them holds none of the partition, or for a topic that is not an event topic).
fn landed(offsets: &LakeOffsets, topic: &str, p: i32) -> Option<i64> {
    let kind = raw::kind_of_topic(topic)?;
    let app = app_id(topic, p);
    tables_of(kind)
        .map(|def| offsets.get(&(def.name, app.clone())).copied().flatten())
        .min()
        .flatten()
}

/// Whether `m` is its partition's last message before its target (`highs`: topic → partition →
/// high watermark recorded at start-up), remembered in `read`. Looked up by the borrowed topic
/// name: this runs for every message.
fn reaches_target(
    highs: &HashMap<String, HashMap<i32, i64>>,
    read: &mut HashSet<(String, i32)>,
    m: &impl Message,
) -> bool {
    let high = highs.get(m.topic()).and_then(|h| h.get(&m.partition()));
    if high.is_some_and(|high| m.offset() + 1 >= *high) {
        read.insert((m.topic().to_owned(), m.partition()));
        true
    } else {
        false
    }
}

/// Rebalance bookkeeping shared with librdkafka's callbacks.
pub(crate) struct GroupContext {
    assigned: Mutex<HashSet<(String, i32)>>,
    generation: AtomicU64,
    metrics: Arc<Metrics>,
    /// Offsets read from the lake at assignment and advanced by this instance's commits.
    offsets: Mutex<LakeOffsets>,
    /// An assignment whose offsets could not be read: the loop stops with this error.
    failed: Mutex<Option<String>>,
    /// An assignment not made because the store failed while preparing it, and that failure:
    /// the loop waits for the store and makes it.
    unassigned: Mutex<Option<(TopicPartitionList, anyhow::Error)>>,
    /// State of the partitions assigned, restored at assignment.
    states: Mutex<HashMap<i32, PartitionState>>,
    /// Partitions whose state changed since their last snapshot.
    changed: Mutex<HashSet<i32>>,
    state_cfg: StateConfig,
    lake_id: String,
    codes: Arc<Codes>,
    topics: [String; 3],
    store: Store,
    /// Consumer group, recorded with an accepted gap.
    group: String,
    /// Who accepts offsets behind Kafka's log start (`None`: nobody; such a gap stops the run).
    accept_gaps_by: Option<String>,
    rt: Handle,
}

impl ClientContext for GroupContext {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in stats.topics {
            for (p, part) in t.partitions {
                if p >= 0 && part.consumer_lag >= 0 {
                    self.metrics.set_lag(&topic, p, part.consumer_lag);
                }
            }
        }
    }
}

impl GroupContext {
    /// Restores the state of these topic partitions' partitions, reads the lake's offsets into
    /// `offsets`, and returns where each must resume: after the lowest offset that the state and
    /// every table of the partition hold (the start when one holds none).
    ///
    /// A partition whose resume point Kafka no longer has (behind its log start) stops the
    /// aggregator unless the operator accepted such gaps ([`gaps`]).
    fn prepare(
        &self,
        consumer: &BaseConsumer<GroupContext>,
        tps: &[(String, i32)],
    ) -> anyhow::Result<Vec<Offset>> {
        self.rt.block_on(async {
            let partitions: Vec<i32> = tps
                .iter()
                .map(|(_, p)| *p)
                .collect::<BTreeSet<i32>>()
                .into_iter()
                .filter(|p| !self.states.lock().expect("states lock").contains_key(p))
                .collect();
            // Several partitions at once: a restore is mostly downloading a snapshot.
            let restored: Vec<_> =
                futures::stream::iter(partitions.into_iter().map(|p| async move {
                    let r = restore::restore(
                        &self.store,
                        &self.state_cfg,
                        &self.lake_id,
                        p,
                        &self.topics,
                        &self.codes,
                    )
                    .await;
                    (p, r)
                }))
                .buffer_unordered(4)
                .collect()
                .await;
            for (p, r) in restored {
                let (state, source) = r?;
                tracing::debug!(partition = p, ?source, "partition state ready");
                if source == restore::Source::RawTables {
                    self.changed.lock().expect("lock").insert(p);
                }
                self.states.lock().expect("states lock").insert(p, state);
            }
            let offsets = lake_offsets(&self.store, tps).await?;
            let mut starts = Vec::with_capacity(tps.len());
            let mut found = Vec::new();
            for (topic, p) in tps {
                let kind = raw::kind_of_topic(topic)
                    .with_context(|| format!("topic {topic} carries no known record kind"))?;
                let app = app_id(topic, *p);
                let held = self.states.lock().expect("states lock")[p]
                    .offsets()?
                    .get(topic)
                    .copied();
                let mut lowest: Option<i64> = held;
                for def in tables_of(kind) {
                    let v = offsets.get(&(def.name, app.clone())).copied().flatten();
                    lowest = lowest.zip(v).map(|(a, b)| a.min(b));
                }
                starts.push(match lowest {
                    Some(o) => Offset::Offset(o + 1),
                    None => Offset::Beginning,
                });
                let (log_start, _) = retry_kafka(&self.metrics, "reading the log start", || {
                    consumer.fetch_watermarks(topic, *p, Duration::from_secs(30))
                })?;
                if let Some(gap) = gaps::Gap::between(topic, *p, lowest, log_start) {
                    found.push((starts.len() - 1, gap));
                }
            }
            if !found.is_empty() {
                let list: Vec<gaps::Gap> = found.iter().map(|(_, g)| g.clone()).collect();
                let new = gaps::unaccepted(&self.store, list).await?;
                if !new.is_empty() {
                    let Some(by) = &self.accept_gaps_by else {
                        anyhow::bail!("{}", gaps::Gap::refusal(&new));
                    };
                    gaps::record(&self.store, &new, &self.group, by).await?;
                }
                for (i, g) in &found {
                    tracing::warn!(
                        topic = %g.topic,
                        partition = g.partition,
                        events_lost = g.events_lost(),
                        log_start = g.log_start,
                        "resuming at Kafka's log start: an accepted gap (audit/offset_gaps)"
                    );
                    starts[*i] = Offset::Offset(g.log_start);
                }
            }
            self.offsets.lock().expect("offsets lock").extend(offsets);
            anyhow::Ok(starts)
        })
    }

    /// Assigns `tps` (the elements of `tpl`) at `starts`, as [`Self::prepare`] gave them.
    fn assign_at(
        &self,
        consumer: &BaseConsumer<GroupContext>,
        tpl: &mut TopicPartitionList,
        tps: &[(String, i32)],
        starts: Vec<Offset>,
    ) -> anyhow::Result<()> {
        for ((t, p), o) in tps.iter().zip(starts) {
            tpl.set_partition_offset(t, *p, o)
                .with_context(|| format!("setting the start of {t}/{p}"))?;
        }
        consumer.assign(tpl).context("assigning")?;
        let mut a = self.assigned.lock().expect("assignment lock");
        a.extend(tps.iter().cloned());
        self.metrics.set_assigned(a.len());
        let parts: BTreeSet<i32> = tps.iter().map(|(_, p)| *p).collect();
        tracing::info!(partitions = ?parts, "partitions assigned; resuming at the offsets the lake holds");
        Ok(())
    }

    /// Commits every partition's open state transaction to its local file (all at once: each
    /// ends in an fsync).
    fn commit_states(&self) -> anyhow::Result<()> {
        use rayon::prelude::*;
        let states = self.states.lock().expect("states lock");
        let states: Vec<&PartitionState> = states.values().collect();
        states.par_iter().try_for_each(|s| s.commit())?;
        Ok(())
    }

    /// Copies the changed partitions' state to the store (between batches only).
    fn snapshot(&self, only: Option<&HashSet<i32>>) -> anyhow::Result<()> {
        let mut changed = self.changed.lock().expect("lock");
        let states = self.states.lock().expect("states lock");
        let todo: Vec<i32> = changed
            .iter()
            .copied()
            .filter(|p| only.is_none_or(|o| o.contains(p)) && states.contains_key(p))
            .collect();
        // The open transactions are committed first, on all cores (each commit flushes and
        // fsyncs its file), rather than one at a time inside the uploads below.
        {
            use rayon::prelude::*;
            todo.par_iter().try_for_each(|p| states[p].commit())?;
        }
        // Several at once: each is mostly waiting on the store.
        let states = &*states;
        let results = self.rt.block_on(async {
            let jobs = todo.iter().map(|p| async move {
                let started = Instant::now();
                let r = restore::snapshot(&self.store, &self.lake_id, *p, &states[p]).await;
                (*p, r, started.elapsed())
            });
            futures::stream::iter(jobs)
                .buffer_unordered(8)
                .collect::<Vec<_>>()
                .await
        });
        for (p, r, took) in results {
            let bytes = r?;
            changed.remove(&p);
            tracing::info!(
                partition = p,
                bytes,
                took_ms = took.as_millis() as u64,
                "state snapshot written"
            );
        }
        Ok(())
    }
}

impl ConsumerContext for GroupContext {
    // The default assigns at Kafka's committed offsets; we assign at the lake's.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.generation.fetch_add(1, Ordering::SeqCst);
                let tps: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                match self.prepare(consumer, &tps) {
                    Ok(starts) => {
                        if let Err(e) = self.assign_at(consumer, tpl, &tps, starts) {
                            *self.failed.lock().expect("lock") = Some(format!("{e:#}"));
                        }
                    }
                    // The store is down: the run loop waits for it and assigns then (nothing
                    // of these partitions is read meanwhile).
                    Err(e) if store_unavailable(&e) => {
                        *self.unassigned.lock().expect("lock") = Some((tpl.clone(), e));
                    }
                    Err(e) => {
                        // Not assigned: no message of these partitions is read before the loop
                        // stops with this error.
                        *self.failed.lock().expect("lock") =
                            Some(format!("preparing the partitions assigned: {e:#}"));
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.generation.fetch_add(1, Ordering::SeqCst);
                // An assignment still waiting for the store is taken back too.
                self.unassigned.lock().expect("lock").take();
                let revoked: HashSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                // The next owner restores from the snapshot: make it current.
                if let Err(e) = self.snapshot(Some(&revoked)) {
                    tracing::warn!("snapshotting revoked partitions: {e:#}");
                }
                self.states
                    .lock()
                    .expect("states lock")
                    .retain(|p, _| !revoked.contains(p));
                {
                    let mut a = self.assigned.lock().expect("assignment lock");
                    let mut o = self.offsets.lock().expect("offsets lock");
                    for e in tpl.elements() {
                        a.remove(&(e.topic().to_owned(), e.partition()));
                        let app = app_id(e.topic(), e.partition());
                        o.retain(|(_, k), _| *k != app);
                    }
                    self.metrics.set_assigned(a.len());
                }
                if let Err(e) = consumer.unassign() {
                    tracing::warn!("unassigning: {e}");
                }
                tracing::info!(partitions = tpl.count(), "partitions revoked");
            }
            other => tracing::error!("rebalance error: {other:?}"),
        }
    }
}

/// The lake's tables, open for writing.
struct Tables {
    /// By record kind.
    raw: Vec<LakeTable>,
    /// In `Table::ALL` order.
    summaries: Vec<LakeTable>,
}

/// The aggregator's consumer loop and state.
pub(crate) struct Pipeline {
    config: PipelineConfig,
    reference: Reference,
    codes: Arc<Codes>,
    /// Shared with the run loop, whose batches borrow their messages from it: a message is
    /// read where librdkafka decompressed it, never copied (copying each into an owned message
    /// cost 9 % of a catch-up's wall time).
    consumer: Arc<BaseConsumer<GroupContext>>,
    dlq: FutureProducer,
    topics: [String; 3],
    tables: Tables,
    /// What batches left for the lake's next commits.
    pending: Pending,
    last_snapshot: Instant,
    /// When the partitions' state transactions were last committed.
    last_state_commit: Instant,
    /// When Kafka's offsets were last committed ([`Pipeline::commit_kafka_offsets`]).
    last_kafka_commit: Instant,
    targets: HashMap<(String, i32), (i64, i64)>,
    /// The high watermarks of `targets` by topic name, then partition.
    highs: HashMap<String, HashMap<i32, i64>>,
    /// With `--until-caught-up`: the partitions whose last message before their target (the
    /// high watermark at start-up) has been read since the last assignment or reseek. Once every
    /// assigned partition is in it (or in the lake already), the batch in hand is the last one:
    /// it closes at once instead of lingering ([`Pipeline::collect`]).
    targets_read: HashSet<(String, i32)>,
    /// The last batch closed because every target was read: the next collect returns at once,
    /// empty, so the run commits and stops without an idle poll first (once: after that,
    /// collect polls as usual, which serves rebalances while other members finish).
    closed_at_targets: bool,
    /// When the lake was last asked about partitions this instance does not hold.
    others_checked: Option<Instant>,
    metrics: Arc<Metrics>,
    rt: Handle,
}

/// Whether `e` is the object store failing to answer (see [`owsu_lake::is_unavailable`]).
fn store_unavailable(e: &anyhow::Error) -> bool {
    e.chain().any(owsu_lake::is_unavailable)
}

/// How often an idle instance commits Kafka's offsets again ([`Pipeline::commit_kafka_offsets`]).
const KAFKA_COMMIT_IDLE: Duration = Duration::from_secs(5);

/// How long a metadata or offsets request is retried before the run fails: longer than a
/// leader election after a broker is lost (the broker session timeout, 9 s by default).
const KAFKA_RETRY_FOR: Duration = Duration::from_secs(120);

/// A request to Kafka that fails while a broker is down or a leader moves (`NotLeader...`,
/// a destroyed broker handle, a timeout): retried with backoff (0.5 s doubling to 8 s) for
/// up to [`KAFKA_RETRY_FOR`], each failure logged; the last error after that.
fn retry_kafka<T>(
    metrics: &Metrics,
    what: &str,
    mut request: impl FnMut() -> rdkafka::error::KafkaResult<T>,
) -> anyhow::Result<T> {
    let started = Instant::now();
    let mut wait = Duration::from_millis(500);
    loop {
        match request() {
            Ok(v) => return Ok(v),
            Err(e) if started.elapsed() + wait < KAFKA_RETRY_FOR => {
                tracing::warn!(
                    retry_in_ms = wait.as_millis() as u64,
                    "{what}: {e}; retrying"
                );
                metrics.kafka_retry();
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(8));
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "{what} (retried for {} s)",
                    started.elapsed().as_secs()
                )))
            }
        }
    }
}

/// Where the lake records the partition count of each event topic it was built from.
const PARTITION_COUNTS: &str = "state/partitions.json";

/// A unit's state lives on the partition its key hashes to, out of the topic's partition
/// count: the three event topics must have one count, and it must stay the one the lake was
/// built with (more partitions send some units elsewhere, to state that does not hold their
/// history). Records the counts on first use; stops with what to do when they changed.
fn check_partition_counts(
    consumer: &BaseConsumer<GroupContext>,
    topics: &[String; 3],
    rt: &Handle,
) -> anyhow::Result<()> {
    let mut counts = BTreeMap::new();
    for t in topics {
        let md = retry_kafka(
            &consumer.context().metrics,
            &format!("metadata of {t}"),
            || consumer.fetch_metadata(Some(t), Duration::from_secs(30)),
        )?;
        if let Some(topic) = md
            .topics()
            .iter()
            .find(|m| m.name() == t && m.error().is_none())
        {
            counts.insert(t.clone(), topic.partitions().len() as i64);
        }
    }
    let distinct: BTreeSet<i64> = counts.values().copied().collect();
    anyhow::ensure!(
        distinct.len() <= 1,
        "the event topics have different partition counts ({counts:?}): a unit's services, \
         complaints and day closures must share a partition number; recreate them with one count \
         (infra/kafka/kafka.sh, OWSU_KAFKA_PARTITIONS)"
    );
    let store = &consumer.context().store;
    let mut recorded: BTreeMap<String, i64> = match rt.block_on(store.get(PARTITION_COUNTS)) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("{PARTITION_COUNTS} in the store is unreadable"))?,
        Err(_) => BTreeMap::new(),
    };
    for (t, n) in &counts {
        if let Some(was) = recorded.get(t) {
            anyhow::ensure!(
                was == n,
                "topic {t} has {n} partitions, but this lake was built from {was}: Kafka now \
                 sends some units to partitions whose state does not hold their history. Give the \
                 topics {was} partitions again (recreate them and re-publish), or build a new lake \
                 (another --store) from topics re-published with {n}"
            );
        }
    }
    if counts.iter().any(|(t, _)| !recorded.contains_key(t)) {
        recorded.extend(counts);
        rt.block_on(store.put(PARTITION_COUNTS, serde_json::to_vec_pretty(&recorded)?))?;
    }
    Ok(())
}

impl Pipeline {
    /// Connects to Kafka (consumer in `config.group`, dead-letter producer), opens or creates
    /// the lake's tables, and checks that the three event topics have the same number of
    /// partitions (a unit's events must meet on one partition number). `rt` runs the lake's
    /// I/O; the loop itself runs on the caller's thread in [`run`](Self::run).
    pub(crate) fn new(
        config: PipelineConfig,
        store: Store,
        reference: Reference,
        metrics: Arc<Metrics>,
        rt: Handle,
    ) -> anyhow::Result<Self> {
        let tables = rt.block_on(async {
            let mut raw = Vec::new();
            for def in RAW {
                raw.push(LakeTable::open_or_create(&store, def).await?);
            }
            let mut summaries = Vec::new();
            for t in Table::ALL {
                summaries.push(LakeTable::open_or_create(&store, t.def()).await?);
            }
            anyhow::Ok(Tables { raw, summaries })
        })?;
        let lake_id = rt.block_on(restore::lake_id(&store))?;
        let codes = Arc::new(Codes::new(&reference));
        let topics = RecordKind::ALL.map(|k| config.kafka.topic(k.topic()));
        let mut c = config.kafka.client_config()?;
        c.set("group.id", &config.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Range assignment keeps partition N of the three topics on one instance: a unit's
            // services, complaints and day closures are folded and summarised by one writer.
            .set("partition.assignment.strategy", "range")
            .set(
                "session.timeout.ms",
                config.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (config.session_timeout.as_millis() / 4)
                    .max(500)
                    .to_string(),
            )
            .set("max.poll.interval.ms", "600000")
            // The prefetch queue (one for the consumer; librdkafka's default is 64 MiB): a
            // batch and a half of payload, so the next batch is fetched while this one is
            // processed without holding much of a topic in memory.
            .set("queued.max.messages.kbytes", "8192")
            // When that queue is full, librdkafka waits this long before fetching again
            // (default 1 s). With the default, a catch-up found the queue empty every ~2 s and
            // sat idle for 300 ms until the next fetch came back: 10-15 % of its wall time.
            .set("fetch.queue.backoff.ms", "10")
            // At most 256 KiB of a partition per fetch (default 1 MiB). A fetch answers for
            // every partition at once (36 here) and the queue limit above is checked only
            // before it is sent, so a catch-up's fetches overshot it: librdkafka held ~100 MiB
            // of decompressed messages at its peak. With 256 KiB the aggregator's peak RSS over
            // a national year fell by ~75 MiB, as fast.
            .set("max.partition.fetch.bytes", "262144")
            .set("statistics.interval.ms", "5000");
        config.kafka.apply_overrides(&mut c);
        let ctx = GroupContext {
            assigned: Mutex::default(),
            generation: AtomicU64::new(0),
            metrics: metrics.clone(),
            offsets: Mutex::default(),
            failed: Mutex::default(),
            unassigned: Mutex::default(),
            states: Mutex::default(),
            changed: Mutex::default(),
            state_cfg: config.state.clone(),
            lake_id,
            codes: codes.clone(),
            topics: topics.clone(),
            store,
            group: config.group.clone(),
            accept_gaps_by: config.accept_gaps_by.clone(),
            rt: rt.clone(),
        };
        let consumer: BaseConsumer<GroupContext> = c
            .create_with_context(ctx)
            .context("creating the Kafka consumer")?;
        check_partition_counts(&consumer, &topics, &rt)?;
        consumer
            .subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())
            .context("subscribing")?;
        let mut p = config.kafka.client_config()?;
        p.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5");
        config.kafka.apply_overrides(&mut p);
        let dlq: FutureProducer = p.create().context("creating the dead-letter producer")?;
        Ok(Pipeline {
            config,
            reference,
            codes,
            consumer: Arc::new(consumer),
            dlq,
            topics,
            tables,
            pending: Pending::default(),
            last_snapshot: Instant::now(),
            last_state_commit: Instant::now(),
            last_kafka_commit: Instant::now(),
            targets: HashMap::new(),
            highs: HashMap::new(),
            targets_read: HashSet::new(),
            closed_at_targets: false,
            others_checked: None,
            metrics,
            rt,
        })
    }

    /// High watermarks of every partition now: "caught up" means processed up to these.
    fn record_targets(&mut self) -> anyhow::Result<()> {
        for t in &self.topics {
            let md = retry_kafka(&self.metrics, &format!("metadata of {t}"), || {
                self.consumer
                    .fetch_metadata(Some(t), Duration::from_secs(30))
            })?;
            let topic = md
                .topics()
                .iter()
                .find(|m| m.name() == t)
                .with_context(|| format!("topic {t} not found"))?;
            if let Some(e) = topic.error() {
                anyhow::bail!("topic {t}: {e:?} (create it with infra/kafka/kafka.sh start, or check --topic-prefix)");
            }
            for p in topic.partitions() {
                let what = format!("offsets of {t}/{}", p.id());
                let (low, high) = retry_kafka(&self.metrics, &what, || {
                    self.consumer
                        .fetch_watermarks(t, p.id(), Duration::from_secs(30))
                })?;
                self.targets.insert((t.clone(), p.id()), (low, high));
                self.highs
                    .entry(t.clone())
                    .or_default()
                    .insert(p.id(), high);
            }
        }
        Ok(())
    }

    fn assigned(&self) -> Vec<(String, i32)> {
        let mut v: Vec<_> = self
            .consumer
            .context()
            .assigned
            .lock()
            .expect("lock")
            .iter()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Counts the event topics' partitions whose in-sync replicas are fewer than their replicas
    /// (a broker down or behind) into the metrics; a failed metadata request leaves the last
    /// count, the next check tries again.
    fn check_replication(&self) {
        let mut under = 0;
        for t in &self.topics {
            match self
                .consumer
                .fetch_metadata(Some(t), Duration::from_secs(5))
            {
                Ok(md) => {
                    for topic in md.topics().iter().filter(|m| m.name() == t) {
                        under += topic
                            .partitions()
                            .iter()
                            .filter(|p| p.isr().len() < p.replicas().len())
                            .count();
                    }
                }
                Err(e) => {
                    tracing::debug!("metadata of {t} for the replication check: {e}");
                    return;
                }
            }
        }
        if under > 0 {
            tracing::warn!(
                partitions = under,
                "under-replicated event topic partitions"
            );
        }
        self.metrics.set_under_replicated(under);
    }

    /// Caught up when every assigned partition's tables all hold its high watermark at start.
    fn caught_up(&mut self) -> bool {
        let assigned = self.assigned();
        if assigned.is_empty() {
            return false;
        }
        if !self.assigned_done(&assigned) {
            return false;
        }
        // Partitions held by other members count too, and so do those of a member that was
        // killed and whose session has not expired yet (the group still assigns it its share):
        // "caught up" means everything present at start-up is in the lake, not only this
        // instance's part. Their offsets are read from the tables, at most every 2 s.
        let others: Vec<(String, i32, i64)> = self
            .targets
            .iter()
            .filter(|((t, p), (low, high))| high > low && !assigned.contains(&(t.clone(), *p)))
            .map(|((t, p), (_, high))| (t.clone(), *p, *high))
            .collect();
        if others.is_empty() {
            return true;
        }
        if self
            .others_checked
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return false;
        }
        self.others_checked = Some(Instant::now());
        let tps: Vec<(String, i32)> = others.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
        let read = self
            .rt
            .block_on(lake_offsets(&self.consumer.context().store, &tps));
        match read {
            Ok(offsets) => others
                .iter()
                .all(|(t, p, high)| in_lake(&offsets, t, *p, *high)),
            Err(e) => {
                tracing::debug!("reading other partitions' progress from the lake: {e:#}");
                false
            }
        }
    }

    /// Whether every partition this instance holds has its start-up content in the lake.
    fn assigned_done(&self, assigned: &[(String, i32)]) -> bool {
        let offsets = self.consumer.context().offsets.lock().expect("lock");
        assigned.iter().all(|(t, p)| {
            let (low, high) = self
                .targets
                .get(&(t.clone(), *p))
                .copied()
                .unwrap_or((0, 0));
            high <= low || in_lake(&offsets, t, *p, high)
        })
    }

    /// After a refused commit: forget the state, read the lake's offsets again and resume there.
    fn reseek(&mut self) -> anyhow::Result<()> {
        self.pending.clear();
        self.targets_read.clear();
        self.consumer.context().states.lock().expect("lock").clear();
        let tps = self.assigned();
        let starts = self.consumer.context().prepare(&self.consumer, &tps)?;
        for ((t, p), o) in tps.iter().zip(starts) {
            self.consumer
                .seek(t, *p, o, Duration::from_secs(10))
                .with_context(|| format!("seeking {t}/{p} to the lake's offset"))?;
        }
        Ok(())
    }

    /// [`flush`](Self::flush) outside a batch (`force`: everything pending); a commit refused
    /// because another instance owns a partition now drops what was pending and resumes at the
    /// lake's offsets, as a refused batch does.
    fn flush_or_drop(&mut self, force: bool, shutdown: &AtomicBool) -> anyhow::Result<u64> {
        match self.flush(force, true) {
            Ok(files) => Ok(files),
            Err(e) if e.downcast_ref::<Fenced>().is_some() => {
                tracing::warn!(
                    "{e}: another instance owns a partition; reading the lake's offsets again"
                );
                self.reseek()?;
                Ok(0)
            }
            Err(e) if store_unavailable(&e) => {
                self.wait_for_store(e, shutdown)?;
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    /// The object store failed mid-batch: consuming stops, what was pending is dropped (none
    /// of it is in the lake: the tables' offsets still say where it starts), and the store is
    /// tried again with backoff (1 s doubling to 10 s), each failure logged and counted, until
    /// it answers; then every partition resumes at the lake's offsets, as after a refused
    /// commit. Returns early, without error, when shutdown is requested.
    fn wait_for_store(
        &mut self,
        first: anyhow::Error,
        shutdown: &AtomicBool,
    ) -> anyhow::Result<()> {
        self.pending.clear();
        self.retry_while_store_down(first, shutdown, |p| p.reseek())
    }

    /// An assignment the store's failure held back ([`GroupContext::unassigned`]): prepared
    /// and made once the store answers, consuming stopped until then.
    fn assign_when_store_returns(
        &mut self,
        mut tpl: TopicPartitionList,
        first: anyhow::Error,
        shutdown: &AtomicBool,
    ) -> anyhow::Result<()> {
        let tps: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        self.retry_while_store_down(first, shutdown, |p| {
            let ctx = p.consumer.context();
            let starts = ctx.prepare(&p.consumer, &tps)?;
            ctx.assign_at(&p.consumer, &mut tpl, &tps, starts)
        })
    }

    /// Says the store is down (log, `owsu_store_unavailable`), then tries `attempt` with backoff
    /// (1 s doubling to 10 s) until it succeeds, fails otherwise than by the store, or shutdown
    /// is requested.
    fn retry_while_store_down(
        &mut self,
        first: anyhow::Error,
        shutdown: &AtomicBool,
        mut attempt: impl FnMut(&mut Self) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        self.metrics.set_store_unavailable(true);
        let started = Instant::now();
        let mut wait = Duration::from_secs(1);
        let mut error = first;
        loop {
            tracing::warn!(
                down_for_s = started.elapsed().as_secs(),
                retry_in_s = wait.as_secs(),
                "object store unavailable, consuming stopped: {error:#}"
            );
            let until = Instant::now() + wait;
            while Instant::now() < until {
                if shutdown.load(Ordering::SeqCst) {
                    return Ok(());
                }
                // Still alive (health), only waiting; the group may drop this member if the
                // wait passes max.poll.interval.ms, and the next poll rejoins it.
                self.metrics.beat();
                std::thread::sleep(Duration::from_millis(200));
            }
            self.metrics.store_retry();
            match attempt(self) {
                Ok(()) => break,
                Err(e) if store_unavailable(&e) => error = e,
                Err(e) => return Err(e),
            }
            wait = (wait * 2).min(Duration::from_secs(10));
        }
        self.metrics.set_store_unavailable(false);
        tracing::warn!(
            down_for_s = started.elapsed().as_secs(),
            "object store answers again: resuming at the offsets the lake holds"
        );
        Ok(())
    }

    /// Every `snapshot_interval`, copies the changed partitions' state to the store (which also
    /// commits it); in between, every `commit_interval`, commits it to its local file.
    fn snapshot_or_commit_state(&mut self) -> anyhow::Result<()> {
        if self.last_snapshot.elapsed() >= self.config.state.snapshot_interval {
            // A snapshot only shortens a new owner's start: one the store cannot take now is
            // taken at the next interval.
            match self.consumer.context().snapshot(None) {
                Err(e) if store_unavailable(&e) => {
                    tracing::warn!("state snapshot not written, the store fails: {e:#}")
                }
                r => r?,
            }
            self.last_snapshot = Instant::now();
            self.last_state_commit = Instant::now();
        } else if self.last_state_commit.elapsed() >= self.config.state.commit_interval {
            self.consumer.context().commit_states()?;
            self.last_state_commit = Instant::now();
        }
        Ok(())
    }

    /// Runs until shutdown is requested (or, with `until_caught_up`, until caught up).
    pub(crate) fn run(mut self, shutdown: Arc<AtomicBool>) -> anyhow::Result<RunReport> {
        let started = Instant::now();
        let mut report = RunReport::default();
        // A bar on a terminal when catching up to a known end (hidden otherwise: logs say it).
        let mut bar = indicatif::ProgressBar::hidden();
        if self.config.until_caught_up {
            self.record_targets()?;
            let total: i64 = self.targets.values().map(|(l, h)| h - l).sum();
            tracing::info!(
                messages = total,
                "will stop once caught up with what the topics hold now"
            );
            bar = indicatif::ProgressBar::new(total.max(0) as u64).with_style(
                indicatif::ProgressStyle::with_template(
                    "aggregating {bar:40} {human_pos}/{human_len} messages, {eta} left",
                )
                .expect("a valid template"),
            );
        }
        let mut last_progress = Instant::now();
        let mut replication_checked: Option<Instant> = None;
        let consumer = Arc::clone(&self.consumer);
        loop {
            self.metrics.beat();
            if replication_checked.is_none_or(|t| t.elapsed() >= self.config.replication_check) {
                self.check_replication();
                replication_checked = Some(Instant::now());
            }
            if let Some(e) = self.consumer.context().failed.lock().expect("lock").take() {
                anyhow::bail!("{e}");
            }
            let held = self
                .consumer
                .context()
                .unassigned
                .lock()
                .expect("lock")
                .take();
            if let Some((tpl, e)) = held {
                self.assign_when_store_returns(tpl, e, &shutdown)?;
            }
            if shutdown.load(Ordering::SeqCst) {
                self.flush_or_drop(true, &shutdown)?;
                self.commit_kafka_offsets(CommitMode::Sync)?;
                tracing::info!("shutdown requested: last batch committed, leaving the group");
                break;
            }
            let generation = self.consumer.context().generation.load(Ordering::SeqCst);
            let collecting = Instant::now();
            let batch = self.collect(&consumer, &shutdown, generation)?;
            tracing::debug!(
                messages = batch.len(),
                took_ms = collecting.elapsed().as_millis() as u64,
                "batch collected"
            );
            if self.consumer.context().generation.load(Ordering::SeqCst) != generation {
                // The partitions were revoked (and their state snapshotted) and assigned anew,
                // each to resume after the lowest offset its state and tables hold: what was
                // pending is read again.
                if !batch.is_empty() || !self.pending.is_empty() {
                    tracing::info!(messages = batch.len(), "rebalance: batch and pending rows dropped uncommitted, they will be read again");
                }
                self.pending.clear();
                self.targets_read.clear();
                self.closed_at_targets = false;
                continue;
            }
            if batch.is_empty() {
                // Kafka has nothing new: a batch run commits everything now (it stops once the
                // lake holds all), a live run the raw rows that are old enough.
                let files = self.flush_or_drop(self.config.until_caught_up, &shutdown)?;
                report.files += files;
                // An asynchronous commit lost in a rebalance is made again while idle (a flush
                // commits them too).
                if self.last_kafka_commit.elapsed() >= KAFKA_COMMIT_IDLE {
                    self.commit_kafka_offsets(CommitMode::Async)?;
                }
                // An idle instance snapshots what its last batches changed too: a new owner
                // after a crash then replays nothing.
                self.snapshot_or_commit_state()?;
                if self.config.until_caught_up && self.caught_up() {
                    tracing::info!("caught up: everything present at start-up is in the lake");
                    self.commit_kafka_offsets(CommitMode::Sync)?;
                    break;
                }
                continue;
            }
            let b = match self.process(batch) {
                Ok(b) => b,
                Err(e) if e.downcast_ref::<Fenced>().is_some() => {
                    tracing::warn!("{e}: another instance owns a partition of this batch; reading the lake's offsets again");
                    self.reseek()?;
                    continue;
                }
                Err(e) if store_unavailable(&e) => {
                    self.wait_for_store(e, &shutdown)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            report.messages += b.messages as u64;
            bar.inc(b.messages as u64);
            for i in 0..3 {
                report.accepted[i] += b.accepted[i];
            }
            report.duplicates += b.duplicates;
            report.dead_lettered += b.dead_lettered;
            report.files += b.files;
            report.batches += 1;
            b.emit(&self.metrics);
            self.snapshot_or_commit_state()?;
            if last_progress.elapsed() > Duration::from_secs(5) {
                last_progress = Instant::now();
                tracing::info!(
                    messages = report.messages,
                    rate = (report.messages as f64 / started.elapsed().as_secs_f64()) as u64,
                    dead_lettered = report.dead_lettered,
                    "progress"
                );
            }
        }
        bar.finish_and_clear();
        drop(consumer);
        let Pipeline {
            consumer,
            dlq,
            metrics,
            ..
        } = self;
        // Closing the dead-letter producer waits about 100 ms for librdkafka's threads to end,
        // and so does closing the consumer (it leaves the group): the producer closes while the
        // last snapshot is taken, the consumer after it.
        std::thread::scope(|s| {
            s.spawn(move || drop(dlq));
            // The next owner (or this one, restarted elsewhere) resumes from here.
            match consumer.context().snapshot(None) {
                Err(e) if store_unavailable(&e) => {
                    tracing::warn!("last state snapshot not written, the store fails: {e:#}")
                }
                r => r?,
            }
            let f = metrics.freshness();
            tracing::info!(
                events = f.events,
                p50_ms = f.p50_ms,
                p99_ms = f.p99_ms,
                max_ms = f.max_ms,
                "freshness: from Kafka timestamp to summary commit"
            );
            report.elapsed = started.elapsed();
            drop(consumer);
            anyhow::Ok(())
        })?;
        Ok(report)
    }

    /// Polls a batch: until `max_batch` messages, the linger after the first, the targets of a
    /// catch-up, or a rebalance.
    ///
    /// A rebalance is served inside a poll (which then returns nothing) and moves
    /// `generation`: the batch ends there. The run loop drops what it holds, and the partitions
    /// assigned are read again from the lake's offsets, where the assignment put them. Polling
    /// on would add messages of the new assignment to a batch the run loop then drops, and the
    /// consumer, already past them, would never read them again.
    fn collect<'c>(
        &mut self,
        consumer: &'c BaseConsumer<GroupContext>,
        shutdown: &AtomicBool,
        generation: u64,
    ) -> anyhow::Result<Vec<BorrowedMessage<'c>>> {
        let mut batch = Vec::new();
        let mut first_at: Option<Instant> = None;
        if std::mem::take(&mut self.closed_at_targets) {
            // Everything there was to read was read: what is left is committing it.
            return Ok(batch);
        }
        let rebalanced = || consumer.context().generation.load(Ordering::SeqCst) != generation;
        loop {
            if rebalanced() {
                break;
            }
            let wait = match first_at {
                None => Duration::from_millis(200),
                Some(t) => self.config.linger.saturating_sub(t.elapsed()),
            };
            if first_at.is_some() && wait.is_zero() {
                break;
            }
            match consumer.poll(wait.min(Duration::from_millis(200))) {
                Some(Ok(m)) => {
                    first_at.get_or_insert_with(Instant::now);
                    let last = self.config.until_caught_up
                        && reaches_target(&self.highs, &mut self.targets_read, &m);
                    batch.push(m);
                    if last && self.all_targets_read() {
                        self.closed_at_targets = true;
                        break;
                    }
                    if batch.len() >= self.config.max_batch {
                        break;
                    }
                }
                Some(Err(e)) => tracing::warn!("consumer error: {e}"),
                None => {
                    if first_at.is_none() {
                        break;
                    }
                }
            }
            if shutdown.load(Ordering::SeqCst) && first_at.is_none() {
                break;
            }
        }
        Ok(batch)
    }

    /// Whether every assigned partition has nothing left to read before its target: its last
    /// message was read (`targets_read`), or the lake holds it already, or it was empty.
    fn all_targets_read(&self) -> bool {
        let assigned = self.assigned();
        if assigned.is_empty() {
            return false;
        }
        let offsets = self.consumer.context().offsets.lock().expect("lock");
        assigned.iter().all(|tp| {
            let (low, high) = self.targets.get(tp).copied().unwrap_or((0, 0));
            high <= low || self.targets_read.contains(tp) || in_lake(&offsets, &tp.0, tp.1, high)
        })
    }

    /// Sends `letters` to the dead-letter topic (with the message itself when there is one) and
    /// waits for every acknowledgement.
    fn dead_letter(&self, letters: &[Letter<'_>]) -> anyhow::Result<()> {
        let mut deliveries = Vec::new();
        let dlq_topic = self.config.kafka.topic(owsu_schemas::topics::DEAD_LETTER);
        for l in letters {
            DeadLettered {
                topic: l.topic,
                partition: l.partition,
                offset: l.offset,
                reason: l.reason,
            }
            .emit();
            let mut headers = OwnedHeaders::new()
                .insert(Header {
                    key: "reason",
                    value: Some(l.reason.as_bytes()),
                })
                .insert(Header {
                    key: "source.topic",
                    value: Some(l.topic.as_bytes()),
                })
                .insert(Header {
                    key: "source.partition",
                    value: Some(l.partition.to_string().as_bytes()),
                })
                .insert(Header {
                    key: "source.offset",
                    value: Some(l.offset.to_string().as_bytes()),
                });
            if let Some(f) = l.field {
                headers = headers.insert(Header {
                    key: "field",
                    value: Some(f.as_bytes()),
                });
            }
            let mut rec: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&dlq_topic).headers(headers);
            if let Some(k) = l.message.and_then(|m| m.key()) {
                rec = rec.key(k);
            }
            if let Some(p) = l.message.and_then(|m| m.payload()) {
                rec = rec.payload(p);
            }
            deliveries.push(
                self.dlq
                    .send_result(rec)
                    .map_err(|(e, _)| anyhow::anyhow!("dead-letter queue full: {e}"))?,
            );
        }
        self.rt.block_on(async {
            for d in deliveries {
                match d.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => anyhow::bail!("dead-letter message not acknowledged: {e}"),
                    Err(_) => anyhow::bail!("dead-letter delivery cancelled"),
                }
            }
            anyhow::Ok(())
        })
    }

    fn offsets(&self) -> LakeOffsets {
        self.consumer
            .context()
            .offsets
            .lock()
            .expect("lock")
            .clone()
    }

    fn advance(&self, table: &'static str, offsets: &HashMap<String, i64>) {
        let mut o = self.consumer.context().offsets.lock().expect("lock");
        for (app, off) in offsets {
            o.insert((table, app.clone()), Some(*off));
        }
    }

    /// One batch that [`collect`](Self::collect) gathered: [`check_batch`](Self::check_batch)
    /// (decode, validate, dead-letter the bad), [`apply`](Self::apply) (partition state, raw
    /// rows), then whatever [`flush`](Self::flush) finds due (raw files, summary files, then
    /// [Kafka's committed offsets](Self::commit_kafka_offsets)). `drained`: the batch did not
    /// fill, so Kafka had nothing more waiting (summaries are committed at once).
    fn process(&mut self, batch: Vec<BorrowedMessage<'_>>) -> anyhow::Result<BatchCommitted> {
        let started = Instant::now();
        let drained = batch.len() < self.config.max_batch;
        let collected = self.check_batch(&batch)?;
        let t_decode = started.elapsed();
        let applied = self.apply(&batch, &collected)?;
        let t_state = started.elapsed();
        self.pending.add(
            &self.topics,
            &collected.last,
            applied.quarters,
            batch.iter().filter_map(|m| m.timestamp().to_millis()),
        );
        let files = self.flush(false, drained)?;
        tracing::debug!(
            messages = batch.len(),
            decode_ms = t_decode.as_millis() as u64,
            state_ms = (t_state - t_decode).as_millis() as u64,
            flush_ms = (started.elapsed() - t_state).as_millis() as u64,
            "batch processed"
        );
        let mut accepted = [0u64; 3];
        for (kind, _) in &collected.landed {
            accepted[*kind as usize] += 1;
        }
        Ok(BatchCommitted {
            messages: batch.len(),
            accepted,
            duplicates: applied.duplicates,
            dead_lettered: collected.dead_lettered + applied.refused,
            files,
            latency: started.elapsed(),
        })
    }

    /// Commits what is due of what batches left pending: each raw table's rows once they are
    /// large or old enough (all of them with `force`), and the summaries when `drained` or
    /// [`FlushConfig::summary_interval`] has passed (always with `force`). Raw and summary
    /// commits run side by side. Returns the files written.
    fn flush(&mut self, force: bool, drained: bool) -> anyhow::Result<u64> {
        let cfg = self.config.flush;
        let raw_due: Vec<bool> = self
            .pending
            .raw
            .iter()
            .map(|r| r.due(&cfg, force))
            .collect();
        let summary_due = self.pending.summary.due(&cfg, force || drained);
        if !raw_due.contains(&true) && !summary_due {
            return Ok(0);
        }
        let known = self.offsets();
        let ctx = self.consumer.context();
        let rt = &self.rt;
        let codes = &*self.codes;
        // The summaries' rows are read from the state before anything is taken: a failure
        // leaves the pending summaries as they were.
        let quarters = if summary_due {
            let states = ctx.states.lock().expect("states lock");
            flush::quarter_rows(&states, &self.pending.summary)?
        } else {
            Vec::new()
        };
        let (summary_last, sent_at) = if summary_due {
            flush::take_summary(&mut self.pending.summary)
        } else {
            Default::default()
        };
        let Tables { raw, summaries } = &mut self.tables;
        let pending_raw = &mut self.pending.raw;
        // Threads of their own, not rayon's: a task blocking on the runtime must not run on a
        // rayon worker, where polars' parallel work could steal another such task onto its stack.
        let (raw_done, summary_done) = std::thread::scope(|s| {
            let known = &known;
            let raw_job = s.spawn(move || {
                let mut out = Vec::new();
                for ((table, pending), due) in
                    raw.iter_mut().zip(pending_raw.iter_mut()).zip(&raw_due)
                {
                    if *due {
                        let rows = pending.rows();
                        let t = Instant::now();
                        let (n, offsets) = flush::commit_raw(rt, table, pending, known)?;
                        tracing::debug!(
                            table = table.def.name,
                            rows,
                            took_ms = t.elapsed().as_millis() as u64,
                            "raw rows committed"
                        );
                        out.push((table.def.name, offsets, n));
                    }
                }
                anyhow::Ok(out)
            });
            let summary_jobs: Vec<_> = if summary_due {
                let (quarters, last) = (&quarters, &summary_last);
                summaries
                    .iter_mut()
                    .zip(Table::ALL)
                    .map(|(table, t)| {
                        s.spawn(move || {
                            flush::commit_summary(rt, table, t, codes, quarters, last, known)
                        })
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let summary_done: anyhow::Result<Vec<_>> = summary_jobs
                .into_iter()
                .map(|j| j.join().expect("summary commit thread"))
                .collect();
            (raw_job.join().expect("raw commit thread"), summary_done)
        });
        let mut files = 0;
        for (name, offsets, n) in raw_done?.into_iter().chain(summary_done?) {
            files += n;
            self.advance(name, &offsets);
        }
        if summary_due {
            let committed = now_millis();
            self.metrics.record_freshness(
                sent_at
                    .into_iter()
                    .map(|t| committed.saturating_sub(t).max(0) as u64),
            );
        }
        self.commit_kafka_offsets(CommitMode::Async)?;
        Ok(files)
    }

    /// Decodes and validates the batch on all cores, sends the bad messages to the dead-letter
    /// topic (their acknowledgements awaited before anything is committed), and checks that
    /// every partition of the batch had its state restored at assignment.
    fn check_batch(&self, batch: &[BorrowedMessage<'_>]) -> anyhow::Result<Checked> {
        let now = now_millis();
        let checked: Vec<_> = {
            use rayon::prelude::*;
            let reference = &self.reference;
            let signed = self.config.signatures_required;
            batch
                .par_iter()
                .with_min_len(4096)
                .map(|m| check(reference, m, now, signed))
                .collect()
        };
        let mut landed: Vec<(RecordKind, Landed)> = Vec::with_capacity(batch.len());
        let mut letters = Vec::new();
        // Keyed by the borrowed topic name, owned only once per partition below: this loop
        // runs on one core for every message of the batch.
        let mut last_of: FastMap<(&str, i32), i64> = FastMap::default();
        let mut reasons = Vec::new();
        for (m, checked) in batch.iter().zip(checked) {
            last_of
                .entry((m.topic(), m.partition()))
                .and_modify(|o| *o = (*o).max(m.offset()))
                .or_insert(m.offset());
            match checked {
                Ok((event, flags)) => landed.push((
                    event.kind(),
                    Landed {
                        event,
                        flags,
                        partition: m.partition(),
                        offset: m.offset(),
                    },
                )),
                Err(why) => reasons.push((m, why)),
            }
        }
        for (m, (reason, field)) in &reasons {
            letters.push(Letter {
                topic: m.topic(),
                partition: m.partition(),
                offset: m.offset(),
                message: Some(m),
                reason: reason.as_str(),
                field: *field,
            });
        }
        self.dead_letter(&letters)?;

        let last: BTreeMap<(String, i32), i64> = last_of
            .into_iter()
            .map(|((t, p), o)| ((t.to_owned(), p), o))
            .collect();
        let partitions: BTreeSet<i32> = last.keys().map(|(_, p)| *p).collect();
        let states = self.consumer.context().states.lock().expect("states lock");
        if let Some(p) = partitions.iter().find(|p| !states.contains_key(p)) {
            anyhow::bail!("partition {p} has no state although messages of it were read");
        }
        Ok(Checked {
            landed,
            last,
            partitions,
            dead_lettered: reasons.len() as u64,
        })
    }

    /// Folds the good events into the partitions' state while their raw rows are put in frames
    /// (those not already in the raw tables: a replay after a crash), then dead-letters the
    /// events the state refused. Returns what the batch leaves for the lake.
    fn apply(&mut self, batch: &[BorrowedMessage<'_>], c: &Checked) -> anyhow::Result<Applied> {
        let known = self.offsets();
        let ctx = self.consumer.context();
        let pending_raw = &mut self.pending.raw;
        let topics = &self.topics;
        let (encoded, applied) = std::thread::scope(|s| {
            let encoded = s.spawn(|| encode_raw(topics, &known, &c.landed, pending_raw));
            let applied = apply_states(ctx, &c.partitions, &c.landed, topics, &self.codes);
            (encoded.join().expect("raw encoding thread"), applied)
        });
        encoded?;
        let (duplicates, quarters, refused) = applied?;
        // Events the partition state refused (conflicting duplicates, corrections of another
        // unit's or kind's event) go to raw as they arrived and are counted nowhere:
        // dead-lettered before anything of the batch is committed, so a crash in between sends
        // them again.
        if !refused.is_empty() {
            let by_position: HashMap<(&str, i32, i64), &BorrowedMessage<'_>> = batch
                .iter()
                .map(|m| ((m.topic(), m.partition(), m.offset()), m))
                .collect();
            let letters: Vec<Letter<'_>> = refused
                .iter()
                .map(|(p, r)| {
                    let topic = self.topics[r.kind as usize].as_str();
                    Letter {
                        topic,
                        partition: *p,
                        offset: r.offset,
                        message: by_position.get(&(topic, *p, r.offset)).copied(),
                        reason: r.reason.as_str(),
                        field: Some(r.field),
                    }
                })
                .collect();
            self.dead_letter(&letters)?;
        }
        Ok(Applied {
            duplicates,
            quarters,
            refused: refused.len() as u64,
        })
    }

    /// Commits to Kafka, for lag monitoring only, what every table holds of each assigned
    /// partition ([`landed`]): not what was read. Raw rows wait up to a minute for their file,
    /// and a rebalance drops them to be read again; committing what was read made Kafka's lag
    /// say 0 while they were in no table (a test that waited for the group's offsets then read
    /// a lake without them). The lake says where to resume, so a failure here is logged, not
    /// fatal; the next flush or idle poll commits again. `mode`: synchronous for the last one
    /// before leaving the group, which an asynchronous commit could miss.
    fn commit_kafka_offsets(&mut self, mode: CommitMode) -> anyhow::Result<()> {
        self.last_kafka_commit = Instant::now();
        let assigned = self.assigned();
        let mut tpl = TopicPartitionList::new();
        {
            let offsets = self.consumer.context().offsets.lock().expect("lock");
            for (t, p) in &assigned {
                if let Some(o) = landed(&offsets, t, *p) {
                    tpl.add_partition_offset(t, *p, Offset::Offset(o + 1))?;
                }
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, mode) {
                tracing::debug!("committing offsets to Kafka (monitoring only): {e}");
            }
        }
        Ok(())
    }
}

/// A batch after [`Pipeline::check_batch`]: its good events and where it ends.
struct Checked {
    /// The valid events with their record kind and position.
    landed: Vec<(RecordKind, Landed)>,
    /// The batch's last offset of each (topic, partition).
    last: BTreeMap<(String, i32), i64>,
    /// The partitions the batch touches.
    partitions: BTreeSet<i32>,
    /// Messages dead-lettered for a structural fault.
    dead_lettered: u64,
}

/// What [`Pipeline::apply`] did.
struct Applied {
    /// Events the state had already counted.
    duplicates: u64,
    /// The (partition, quarter) summary files whose cells changed.
    quarters: BTreeSet<(i32, Quarter)>,
    /// Events the state refused, dead-lettered.
    refused: u64,
}

/// A message for the dead-letter topic: where it came from, why, and the message itself when
/// it is in the batch at hand (a correction held since an earlier batch is named by its
/// position; its record is in the raw tables).
struct Letter<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    message: Option<&'a BorrowedMessage<'a>>,
    reason: &'a str,
    field: Option<&'static str>,
}

/// Encodes each record kind's rows of the batch into its raw table's next file, leaving out
/// those the table holds already (a replay after a crash).
fn encode_raw(
    topics: &[String; 3],
    known: &LakeOffsets,
    landed: &[(RecordKind, Landed)],
    pending: &mut [flush::RawPending; 3],
) -> anyhow::Result<()> {
    for kind in RecordKind::ALL {
        let topic = &topics[kind as usize];
        let def = raw::table_of(kind);
        let done = |p: i32| known.get(&(def.name, app_id(topic, p))).copied().flatten();
        let rows: Vec<&Landed> = landed
            .iter()
            .filter(|(k, l)| *k == kind && done(l.partition).is_none_or(|d| l.offset > d))
            .map(|(_, l)| l)
            .collect();
        if !rows.is_empty() {
            pending[kind as usize].append(def, raw::to_frame(kind, &rows)?)?;
        }
    }
    Ok(())
}

/// What applying a batch to one partition's state gave: events already counted, the quarters
/// whose cells changed, and the events the state refused (with their partition).
type PartitionApplied = (u64, BTreeSet<(i32, Quarter)>, Vec<(i32, Rejected)>);

/// Applies the batch to each partition's state (partitions in parallel).
fn apply_states(
    ctx: &GroupContext,
    partitions: &BTreeSet<i32>,
    landed: &[(RecordKind, Landed)],
    topics: &[String; 3],
    codes: &Codes,
) -> anyhow::Result<PartitionApplied> {
    use rayon::prelude::*;
    let states = ctx.states.lock().expect("states lock");
    let per_partition: Vec<PartitionApplied> = partitions
        .par_iter()
        .map(|p| {
            let evs: Vec<(&str, i64, &owsu_schemas::Event)> = landed
                .iter()
                .filter(|(_, l)| l.partition == *p)
                .map(|(k, l)| (topics[*k as usize].as_str(), l.offset, &l.event))
                .collect();
            let applied = states[p].apply(&evs, codes)?;
            let quarters = applied
                .months
                .iter()
                .map(|m| (*p, summary::quarter_of(*m)))
                .collect();
            let refused = applied.rejected.into_iter().map(|r| (*p, r)).collect();
            anyhow::Ok((applied.duplicates, quarters, refused))
        })
        .collect::<anyhow::Result<_>>()?;
    ctx.changed.lock().expect("lock").extend(partitions);
    let mut duplicates = 0;
    let mut quarters = BTreeSet::new();
    let mut refused = Vec::new();
    for (d, q, r) in per_partition {
        duplicates += d;
        quarters.extend(q);
        refused.extend(r);
    }
    Ok((duplicates, quarters, refused))
}

/// Decodes and validates one message: the event and its business-rule anomalies, or the reason
/// and the field at fault. Future times are judged against the message's own timestamp (the
/// producer's clock when it sent it), so a replay flags exactly what the first reading did;
/// `now` stands in only for a message without one.
fn check(
    reference: &Reference,
    m: &BorrowedMessage<'_>,
    now: i64,
    signed: bool,
) -> Result<(owsu_schemas::Event, owsu_schemas::Flags), (String, Option<&'static str>)> {
    let kind = raw::kind_of_topic(m.topic()).ok_or_else(|| {
        (
            format!("topic {} carries no known record kind", m.topic()),
            None,
        )
    })?;
    let payload = m
        .payload()
        .ok_or_else(|| ("empty message (no payload)".to_owned(), None))?;
    let event = owsu_schemas::decode(payload).map_err(|e| (format!("not decodable: {e}"), None))?;
    if event.kind() != kind {
        return Err((
            format!(
                "a {} record on the {} topic",
                event.kind().as_str(),
                m.topic()
            ),
            None,
        ));
    }
    let sent = m.timestamp().to_millis().unwrap_or(now);
    if signed {
        // The signature covers the exact bytes; checked after decoding only to know the unit.
        // Day closures too: a forged closure would make another unit look complete.
        let header = m.headers().and_then(|h| {
            h.iter()
                .find(|x| x.key == owsu_schemas::signing::HEADER)
                .and_then(|x| x.value)
        });
        reference
            .keys
            .verify(event.unit_code(), payload, header, sent)
            .map_err(|e| (format!("signature: {e}"), Some("signature")))?;
    }
    let flags = owsu_schemas::validate(&event, reference, sent)
        .map_err(|v| (format!("failed validation: {v}"), Some(v.field())))?;
    Ok((event, flags))
}
