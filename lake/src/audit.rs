//! Reading the audit tables the pipeline's maintenance must respect.

use std::collections::BTreeMap;

use crate::delta::DeltaError;
use crate::snapshot::Snapshot;
use crate::store::Store;
use crate::tables::APPROVALS;

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
    let col = df
        .column("table_versions")
        .and_then(|c| c.str().cloned())
        .map_err(|e| AuditError::Row(0, e.to_string()))?;
    for (i, v) in col.iter().enumerate() {
        let map: BTreeMap<String, i64> = serde_json::from_str(v.unwrap_or("{}"))
            .map_err(|e| AuditError::Row(i, e.to_string()))?;
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
    /// A row of audit/approvals is malformed.
    #[error("audit/approvals, row {0}: table_versions: {1}")]
    Row(usize, String),
}
