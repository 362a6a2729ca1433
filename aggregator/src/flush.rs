//! What batches leave for the lake's next commits, and the commits themselves.
//!
//! A batch is folded into the partition state at once; what it means for the lake is gathered
//! here and committed later, on size or time:
//! - **raw rows** of each table are encoded into its next file as they come (a row group per
//!   batch, held compressed in memory) until it reaches [`FlushConfig::raw_bytes`] or
//!   [`FlushConfig::raw_interval`] has passed since its first rows: then the file is written and
//!   committed with the last offset of every partition it covers. Catching up gives files of
//!   tens of MB, a live run one file a minute or so, whatever the event dates;
//! - **summaries**: the (partition, quarter) files whose cells changed are rewritten after every
//!   batch that found Kafka drained (live: about a second after an event arrives), and at most
//!   every [`FlushConfig::summary_interval`] while catching up, so a quarter is rewritten once
//!   however many batches touched it.
//!
//! Each table is exactly once by its own `txn` offsets, so the tables may stand at different
//! offsets: the consumer resumes after the lowest offset that the state and every table hold, a
//! replay appends to raw only the rows past the raw table's offset, and the state counts an event
//! once whatever is replayed. Nothing pending survives a crash or a rebalance: it is dropped and
//! read again from Kafka.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use deltalake::kernel::Action;
use futures::{StreamExt, TryStreamExt};
use owsu_lake::frame::FileParts;
use owsu_lake::tables::TableDef;
use owsu_lake::{app_id, CommitKind, DeltaError, FileInfo, LakeTable};
use owsu_schemas::record::RecordKind;
use polars::prelude::DataFrame;
use tokio::runtime::Handle;

use crate::state::{Fold, PartitionState};
use crate::summary::{self, Codes, PeriodRows, Quarter, Table};

/// When pending rows and summaries are committed.
#[derive(Debug, Clone, Copy)]
pub struct FlushConfig {
    /// A raw table's next file is written once it holds this many bytes (compressed).
    pub raw_bytes: usize,
    /// ...or this long after the first of them arrived.
    pub raw_interval: Duration,
    /// While catching up, summaries are committed at most this often (live, after every batch).
    pub summary_interval: Duration,
}

/// The last offset per (topic, partition).
pub(crate) type Last = BTreeMap<(String, i32), i64>;

/// Last offsets of one commit, per app id.
pub(crate) type AppOffsets = HashMap<String, i64>;

