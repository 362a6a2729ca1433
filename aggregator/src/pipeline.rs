//! The consumer loop: Kafka → raw Parquet → summaries → offset commit.
//!
//! One batch at a time, in this order, so that every accepted event is counted exactly once
//! whatever crashes:
//! 1. collect messages until the batch is full or `linger` has passed since its first message
//!    (idle partitions hold nothing back: the clock runs from the first message, not per partition);
//! 2. decode and validate; bad records go to the dead-letter topic with the reason and their
//!    source topic/partition/offset in headers;
//! 3. land the good ones as raw Parquet (names derived from offsets, so a replay overwrites);
//! 4. fold them into the per-partition state and rewrite the summary months they touched;
//! 5. wait for the dead-letter acknowledgements, then commit the offsets synchronously.
//!
//! A crash before 5 replays the batch from the last commit: raw files are rewritten under the
//! same names, events already in the state are duplicates by `event_id`, and their months are
//! rewritten again. If a rebalance happens while a batch is being collected the batch is
//! dropped uncommitted; whoever owns the partitions next reads it again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use owsu_schemas::record::RecordKind;
use owsu_schemas::reference::Reference;
use owsu_schemas::time::now_millis;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientContext, Message};
use tokio::runtime::Handle;

use crate::kafka::KafkaArgs;
use crate::metrics::{BatchCommitted, DeadLettered, Metrics};
use crate::raw::{self, Landed};
use owsu_lake::Store;
use crate::summary::{parquet_bytes, Codes, PartitionState, Table};

/// How the aggregator runs.
#[derive(Clone)]
pub struct PipelineConfig {
    pub kafka: KafkaArgs,
    /// Consumer group; instances with the same group share the partitions.
    pub group: String,
    /// Close a batch at this many messages...
    pub max_batch: usize,
    /// ...or this long after its first message.
    pub linger: Duration,
    /// Stop once everything that was in the topics at start-up is processed and committed.
    pub until_caught_up: bool,
    /// Kafka consumer session timeout: how fast a dead instance's partitions move on.
    pub session_timeout: Duration,
    /// Object writes in flight at once.
    pub write_concurrency: usize,
}

/// What a run did.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunReport {
    pub messages: u64,
    pub accepted: [u64; 3],
    pub duplicates: u64,
    pub dead_lettered: u64,
    pub batches: u64,
    pub files: u64,
    pub elapsed: Duration,
}

impl RunReport {
    pub fn accepted_total(&self) -> u64 {
        self.accepted.iter().sum()
    }
}

