//! Where a partition's state comes from when this instance is given the partition, and its
//! snapshots in the lake's store.
//!
//! The state lives in a local file (`--state-dir`). Every `--snapshot-interval` the files of the
//! partitions that changed are copied to the store (`state/pNNN.redb`, with `state/pNNN.json`
//! recording the offsets they hold and the lake they belong to). A new owner takes whichever of
//! its local file and the snapshot holds more, and the consumer resumes after the lower of the
//! state's and the tables' offsets: the gap is replayed from Kafka (rows already in the raw
//! tables are not appended again), never read back from raw history. Only when a partition has
//! neither (a lake written before snapshots existed, or a lost snapshot) is it rebuilt from the
//! raw tables once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use owsu_lake::tables::RAW;
use owsu_lake::{FileInfo, LakeTable, Store};
use owsu_schemas::record::RecordKind;
use serde::{Deserialize, Serialize};

use crate::raw;
use crate::state::{Conflict, FirstArrivals, Fold, PartitionState};
use crate::summary::Codes;

/// Where partition state lives.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// Local directory of the state files (one per partition).
    pub dir: PathBuf,
    /// Page cache of each partition's file.
    pub(crate) cache_bytes: usize,
    /// How often changed partitions are snapshotted to the store.
    pub(crate) snapshot_interval: Duration,
    /// How often the state's open write transaction is committed to the local file
    /// ([`PartitionState`]: batches between two commits share one transaction).
    pub(crate) commit_interval: Duration,
}

/// The default state directory of a store and consumer group: under the user's cache, one per
/// (store, group), so two deployments on one machine never share state.
pub(crate) fn default_dir(store_url: &str, group: &str) -> PathBuf {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in store_url.bytes().chain([0]).chain(group.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("owsu/aggregator-state").join(format!("{h:016x}"))
}

/// The local state file of `partition` in `dir` (`pNNN.redb`).
pub(crate) fn local_path(dir: &Path, partition: i32) -> PathBuf {
    dir.join(format!("p{partition:03}.redb"))
}

fn snapshot_keys(partition: i32) -> (String, String) {
    (
        format!("state/p{partition:03}.redb"),
        format!("state/p{partition:03}.json"),
    )
}

/// What a snapshot holds, beside it in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SnapshotMeta {
    /// The lake the state belongs to (see [`lake_id()`]).
    pub(crate) lake_id: String,
    /// Last offset applied per topic, as the snapshot file holds them.
    pub offsets: HashMap<String, i64>,
    /// When the snapshot was taken (RFC 3339, UTC).
    pub(crate) taken_at: String,
    /// Size of the snapshot file, in bytes.
    pub bytes: u64,
}

/// The identity of this lake: a state file is only ever used with the lake it was built from.
pub(crate) async fn lake_id(store: &Store) -> anyhow::Result<String> {
    const KEY: &str = "state/lake-id";
    if let Ok(b) = store.get(KEY).await {
        return Ok(String::from_utf8_lossy(&b).trim().to_owned());
    }
    // Instances starting together on a new store must agree on one id (with a plain put each
    // kept its own, and one's snapshots looked foreign to the other): the first create wins.
    let id = uuid::Uuid::new_v4().to_string();
    if store.put_new(KEY, id.clone().into_bytes()).await? {
        return Ok(id);
    }
    let b = store.get(KEY).await?;
    Ok(String::from_utf8_lossy(&b).trim().to_owned())
}

fn progress(offsets: &HashMap<String, i64>) -> i64 {
    offsets.values().map(|o| o + 1).sum()
}

/// Where a restored state came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The local file: it was of this lake and held at least as much as the snapshot.
    Local,
    /// The lake's snapshot, downloaded: it held more than the local file, or there was none.
    Snapshot,
    /// Rebuilt from the partition's rows of the raw tables: no usable local file or snapshot.
    RawTables,
    /// A new, empty state: no usable local file or snapshot, and no raw rows for the partition.
    New,
}

