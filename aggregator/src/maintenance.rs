//! Work on the lake outside the consumer loop: `rebuild` (summaries from raw), `compact` and
//! `vacuum`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use deltalake::kernel::Action;
use owsu_lake::tables::RAW;
use owsu_lake::{CommitKind, LakeTable, Store};
use owsu_schemas::record::RecordKind;
use owsu_schemas::reference::Reference;

use crate::raw;
use crate::state::PartitionState;
use crate::summary::{self, Codes, Table};

/// Raw rows turned into events at a time by `rebuild`.
const REBUILD_SLICE: usize = 100_000;

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

/// Recomputes every summary table from the raw tables, each in one commit that replaces all of
/// its files (readers see the old summaries or the new ones, never a mix). Raw is streamed once,
/// file by file, into a temporary state per partition (on disk, fixed cache), so memory does not
/// grow with history. Run it with the aggregators stopped: a live one's commit in between would
/// be replaced.
pub async fn rebuild(
    store: &Store,
    reference: &Reference,
    concurrency: usize,
) -> anyhow::Result<RebuildReport> {
    let started = Instant::now();
    let codes = Codes::new(reference);
    let scratch = tempfile::tempdir()?;
    let mut states: BTreeMap<i32, PartitionState> = BTreeMap::new();
    let mut events = 0u64;
    let mut raw_files = 0;
    for (kind, def) in RecordKind::ALL.into_iter().zip(RAW) {
        let Some(table) = LakeTable::open(store, def, None).await? else {
            continue;
        };
        let files = table.files().await?;
        raw_files += files.len();
        for f in files {
            let df = table.read(std::slice::from_ref(&f), concurrency).await?;
            // A compacted file holds millions of rows: turn them into events a slice at a time.
            let mut offset = 0;
            while offset < df.height() {
                let slice = df.slice(offset as i64, REBUILD_SLICE);
                offset += REBUILD_SLICE;
                let landed = raw::from_frame(&f.path, kind, &slice)?;
                let mut by_partition: BTreeMap<i32, Vec<(&str, i64, &owsu_schemas::Event)>> =
                    BTreeMap::new();
                for l in &landed {
                    by_partition
                        .entry(l.partition)
                        .or_default()
                        .push((def.name, l.offset, &l.event));
                }
                for p in by_partition.keys() {
                    if let std::collections::btree_map::Entry::Vacant(e) = states.entry(*p) {
                        e.insert(PartitionState::open(
                            &scratch.path().join(format!("p{p:03}.redb")),
                            8 << 20,
                        )?);
                    }
                }
                // Partitions are independent: applied on all cores.
                use rayon::prelude::*;
                let states = &states;
                let codes = &codes;
                events += by_partition
                    .into_par_iter()
                    .map(|(p, evs)| {
                        states[&p].apply(&evs, codes)?;
                        anyhow::Ok(evs.len() as u64)
                    })
                    .sum::<anyhow::Result<u64>>()?;
            }
        }
    }
    let mut removed = 0;
    let mut written = 0;
    for t in Table::ALL {
        let mut table = LakeTable::open_or_create(store, t.def()).await?;
        let old = table.files().await?;
        removed += old.len();
        let mut actions: Vec<Action> = old.iter().map(|f| LakeTable::remove(f, true)).collect();
        for (p, state) in &states {
            let quarters: std::collections::BTreeSet<summary::Quarter> = state
                .months()?
                .into_iter()
                .map(summary::quarter_of)
                .collect();
            for q in quarters {
                let rows = state.quarter(q)?;
                if !rows.is_empty(t) {
                    let add = table
                        .write_file(&summary::file_name(q, *p), rows.frame(t, &codes)?)
                        .await?;
                    actions.push(Action::Add(add));
                    written += 1;
                }
            }
        }
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
        partitions: states.len(),
        removed,
        written,
        elapsed: started.elapsed(),
    })
}

/// Per table: files before → after.
#[derive(Debug, Clone)]
pub struct CompactReport {
    pub tables: Vec<(&'static str, owsu_lake::delta::Compacted)>,
}

/// Bin-packs the raw tables' small files (summary files are one per partition and quarter
/// already, and addressed by name, so they are left as they are).
pub async fn compact(
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

/// Deletes files that no table version younger than `retain` needs, in every table.
pub async fn vacuum(store: &Store, retain: Duration) -> anyhow::Result<Vec<(&'static str, usize)>> {
    let retain = chrono::Duration::from_std(retain)?;
    let mut out = Vec::new();
    for def in owsu_lake::tables::ALL {
        if let Some(mut t) = LakeTable::open(store, def, None).await? {
            out.push((def.name, t.vacuum(retain).await?));
        }
    }
    Ok(out)
}
