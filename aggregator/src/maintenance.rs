//! Work on the lake outside the consumer loop: `rebuild` (summaries from raw), `compact` and
//! `vacuum`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use deltalake::kernel::Action;
use owsu_lake::tables::RAW;
use owsu_lake::{CommitKind, EncodedFile, LakeTable, Store};
use owsu_schemas::record::RecordKind;
use owsu_schemas::reference::Reference;

use crate::raw;
use crate::state::{Applied, Conflict, FirstArrivals, Fold, MemState, PartitionState, StateError};
use crate::summary::{self, Codes, Table};

/// Raw rows turned into events at a time by `rebuild`.
const REBUILD_SLICE: usize = 100_000;

/// What a rebuild did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RebuildReport {
    /// Raw files read in the first pass over the raw tables.
    pub(crate) raw_files: usize,
    /// Raw rows applied (duplicates included); partitions redone count once.
    pub events: u64,
    /// Kafka partitions met in the raw tables.
    pub partitions: usize,
    /// Summary files removed (every file the summary tables held).
    pub removed: usize,
    /// Summary files written.
    pub written: usize,
    /// Wall time of the whole rebuild.
    pub elapsed: Duration,
}

/// A partition's state during a rebuild: in memory while the partitions fit the budget, on disk
/// (a temporary redb file, fixed cache) once they do not.
enum Scratch {
    Mem(Box<MemState>),
    Disk(PartitionState),
}

impl Scratch {
    /// The state, whichever store holds it.
    fn state(&self) -> &dyn Fold {
        match self {
            Scratch::Mem(s) => &**s,
            Scratch::Disk(s) => s,
        }
    }
    /// Drops the state (and its file).
    fn discard(self) -> std::io::Result<()> {
        if let Scratch::Disk(s) = self {
            let path = s.path().to_owned();
            drop(s);
            std::fs::remove_file(path)?;
        }
        Ok(())
    }
}

/// Where a rebuild keeps its partitions' states, and how much memory they may take.
struct Scratches {
    dir: tempfile::TempDir,
    budget: usize,
    states: BTreeMap<i32, Scratch>,
}

impl Scratches {
    /// Moves the largest states in memory to disk until those left fit the budget.
    fn spill_over_budget(&mut self) -> Result<(), StateError> {
        let mut sizes: Vec<(usize, i32)> = self
            .states
            .iter()
            .filter_map(|(p, s)| match s {
                Scratch::Mem(m) => Some((m.bytes(), *p)),
                Scratch::Disk(_) => None,
            })
            .collect();
        let mut held: usize = sizes.iter().map(|(b, _)| b).sum();
        sizes.sort_unstable();
        while held > self.budget {
            let Some((bytes, p)) = sizes.pop() else { break };
            let disk =
                PartitionState::open(&self.dir.path().join(format!("p{p:03}.redb")), 8 << 20)?;
            if let Some(Scratch::Mem(m)) = self.states.get(&p) {
                m.spill(&disk)?;
            }
            self.states.insert(p, Scratch::Disk(disk));
            held -= bytes;
            tracing::info!(
                partition = p,
                mib = bytes >> 20,
                "rebuild: partition state moved to disk (memory budget reached)"
            );
        }
        Ok(())
    }
}