/// The offsets the lake holds, per (table, app id): what each commit must find to go through.
pub(crate) type LakeOffsets = HashMap<(&'static str, String), Option<i64>>;

/// Raw rows of one table waiting for their file, encoded as they come ([`FileParts`]: a row
/// group per batch, held compressed).
#[derive(Default)]
pub(crate) struct RawPending {
    parts: Option<FileParts>,
    /// The last offset of every partition of the table's topic read since the last commit,
    /// also of partitions whose messages were all refused: the commit records them all.
    last: Last,
    since: Option<Instant>,
}

impl RawPending {
    /// Encodes a batch's rows of the table into its next file.
    pub(crate) fn append(&mut self, def: &'static TableDef, df: DataFrame) -> anyhow::Result<()> {
        if df.height() == 0 {
            return Ok(());
        }
        let parts = match &mut self.parts {
            Some(p) => p,
            None => self.parts.insert(FileParts::new(def)?),
        };
        parts.write(df)?;
        self.since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Whether the rows are due for their file.
    pub(crate) fn due(&self, cfg: &FlushConfig, force: bool) -> bool {
        !self.last.is_empty()
            && (force
                || self
                    .parts
                    .as_ref()
                    .is_some_and(|p| p.bytes() >= cfg.raw_bytes)
                || self.since.is_some_and(|t| t.elapsed() >= cfg.raw_interval))
    }

    /// Rows waiting.
    pub(crate) fn rows(&self) -> usize {
        self.parts.as_ref().map_or(0, FileParts::rows)
    }
}

/// Summary files to rewrite.
#[derive(Default)]
pub(crate) struct SummaryPending {
    /// (partition, quarter) whose cells changed.
    quarters: BTreeSet<(i32, Quarter)>,
    /// The last offset of every (topic, partition) read since the last commit.
    last: Last,
    since: Option<Instant>,
    /// Kafka timestamps of the messages waiting to be in the summaries (freshness).
    sent_at: Vec<i64>,
}

/// Everything batches left for the lake.
#[derive(Default)]
pub(crate) struct Pending {
    /// By record kind.
    pub raw: [RawPending; 3],
    /// The summary files to rewrite, and the offsets their commits will carry.
    pub summary: SummaryPending,
}

impl Pending {
    /// Adds a batch (its raw rows are in already, [`RawPending::append`]): `last` its last
    /// offsets, `quarters` the summary files its cells changed, `sent_at` its messages' Kafka
    /// timestamps.
    pub(crate) fn add(
        &mut self,
        topics: &[String; 3],
        last: &Last,
        quarters: impl IntoIterator<Item = (i32, Quarter)>,
        sent_at: impl IntoIterator<Item = i64>,
    ) {
        let now = Instant::now();
        for kind in RecordKind::ALL {
            let raw = &mut self.raw[kind as usize];
            let topic = &topics[kind as usize];
            for ((t, p), o) in last {
                if t == topic {
                    merge(&mut raw.last, (t.clone(), *p), *o);
                    raw.since.get_or_insert(now);
                }
            }
        }
        let s = &mut self.summary;
        s.quarters.extend(quarters);
        for (k, o) in last {
            merge(&mut s.last, k.clone(), *o);
        }
        s.sent_at.extend(sent_at);
        if !s.last.is_empty() {
            s.since.get_or_insert(now);
        }
    }

    /// Forgets everything (a rebalance or a refused commit: it is read again from Kafka).
    pub(crate) fn clear(&mut self) {
        *self = Pending::default();
    }

    /// Whether anything waits for a commit.
    pub(crate) fn is_empty(&self) -> bool {
        self.summary.last.is_empty() && self.raw.iter().all(|r| r.last.is_empty())
    }
}

fn merge(m: &mut Last, k: (String, i32), o: i64) {
    m.entry(k).and_modify(|x| *x = (*x).max(o)).or_insert(o);
}

impl SummaryPending {
    /// Whether the summaries are due for a commit (`drained`: the last batch found no more
    /// messages waiting, so they are committed at once).
    pub(crate) fn due(&self, cfg: &FlushConfig, drained: bool) -> bool {
        !self.last.is_empty()
            && (drained
                || self
                    .since
                    .is_some_and(|t| t.elapsed() >= cfg.summary_interval))
    }
}

/// A commit was refused because another instance committed one of its partitions.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Fenced(pub DeltaError);

/// A lake error, as [`Fenced`] when it is one.
pub(crate) fn fence(e: DeltaError) -> anyhow::Error {
    if e.is_fenced() {
        anyhow::Error::new(Fenced(e))
    } else {
        anyhow::Error::new(e)
    }
}

/// Writes a raw table's pending rows as one file and commits it with the offsets they cover,
/// provided the table holds the offsets `known` says. Returns the files written (0 or 1) and the
/// offsets the table now holds; the pending rows are taken in any case.
pub(crate) fn commit_raw(
    rt: &Handle,
    table: &mut LakeTable,
    pending: &mut RawPending,
    known: &LakeOffsets,
) -> anyhow::Result<(u64, AppOffsets)> {
    let RawPending { parts, last, .. } = std::mem::take(pending);
    let name = table.def.name;
    let mut offsets = HashMap::new();
    let mut expected = HashMap::new();
    for ((t, p), o) in &last {
        let app = app_id(t, *p);
        let done = known.get(&(name, app.clone())).copied().flatten();
        if done.is_none_or(|d| *o > d) {
            offsets.insert(app.clone(), *o);
            expected.insert(app, done);
        }
    }
    if offsets.is_empty() {
        return Ok((0, offsets));
    }
    let n = rt.block_on(async {
        let mut actions = Vec::new();
        if let Some(parts) = parts.filter(|p| p.rows() > 0) {
            let add = table
                .write_parts(
                    &format!("part-{}.parquet", uuid::Uuid::new_v4().simple()),
                    parts,
                )
                .await
                .map_err(fence)?;
            actions.push(Action::Add(add));
        }
        let n = actions.len() as u64;
        table
            .commit(actions, &offsets, &expected, CommitKind::Write)
            .await
            .map_err(fence)?;
        anyhow::Ok(n)
    })?;
    Ok((n, offsets))
}

/// The rows of the pending (partition, quarter) summary files, read from the partitions' state
/// (on all cores).
pub(crate) fn quarter_rows(
    states: &HashMap<i32, PartitionState>,
    pending: &SummaryPending,
) -> anyhow::Result<Vec<((i32, Quarter), PeriodRows)>> {
    use rayon::prelude::*;
    pending
        .quarters
        .par_iter()
        .map(|(p, q)| {
            let state = states.get(p).ok_or_else(|| {
                anyhow::anyhow!("partition {p} has summaries pending but no state")
            })?;
            Ok(((*p, *q), state.quarter(*q)?))
        })
        .collect()
}

/// Replaces one summary table's files of the given quarters, in one commit with the offsets
/// `last` (every partition read since the last commit, also one whose offsets the table already
/// holds after a replay: its files are rewritten, so its ownership is checked all the same).
pub(crate) fn commit_summary(
    rt: &Handle,
    table: &mut LakeTable,
    t: Table,
    codes: &Codes,
    quarters: &[((i32, Quarter), PeriodRows)],
    last: &Last,
    known: &LakeOffsets,
) -> anyhow::Result<(&'static str, AppOffsets, u64)> {
    let name = t.def().name;
    let mut offsets = HashMap::new();
    let mut expected = HashMap::new();
    for ((topic, p), o) in last {
        let app = app_id(topic, *p);
        let done = known.get(&(name, app.clone())).copied().flatten();
        offsets.insert(app.clone(), done.map_or(*o, |d| d.max(*o)));
        expected.insert(app, done);
    }
    let n = rt.block_on(async {
        table.refresh().await.map_err(fence)?;
        let mut old: HashMap<(Quarter, i32), Vec<FileInfo>> = HashMap::new();
        for f in table.files().await.map_err(fence)? {
            if let Some(k) = summary::parse_file_name(&f.path) {
                old.entry(k).or_default().push(f);
            }
        }
        let mut actions = Vec::new();
        let mut writes = Vec::new();
        for ((p, q), rows) in quarters {
            for f in old.remove(&(*q, *p)).unwrap_or_default() {
                actions.push(LakeTable::remove(&f, true));
            }
            if !rows.is_empty(t) {
                writes.push((summary::file_name(*q, *p), rows));
            }
        }
        let n = writes.len() as u64;
        let table_ref = &*table;
        // Each file's frame is built, encoded and stored, then dropped, with a few in flight:
        // building every frame of the commit first held them all at once (the largest part of
        // a catch-up's peak memory after librdkafka's buffers).
        let adds: Vec<_> =
            futures::stream::iter(writes.into_iter().map(|(name, rows)| async move {
                let df = rows.frame(t, codes)?;
                table_ref.write_file(&name, df).await.map_err(fence)
            }))
            .buffered(SUMMARY_WRITES_IN_FLIGHT)
            .try_collect()
            .await?;
        actions.extend(adds.into_iter().map(Action::Add));
        table
            .commit(actions, &offsets, &expected, CommitKind::Write)
            .await
            .map_err(fence)?;
        anyhow::Ok(n)
    })?;
    Ok((name, offsets, n))
}

/// Summary files of one table encoded and stored at once within a commit: enough to overlap
/// one file's upload with the next one's encoding, few enough that memory does not grow with
/// the number of files a commit replaces.
const SUMMARY_WRITES_IN_FLIGHT: usize = 2;

/// Takes the pending summaries (their timestamps for the freshness figure).
pub(crate) fn take_summary(pending: &mut SummaryPending) -> (Last, Vec<i64>) {
    let SummaryPending { last, sent_at, .. } = std::mem::take(pending);
    (last, sent_at)
}
