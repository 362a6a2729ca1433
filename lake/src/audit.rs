//! Reading the audit tables (`audit/approvals`, `audit/offset_gaps`) into typed rows, for the
//! maintenance that must respect them and the reports that must state them.

use std::collections::BTreeMap;

use crate::delta::DeltaError;
use crate::snapshot::Snapshot;
use crate::store::Store;
use crate::tables::{APPROVALS, OFFSET_GAPS};

/// A row of `audit/offset_gaps`: offsets of one partition that Kafka deleted before the lake
/// held them, accepted by an operator (see [`OFFSET_GAPS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetGap {
    /// Kafka topic.
    pub topic: String,
    /// Kafka partition.
    pub partition: i32,
    /// Last offset the lake held before the gap (`None`: none).
    pub lake_offset: Option<i64>,
    /// First offset Kafka still had: where the aggregator resumed.
    pub log_start: i64,
    /// Offsets in between, never counted.
    pub events_lost: i64,
    /// Consumer group of the aggregator that accepted it.
    pub group_id: String,
    /// The operator who accepted it.
    pub accepted_by: String,
    /// When, in microseconds since the epoch (UTC).
    pub accepted_at_us: i64,
}

/// Every accepted gap in the snapshot's `audit/offset_gaps` (none when the snapshot does not
/// hold the table), in file order. A row with a null where the table requires a value is an
/// error naming it.
pub async fn offset_gaps(snapshot: &Snapshot) -> Result<Vec<OffsetGap>, AuditError> {
    let df = snapshot.read(&OFFSET_GAPS, None, None).await?;
    let bad = |row: usize, reason: String| AuditError::Row {
        table: OFFSET_GAPS.path,
        row,
        reason,
    };
    let col = |name: &str| df.column(name).map_err(|e| bad(0, e.to_string()));
    let s =
        |name: &str| col(name).and_then(|c| c.str().cloned().map_err(|e| bad(0, e.to_string())));
    let i =
        |name: &str| col(name).and_then(|c| c.i64().cloned().map_err(|e| bad(0, e.to_string())));
    let (topic, group, by) = (s("topic")?, s("group_id")?, s("accepted_by")?);
    let partition = col("kafka_partition")?
        .i32()
        .cloned()
        .map_err(|e| bad(0, e.to_string()))?;
    let (lake_offset, log_start, lost) = (i("lake_offset")?, i("log_start")?, i("events_lost")?);
    let at = col("accepted_at")?
        .datetime()
        .map_err(|e| bad(0, e.to_string()))?
        .physical()
        .clone();
    (0..df.height())
        .map(|r| {
            let need = |v: Option<i64>, c: &str| v.ok_or_else(|| bad(r, format!("{c} is null")));
            let text = |v: Option<&str>, c: &str| {
                v.map(str::to_owned)
                    .ok_or_else(|| bad(r, format!("{c} is null")))
            };
            Ok(OffsetGap {
                topic: text(topic.get(r), "topic")?,
                partition: partition
                    .get(r)
                    .ok_or_else(|| bad(r, "kafka_partition is null".into()))?,
                lake_offset: lake_offset.get(r),
                log_start: need(log_start.get(r), "log_start")?,
                events_lost: need(lost.get(r), "events_lost")?,
                group_id: text(group.get(r), "group_id")?,
                accepted_by: text(by.get(r), "accepted_by")?,
                accepted_at_us: need(at.get(r), "accepted_at")?,
            })
        })
        .collect()
}

/// Per table name, the versions some approval of a review was computed from: `vacuum` keeps
/// their files, so an approved review can always be computed again. Empty when nothing was
/// approved. A row whose `table_versions` is not a JSON object of versions is an error naming
/// it.
pub async fn approved_versions(store: &Store) -> Result<BTreeMap<String, Vec<i64>>, AuditError> {
    let snap = Snapshot::open(store, &[&APPROVALS], None).await?;
    let df = snap.read(&APPROVALS, None, None).await?;
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    if df.height() == 0 {
        return Ok(out);
    }
    let bad = |row: usize, e: String| AuditError::Row {
        table: APPROVALS.path,
        row,
        reason: format!("table_versions: {e}"),
    };
    let col = df
        .column("table_versions")
        .and_then(|c| c.str().cloned())
        .map_err(|e| bad(0, e.to_string()))?;
    for (i, v) in col.iter().enumerate() {
        let map: BTreeMap<String, i64> =
            serde_json::from_str(v.unwrap_or("{}")).map_err(|e| bad(i, e.to_string()))?;
        for (table, version) in map {
            let vs = out.entry(table).or_default();
            if !vs.contains(&version) {
                vs.push(version);
            }
        }
    }
    Ok(out)
}

/// The audit tables could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Reading the table failed.
    #[error(transparent)]
    Delta(#[from] DeltaError),
    /// A row of an audit table is malformed.
    #[error("{table}, row {row}: {reason}")]
    Row {
        /// The table's path in the store.
        table: &'static str,
        /// The row, from 0 in file order.
        row: usize,
        /// What is wrong with it.
        reason: String,
    },
}