/// Recomputes every summary table from the raw tables, each in one commit that replaces all of
/// its files (readers see the old summaries or the new ones, never a mix). Raw is streamed once,
/// file by file, into a state per partition: in memory while the partitions fit
/// `memory_budget` bytes, the largest moved to a temporary file on disk (fixed cache) past it,
/// so memory does not grow with history. Run it with the aggregators stopped: a live one's
/// commit in between would be replaced.
pub(crate) async fn rebuild(
    store: &Store,
    reference: &Reference,
    concurrency: usize,
    memory_budget: usize,
) -> anyhow::Result<RebuildReport> {
    let started = Instant::now();
    let codes = Codes::new(reference);
    let mut scratch = Scratches {
        dir: tempfile::tempdir()?,
        budget: memory_budget,
        states: BTreeMap::new(),
    };
    let first = BTreeMap::new();
    let pass = apply_raw(store, &codes, concurrency, &mut scratch, &first).await?;
    let (raw_files, mut events) = (pass.raw_files, pass.events);
    if !pass.inverted.is_empty() {
        // Files are not in offset order (compaction mixes them): in these partitions a
        // conflicting duplicate came before the first arrival of its id. They are redone with
        // the first arrivals decided, so the answer is the live one.
        let mut first = BTreeMap::new();
        for p in &pass.inverted {
            let conflicts: Vec<Conflict> = pass
                .conflicts
                .iter()
                .filter(|(q, _)| q == p)
                .map(|(_, c)| *c)
                .collect();
            first.insert(*p, scratch.states[p].state().first_arrivals(&conflicts)?);
            let state = scratch
                .states
                .remove(p)
                .expect("inverted partitions have a state");
            state.discard()?;
        }
        let redo = apply_raw(store, &codes, concurrency, &mut scratch, &first).await?;
        events = events - pass.events_in(&pass.inverted) + redo.events_in(&pass.inverted);
    }
    // Every (partition, quarter)'s rows once, then every summary file encoded, on all cores;
    // the stores' writes and the four commits follow.
    use rayon::prelude::*;
    let mut cells: Vec<(i32, summary::Quarter)> = Vec::new();
    for (p, state) in &scratch.states {
        let quarters: BTreeSet<summary::Quarter> = state
            .state()
            .months()?
            .into_iter()
            .map(summary::quarter_of)
            .collect();
        cells.extend(quarters.into_iter().map(|q| (*p, q)));
    }
    let states = &scratch.states;
    let rows: Vec<(i32, summary::Quarter, summary::PeriodRows)> = cells
        .into_par_iter()
        .map(|(p, q)| anyhow::Ok((p, q, states[&p].state().quarter(q)?)))
        .collect::<anyhow::Result<_>>()?;
    let mut removed = 0;
    let mut written = 0;
    for t in Table::ALL {
        let mut table = LakeTable::open_or_create(store, t.def()).await?;
        let old = table.files().await?;
        removed += old.len();
        let mut actions: Vec<Action> = old.iter().map(|f| LakeTable::remove(f, true)).collect();
        let files: Vec<EncodedFile> = rows
            .par_iter()
            .filter(|(_, _, r)| !r.is_empty(t))
            .map(|(p, q, r)| {
                let df = r.frame(t, &codes)?;
                anyhow::Ok(EncodedFile::new(t.def(), &summary::file_name(*q, *p), df)?)
            })
            .collect::<anyhow::Result<_>>()?;
        written += files.len();
        let table_ref = &table;
        let adds = futures::future::try_join_all(
            files
                .into_iter()
                .map(|f| async move { table_ref.put_file(f).await }),
        )
        .await?;
        actions.extend(adds.into_iter().map(Action::Add));
        table
            .commit(
                actions,
                &Default::default(),
                &Default::default(),
                CommitKind::Overwrite,
            )
            .await?;
    }
    Ok(RebuildReport {
        raw_files,
        events,
        partitions: scratch.states.len(),
        removed,
        written,
        elapsed: started.elapsed(),
    })
}

/// What one pass over the raw tables applied.
struct RawPass {
    raw_files: usize,
    events: u64,
    /// Events per partition.
    per_partition: BTreeMap<i32, u64>,
    conflicts: Vec<(i32, Conflict)>,
    /// Partitions where a conflicting duplicate came before its id's first arrival.
    inverted: BTreeSet<i32>,
}

impl RawPass {
    fn events_in(&self, partitions: &BTreeSet<i32>) -> u64 {
        partitions
            .iter()
            .filter_map(|p| self.per_partition.get(p))
            .sum()
    }
}