/// Rebalance bookkeeping shared with librdkafka's callbacks.
pub struct GroupContext {
    assigned: Mutex<HashSet<(String, i32)>>,
    generation: AtomicU64,
    metrics: Arc<Metrics>,
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

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.generation.fetch_add(1, Ordering::SeqCst);
            let mut a = self.assigned.lock().expect("assignment lock");
            for e in tpl.elements() {
                a.remove(&(e.topic().to_owned(), e.partition()));
            }
            tracing::info!(partitions = tpl.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.generation.fetch_add(1, Ordering::SeqCst);
                let mut a = self.assigned.lock().expect("assignment lock");
                for e in tpl.elements() {
                    a.insert((e.topic().to_owned(), e.partition()));
                }
                let parts: Vec<i32> = tpl
                    .elements()
                    .iter()
                    .map(|e| e.partition())
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .collect();
                tracing::info!(partitions = ?parts, "partitions assigned");
            }
            Rebalance::Error(e) => tracing::error!("rebalance error: {e}"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// The aggregator's consumer loop and state.
pub struct Pipeline {
    config: PipelineConfig,
    store: Store,
    reference: Reference,
    codes: Codes,
    consumer: BaseConsumer<GroupContext>,
    dlq: FutureProducer,
    topics: [String; 3],
    states: HashMap<i32, PartitionState>,
    next_offset: HashMap<(String, i32), i64>,
    targets: HashMap<(String, i32), (i64, i64)>,
    /// Raw keys per topic, listed once per rebalance generation: a new owner loading several
    /// partitions lists the store once, not once per partition.
    raw_listing: Option<(u64, HashMap<String, Vec<String>>)>,
    metrics: Arc<Metrics>,
    rt: Handle,
}

impl Pipeline {
    pub fn new(
        config: PipelineConfig,
        store: Store,
        reference: Reference,
        metrics: Arc<Metrics>,
        rt: Handle,
    ) -> anyhow::Result<Self> {
        let topics = RecordKind::ALL.map(|k| config.kafka.topic(k.topic()));
        let mut c = config.kafka.client_config();
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
            .set("statistics.interval.ms", "5000");
        config.kafka.apply_overrides(&mut c);
        let ctx = GroupContext {
            assigned: Mutex::default(),
            generation: AtomicU64::new(0),
            metrics: metrics.clone(),
        };
        let consumer: BaseConsumer<GroupContext> = c
            .create_with_context(ctx)
            .context("creating the Kafka consumer")?;
        consumer
            .subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())
            .context("subscribing")?;
        let mut p = config.kafka.client_config();
        p.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5");
        config.kafka.apply_overrides(&mut p);
        let dlq: FutureProducer = p.create().context("creating the dead-letter producer")?;
        let codes = Codes::new(&reference);
        Ok(Pipeline {
            config,
            store,
            reference,
            codes,
            consumer,
            dlq,
            topics,
            states: HashMap::new(),
            next_offset: HashMap::new(),
            targets: HashMap::new(),
            raw_listing: None,
            metrics,
            rt,
        })
    }

    /// High watermarks of every partition now: "caught up" means processed up to these.
    fn record_targets(&mut self) -> anyhow::Result<()> {
        for t in &self.topics {
            let md = self
                .consumer
                .fetch_metadata(Some(t), Duration::from_secs(30))
                .with_context(|| format!("metadata of {t}"))?;
            let topic = md
                .topics()
                .iter()
                .find(|m| m.name() == t)
                .with_context(|| format!("topic {t} not found"))?;
            if let Some(e) = topic.error() {
                anyhow::bail!("topic {t}: {e:?} (create it with infra/kafka/kafka.sh start, or check --topic-prefix)");
            }
            for p in topic.partitions() {
                let (low, high) =
                    self.consumer
                        .fetch_watermarks(t, p.id(), Duration::from_secs(30))?;
                self.targets.insert((t.clone(), p.id()), (low, high));
            }
        }
        Ok(())
    }

    fn caught_up(&mut self) -> anyhow::Result<bool> {
        let assigned: Vec<(String, i32)> = self
            .consumer
            .context()
            .assigned
            .lock()
            .expect("lock")
            .iter()
            .cloned()
            .collect();
        if assigned.is_empty() {
            return Ok(false);
        }
        let mut unknown = TopicPartitionList::new();
        for (t, p) in &assigned {
            let (low, high) = self
                .targets
                .get(&(t.clone(), *p))
                .copied()
                .unwrap_or((0, 0));
            let done = high <= low
                || self
                    .next_offset
                    .get(&(t.clone(), *p))
                    .is_some_and(|n| *n >= high);
            if !done {
                unknown.add_partition(t, *p);
            }
        }
        if unknown.count() == 0 {
            return Ok(true);
        }
        // Partitions we have not read from in this run may have been finished by an earlier one.
        let committed = self
            .consumer
            .committed_offsets(unknown, Duration::from_secs(10))?;
        for e in committed.elements() {
            let high = self
                .targets
                .get(&(e.topic().to_owned(), e.partition()))
                .map(|t| t.1)
                .unwrap_or(0);
            match e.offset() {
                Offset::Offset(o) if o >= high => {
                    self.next_offset
                        .insert((e.topic().to_owned(), e.partition()), o);
                }
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Loads a partition's state from the raw files of every earlier owner.
    fn ensure_loaded(&mut self, partition: i32) -> anyhow::Result<()> {
        if self.states.contains_key(&partition) {
            return Ok(());
        }
        let started = Instant::now();
        let mut state = PartitionState::default();
        let mut files = 0;
        let generation = self.consumer.context().generation.load(Ordering::SeqCst);
        if self
            .raw_listing
            .as_ref()
            .is_none_or(|(g, _)| *g != generation)
        {
            let mut listing = HashMap::new();
            for topic in &self.topics {
                listing.insert(
                    topic.clone(),
                    self.rt
                        .block_on(self.store.list(&format!("raw/{topic}/")))?,
                );
            }
            self.raw_listing = Some((generation, listing));
        }
        for (kind, topic) in RecordKind::ALL.into_iter().zip(self.topics.iter()) {
            let keys = &self.raw_listing.as_ref().expect("listed above").1[topic];
            let mine: Vec<String> = keys
                .iter()
                .filter(|k| {
                    raw::parse_raw_key(k).is_some_and(|(t, p, _)| &t == topic && p == partition)
                })
                .cloned()
                .collect();
            let store = self.store.clone();
            let fetched: Vec<_> = self.rt.block_on(
                futures::stream::iter(mine.into_iter().map(|k| {
                    let store = store.clone();
                    async move { store.get(&k).await.map(|b| (k, b)) }
                }))
                .buffer_unordered(self.config.write_concurrency)
                .collect::<Vec<_>>(),
            );
            for f in fetched {
                let (key, bytes) = f?;
                for l in raw::from_parquet(&key, kind, &bytes)? {
                    state.apply(&l.event, &self.codes);
                }
                files += 1;
            }
        }
        state.take_dirty();
        tracing::info!(
            partition,
            files,
            events = state.events,
            took_ms = started.elapsed().as_millis() as u64,
            "partition state loaded from raw"
        );
        self.states.insert(partition, state);
        Ok(())
    }

    /// Runs until shutdown is requested (or, with `until_caught_up`, until caught up).
    pub fn run(mut self, shutdown: Arc<AtomicBool>) -> anyhow::Result<RunReport> {
        let started = Instant::now();
        let mut report = RunReport::default();
        if self.config.until_caught_up {
            self.record_targets()?;
            let total: i64 = self.targets.values().map(|(l, h)| h - l).sum();
            tracing::info!(
                messages = total,
                "will stop once caught up with what the topics hold now"
            );
        }
        let mut last_progress = Instant::now();
        loop {
            if shutdown.load(Ordering::SeqCst) {
                tracing::info!("shutdown requested: last batch committed, leaving the group");
                break;
            }
            let generation = self.consumer.context().generation.load(Ordering::SeqCst);
            let batch = self.collect(&shutdown)?;
            if self.consumer.context().generation.load(Ordering::SeqCst) != generation {
                if !batch.is_empty() {
                    tracing::info!(messages = batch.len(), "rebalance during collection: batch dropped uncommitted, it will be read again");
                }
                self.drop_revoked_state();
                continue;
            }
            if batch.is_empty() {
                if self.config.until_caught_up && self.caught_up()? {
                    tracing::info!(
                        "caught up: everything present at start-up is processed and committed"
                    );
                    break;
                }
                continue;
            }
            let b = self.process(batch)?;
            report.messages += b.messages as u64;
            for i in 0..3 {
                report.accepted[i] += b.accepted[i];
            }
            report.duplicates += b.duplicates;
            report.dead_lettered += b.dead_lettered;
            report.files += b.files;
            report.batches += 1;
            b.emit(&self.metrics);
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
        report.elapsed = started.elapsed();
        Ok(report)
    }

    fn drop_revoked_state(&mut self) {
        let assigned: HashSet<i32> = self
            .consumer
            .context()
            .assigned
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, p)| *p)
            .collect();
        self.states.retain(|p, _| assigned.contains(p));
    }

    fn collect(&self, shutdown: &AtomicBool) -> anyhow::Result<Vec<OwnedMessage>> {
        let mut batch = Vec::new();
        let mut first_at: Option<Instant> = None;
        loop {
            let wait = match first_at {
                None => Duration::from_millis(200),
                Some(t) => self.config.linger.saturating_sub(t.elapsed()),
            };
            if first_at.is_some() && wait.is_zero() {
                break;
            }
            match self.consumer.poll(wait.min(Duration::from_millis(200))) {
                Some(Ok(m)) => {
                    first_at.get_or_insert_with(Instant::now);
                    batch.push(m.detach());
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

    fn process(&mut self, batch: Vec<OwnedMessage>) -> anyhow::Result<BatchCommitted> {
        let started = Instant::now();
        let now = now_millis();
        let mut landed: Vec<(String, Landed)> = Vec::with_capacity(batch.len());
        let mut dead = Vec::new();
        let mut first: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut last: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for m in &batch {
            let tp = (m.topic().to_owned(), m.partition());
            first
                .entry(tp.clone())
                .and_modify(|o| *o = (*o).min(m.offset()))
                .or_insert(m.offset());
            last.entry(tp)
                .and_modify(|o| *o = (*o).max(m.offset()))
                .or_insert(m.offset());
            match self.check(m, now) {
                Ok(event) => landed.push((
                    m.topic().to_owned(),
                    Landed {
                        event,
                        partition: m.partition(),
                        offset: m.offset(),
                    },
                )),
                Err((reason, field)) => dead.push((m, reason, field)),
            }
        }

        // Dead letters go out first; their acknowledgements are awaited before the commit.
        let mut deliveries = Vec::new();
        let dlq_topic = self.config.kafka.topic(owsu_schemas::topics::DEAD_LETTER);
        for (m, reason, field) in &dead {
            DeadLettered {
                topic: m.topic(),
                partition: m.partition(),
                offset: m.offset(),
                reason,
            }
            .emit();
            let mut headers = OwnedHeaders::new()
                .insert(Header {
                    key: "reason",
                    value: Some(reason.as_bytes()),
                })
                .insert(Header {
                    key: "source.topic",
                    value: Some(m.topic().as_bytes()),
                })
                .insert(Header {
                    key: "source.partition",
                    value: Some(m.partition().to_string().as_bytes()),
                })
                .insert(Header {
                    key: "source.offset",
                    value: Some(m.offset().to_string().as_bytes()),
                });
            if let Some(f) = field {
                headers = headers.insert(Header {
                    key: "field",
                    value: Some(f.as_bytes()),
                });
            }
            let mut rec: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&dlq_topic).headers(headers);
            if let Some(k) = m.key() {
                rec = rec.key(k);
            }
            if let Some(p) = m.payload() {
                rec = rec.payload(p);
            }
            deliveries.push(
                self.dlq
                    .send_result(rec)
                    .map_err(|(e, _)| anyhow::anyhow!("dead-letter queue full: {e}"))?,
            );
        }

        // Raw landing.
        let groups = raw::group_for_landing(landed.iter().map(|(t, l)| (t.as_str(), l)));
        let mut files: Vec<(String, Vec<u8>)> = Vec::with_capacity(groups.len());
        for ((topic, partition, date), rows) in &groups {
            let kind = raw::kind_of_topic(topic).expect("checked in check()");
            let first_offset = first[&(topic.clone(), *partition)];
            files.push((
                raw::raw_key(topic, *date, *partition, first_offset),
                raw::to_parquet(kind, rows)?,
            ));
        }

        // Fold into state; recompute the touched months.
        let mut accepted = [0u64; 3];
        let mut duplicates = 0;
        for (_, l) in &landed {
            self.ensure_loaded(l.partition)?;
            accepted[l.event.kind() as usize] += 1;
            let state = self.states.get_mut(&l.partition).expect("loaded");
            if state.apply(&l.event, &self.codes) == crate::summary::Applied::Duplicate {
                duplicates += 1;
            }
        }
        let mut deletes = Vec::new();
        let mut partitions: Vec<i32> = landed
            .iter()
            .map(|(_, l)| l.partition)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        partitions.sort_unstable();
        for p in partitions {
            let state = self.states.get_mut(&p).expect("loaded");
            for m in state.take_dirty() {
                let rows = state.month(m, &self.codes);
                for t in Table::ALL {
                    if rows.is_empty(t) {
                        deletes.push(t.key(m, p));
                    } else {
                        files.push((
                            t.key(m, p),
                            parquet_bytes(&mut rows.frame(t, &self.codes)?)?,
                        ));
                    }
                }
            }
        }
        let n_files = files.len() as u64;
        let store = self.store.clone();
        let conc = self.config.write_concurrency;
        self.rt.block_on(async {
            store.put_all(files, conc).await?;
            for k in deletes {
                store.delete(&k).await?;
            }
            for d in deliveries {
                match d.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => anyhow::bail!("dead-letter message not acknowledged: {e}"),
                    Err(_) => anyhow::bail!("dead-letter delivery cancelled"),
                }
            }
            anyhow::Ok(())
        })?;

        // Everything is durable: commit.
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in &last {
            tpl.add_partition_offset(t, *p, Offset::Offset(o + 1))?;
            self.next_offset.insert((t.clone(), *p), o + 1);
        }
        self.consumer
            .commit(&tpl, CommitMode::Sync)
            .context("committing offsets")?;
        Ok(BatchCommitted {
            messages: batch.len(),
            accepted,
            duplicates,
            dead_lettered: dead.len() as u64,
            files: n_files,
            latency: started.elapsed(),
        })
    }

    /// Decodes and validates one message; on failure, the reason and the field at fault.
    fn check(
        &self,
        m: &OwnedMessage,
        now: i64,
    ) -> Result<owsu_schemas::Event, (String, Option<&'static str>)> {
        let kind = raw::kind_of_topic(m.topic()).ok_or_else(|| {
            (
                format!("topic {} carries no known record kind", m.topic()),
                None,
            )
        })?;
        let payload = m
            .payload()
            .ok_or_else(|| ("empty message (no payload)".to_owned(), None))?;
        let event =
            owsu_schemas::decode(payload).map_err(|e| (format!("not decodable: {e}"), None))?;
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
        owsu_schemas::validate(&event, &self.reference, now)
            .map_err(|v| (format!("failed validation: {v}"), Some(v.field())))?;
        Ok(event)
    }
}

/// Recomputes every summary from raw: drops `summaries/` and writes it again.
pub async fn rebuild(
    store: &Store,
    reference: &Reference,
    concurrency: usize,
) -> anyhow::Result<RebuildReport> {
    let started = Instant::now();
    let codes = Codes::new(reference);
    let keys = store.list("raw/").await?;
    let mut states: BTreeMap<i32, PartitionState> = BTreeMap::new();
    let fetched: Vec<_> = futures::stream::iter(keys.iter().filter_map(|k| {
        let (topic, partition, _) = raw::parse_raw_key(k)?;
        let kind = raw::kind_of_topic(&topic)?;
        let store = store.clone();
        let k = k.clone();
        Some(async move { store.get(&k).await.map(|b| (k, kind, partition, b)) })
    }))
    .buffer_unordered(concurrency)
    .collect()
    .await;
    let mut events = 0u64;
    let raw_files = fetched.len();
    for f in fetched {
        let (key, kind, partition, bytes) = f?;
        let state = states.entry(partition).or_default();
        for l in raw::from_parquet(&key, kind, &bytes)? {
            state.apply(&l.event, &codes);
            events += 1;
        }
    }
    let removed = store.delete_prefix("summaries/").await?;
    let mut files = Vec::new();
    for (p, state) in &states {
        for m in state.all_months() {
            let rows = state.month(m, &codes);
            for t in Table::ALL {
                if !rows.is_empty(t) {
                    files.push((t.key(m, *p), parquet_bytes(&mut rows.frame(t, &codes)?)?));
                }
            }
        }
    }
    let written = files.len();
    store.put_all(files, concurrency).await?;
    Ok(RebuildReport {
        raw_files,
        events,
        partitions: states.len(),
        removed,
        written,
        elapsed: started.elapsed(),
    })
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy)]
pub struct RebuildReport {
    pub raw_files: usize,
    pub events: u64,
    pub partitions: usize,
    pub removed: usize,
    pub written: usize,
    pub elapsed: Duration,
}