/// Opens partition `p`'s state for this lake (see the module documentation).
pub(crate) async fn restore(
    store: &Store,
    cfg: &StateConfig,
    lake: &str,
    partition: i32,
    topics: &[String; 3],
    codes: &Codes,
) -> anyhow::Result<(PartitionState, Source)> {
    let path = local_path(&cfg.dir, partition);
    let started = Instant::now();
    let mut local = None;
    if path.exists() {
        match PartitionState::open(&path, cfg.cache_bytes) {
            Ok(s) if s.meta("lake_id")?.as_deref() == Some(lake) => {
                let o = s.offsets()?;
                local = Some((s, o));
            }
            Ok(_) => tracing::info!(partition, "local state belongs to another lake: discarded"),
            Err(e) => tracing::warn!(partition, "local state unreadable ({e}): discarded"),
        }
    }
    let (snap_file, snap_meta) = snapshot_keys(partition);
    let meta: Option<SnapshotMeta> = match store.get(&snap_meta).await {
        Ok(b) => serde_json::from_slice(&b)
            .ok()
            .filter(|m: &SnapshotMeta| m.lake_id == lake),
        Err(_) => None,
    };
    let local_progress = local.as_ref().map(|(_, o)| progress(o));
    if let Some(m) = &meta {
        if local_progress.is_none_or(|l| progress(&m.offsets) > l) {
            drop(local.take());
            let tmp = path.with_extension("download");
            std::fs::create_dir_all(&cfg.dir)
                .with_context(|| format!("creating {}", cfg.dir.display()))?;
            let bytes = store
                .get_file(&snap_file, &tmp)
                .await
                .with_context(|| format!("downloading the state snapshot {snap_file}"))?;
            std::fs::rename(&tmp, &path)?;
            match PartitionState::open(&path, cfg.cache_bytes) {
                Ok(s) => {
                    tracing::info!(
                        partition,
                        bytes,
                        took_ms = started.elapsed().as_millis() as u64,
                        "state restored from the lake's snapshot"
                    );
                    return Ok((s, Source::Snapshot));
                }
                // E.g. a snapshot of an older state format: rebuilt from the raw tables below.
                Err(e) => tracing::warn!(partition, "state snapshot not usable ({e}): discarded"),
            }
        }
    }
    if let Some((s, _)) = local {
        return Ok((s, Source::Local));
    }
    let fresh = || -> anyhow::Result<PartitionState> {
        let _ = std::fs::remove_file(&path);
        let s = PartitionState::open(&path, cfg.cache_bytes)?;
        s.set_meta("lake_id", lake)?;
        Ok(s)
    };
    let mut s = fresh()?;
    let first = FirstArrivals::new();
    let (mut rows, conflicts, inverted) =
        from_raw_tables(store, &s, partition, topics, codes, &first).await?;
    if inverted {
        // Files are not in offset order (compaction mixes them): a conflicting duplicate came
        // before the first arrival of its id. Redone with the first arrivals decided.
        let first = s.first_arrivals(&conflicts)?;
        drop(s);
        s = fresh()?;
        rows = from_raw_tables(store, &s, partition, topics, codes, &first)
            .await?
            .0;
    }
    if rows > 0 {
        tracing::warn!(
            partition,
            rows,
            took_ms = started.elapsed().as_millis() as u64,
            "no state snapshot for this partition: rebuilt it from the raw tables"
        );
        Ok((s, Source::RawTables))
    } else {
        Ok((s, Source::New))
    }
}

/// Applies the partition's rows of the raw tables to `state`, file by file: the rows applied,
/// the conflicting duplicates met, and whether one came before its id's first arrival.
async fn from_raw_tables(
    store: &Store,
    state: &PartitionState,
    partition: i32,
    topics: &[String; 3],
    codes: &Codes,
    first: &FirstArrivals,
) -> anyhow::Result<(u64, Vec<Conflict>, bool)> {
    let mut rows = 0;
    let mut conflicts = Vec::new();
    let mut inverted = false;
    for (kind, def) in RecordKind::ALL.into_iter().zip(RAW) {
        let Some(table) = LakeTable::open(store, def, None).await? else {
            continue;
        };
        let mine: Vec<FileInfo> = table
            .files()
            .await?
            .into_iter()
            .filter(|f| match f.range("kafka_partition") {
                Some((lo, hi)) => {
                    lo.as_i64().is_none_or(|lo| lo <= i64::from(partition))
                        && hi.as_i64().is_none_or(|hi| hi >= i64::from(partition))
                }
                None => true,
            })
            .collect();
        for f in mine {
            let df = table.read(std::slice::from_ref(&f), 1).await?;
            let mask = polars::prelude::ChunkCompareEq::equal(
                df.column("kafka_partition")?.i32()?,
                partition,
            );
            let df = df.filter(&mask)?;
            let landed = raw::from_frame(&f.path, kind, &df)?;
            let topic = topics[kind as usize].as_str();
            let evs: Vec<(&str, i64, &owsu_schemas::Event)> =
                landed.iter().map(|l| (topic, l.offset, &l.event)).collect();
            rows += evs.len() as u64;
            let applied = state.apply_with(&evs, codes, first)?;
            conflicts.extend(applied.conflicts);
            inverted |= applied.inverted;
        }
    }
    Ok((rows, conflicts, inverted))
}

/// Commits a partition's state and copies its file to the store as its snapshot (call between
/// batches). Returns the bytes copied.
pub(crate) async fn snapshot(
    store: &Store,
    lake: &str,
    partition: i32,
    state: &PartitionState,
) -> anyhow::Result<u64> {
    // The file must hold everything the offsets say: the open transaction is committed first.
    state.commit()?;
    let offsets = state.offsets()?;
    let (file, meta) = snapshot_keys(partition);
    let n = store.put_file(&file, state.path()).await?;
    let m = SnapshotMeta {
        lake_id: lake.to_owned(),
        offsets,
        taken_at: chrono::Utc::now().to_rfc3339(),
        bytes: n,
    };
    // The meta goes last: a reader never sees offsets the file does not hold.
    store.put(&meta, serde_json::to_vec_pretty(&m)?).await?;
    Ok(n)
}