/// Streams the raw tables into `scratch` (a state in memory is made for each partition met that
/// has none). With `first` non-empty, only its partitions are applied, with those first
/// arrivals decided.
async fn apply_raw(
    store: &Store,
    codes: &Codes,
    concurrency: usize,
    scratch: &mut Scratches,
    first: &BTreeMap<i32, FirstArrivals>,
) -> anyhow::Result<RawPass> {
    let mut pass = RawPass {
        raw_files: 0,
        events: 0,
        per_partition: BTreeMap::new(),
        conflicts: Vec::new(),
        inverted: BTreeSet::new(),
    };
    let none = FirstArrivals::new();
    for (kind, def) in RecordKind::ALL.into_iter().zip(RAW) {
        let Some(table) = LakeTable::open(store, def, None).await? else {
            continue;
        };
        let files = table.files().await?;
        pass.raw_files += files.len();
        for f in files {
            let df = table.read(std::slice::from_ref(&f), concurrency).await?;
            // A compacted file holds millions of rows: turn them into events a slice at a time,
            // the next slice while the current one is applied (converting is one task; applying
            // is one per partition, so the two together keep both cores busy).
            let slices = df.height().div_ceil(REBUILD_SLICE);
            let convert = |i: usize| {
                let slice = df.slice((i * REBUILD_SLICE) as i64, REBUILD_SLICE);
                raw::from_frame(&f.path, kind, &slice)
            };
            let mut next = (slices > 0).then(|| convert(0)).transpose()?;
            for i in 0..slices {
                let landed = next.take().expect("the slice converted");
                let (applied, converted) = rayon::join(
                    || apply_slice(&landed, def.name, first, &none, codes, &mut scratch.states),
                    || (i + 1 < slices).then(|| convert(i + 1)).transpose(),
                );
                next = converted?;
                for (p, n, a) in applied? {
                    pass.events += n;
                    *pass.per_partition.entry(p).or_default() += n;
                    pass.conflicts
                        .extend(a.conflicts.into_iter().map(|c| (p, c)));
                    if a.inverted {
                        pass.inverted.insert(p);
                    }
                }
                scratch.spill_over_budget()?;
            }
        }
    }
    Ok(pass)
}

/// Applies one slice of a raw table's rows to the partitions' states (a state in memory is made
/// for each partition met that has none), partitions on all cores. With `first` non-empty, only
/// its partitions are applied, with those first arrivals decided.
fn apply_slice(
    landed: &[raw::Landed],
    table: &str,
    first: &BTreeMap<i32, FirstArrivals>,
    none: &FirstArrivals,
    codes: &Codes,
    states: &mut BTreeMap<i32, Scratch>,
) -> anyhow::Result<Vec<(i32, u64, Applied)>> {
    use rayon::prelude::*;
    let mut by_partition: BTreeMap<i32, Vec<(&str, i64, &owsu_schemas::Event)>> = BTreeMap::new();
    for l in landed {
        if first.is_empty() || first.contains_key(&l.partition) {
            by_partition
                .entry(l.partition)
                .or_default()
                .push((table, l.offset, &l.event));
        }
    }
    for p in by_partition.keys() {
        states
            .entry(*p)
            .or_insert_with(|| Scratch::Mem(Box::default()));
    }
    let states = &*states;
    by_partition
        .into_par_iter()
        .map(|(p, evs)| {
            let first = first.get(&p).unwrap_or(none);
            let applied = states[&p].state().apply_with(&evs, codes, first)?;
            anyhow::Ok((p, evs.len() as u64, applied))
        })
        .collect()
}

/// Per table: files before → after.
#[derive(Debug, Clone)]
pub(crate) struct CompactReport {
    /// (raw table name, what its compaction did), for each raw table that exists.
    pub tables: Vec<(&'static str, owsu_lake::delta::Compacted)>,
}

/// Bin-packs the raw tables' small files (summary files are one per partition and quarter
/// already, and addressed by name, so they are left as they are).
pub(crate) async fn compact(
    store: &Store,
    target_bytes: i64,
    concurrency: usize,
) -> anyhow::Result<CompactReport> {
    let mut tables = Vec::new();
    for def in RAW {
        if let Some(mut t) = LakeTable::open(store, def, None).await? {
            tables.push((def.name, t.compact(target_bytes, concurrency).await?));
        }
    }
    Ok(CompactReport { tables })
}

/// Deletes files that no table version younger than `retain` needs, in every table, keeping
/// those of the versions an approved review was computed from.
pub(crate) async fn vacuum(
    store: &Store,
    retain: Duration,
) -> anyhow::Result<Vec<(&'static str, usize)>> {
    let retain = chrono::Duration::from_std(retain)?;
    // Approved reviews are computed again from their versions: their files stay.
    let keep = owsu_lake::audit::approved_versions(store).await?;
    let mut out = Vec::new();
    for def in owsu_lake::tables::ALL {
        if let Some(mut t) = LakeTable::open(store, def, None).await? {
            let versions = keep.get(def.name).map(Vec::as_slice).unwrap_or_default();
            out.push((def.name, t.vacuum(retain, versions).await?));
        }
    }
    Ok(out)
}
