//! A reader's view of the lake: every table it needs at one version each, chosen once, so a
//! report computed from several tables is consistent and says which versions it read.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use polars::prelude::DataFrame;
use serde::Serialize;

use crate::delta::{DeltaError, FileInfo, LakeTable};
use crate::store::Store;
use crate::tables::TableDef;

/// Versions of the tables a reader used (the provenance a report states): table short name to
/// Delta version. Displayed as `name@vN, ...`, in name order.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Versions(pub BTreeMap<String, i64>);

impl std::fmt::Display for Versions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(t, v)| format!("{t}@v{v}")).collect();
        f.write_str(&parts.join(", "))
    }
}

/// Tables opened at fixed versions. A table never written to is absent and reads as empty;
/// reads fetch up to 16 files at once.
pub struct Snapshot {
    tables: BTreeMap<&'static str, LakeTable>,
    concurrency: usize,
}

fn date_of(v: &serde_json::Value) -> Option<NaiveDate> {
    v.as_str()?.get(..10)?.parse().ok()
}

impl Snapshot {
    /// Opens `tables` at their latest versions, or at `versions` where given (time travel).
    pub async fn open(
        store: &Store,
        tables: &[&'static TableDef],
        versions: Option<&Versions>,
    ) -> Result<Self, DeltaError> {
        let mut open = BTreeMap::new();
        for def in tables {
            let v = versions.and_then(|vs| vs.0.get(def.name).copied());
            // A table never written to is absent: it reads as empty.
            if let Some(t) = LakeTable::open(store, def, v).await? {
                open.insert(def.name, t);
            }
        }
        Ok(Snapshot {
            tables: open,
            concurrency: 16,
        })
    }

    /// The versions read, of the tables that exist.
    pub fn versions(&self) -> Versions {
        Versions(
            self.tables
                .iter()
                .map(|(n, t)| ((*n).to_owned(), t.version()))
                .collect(),
        )
    }

    /// Active files of a table whose date statistics overlap `[from, to]` (all files when the
    /// table has no `date` or `event_date` statistics or the file has none).
    pub async fn files(
        &self,
        def: &'static TableDef,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
    ) -> Result<Vec<FileInfo>, DeltaError> {
        let Some(t) = self.tables.get(def.name) else {
            return Ok(Vec::new());
        };
        let col = ["date", "event_date"]
            .into_iter()
            .find(|c| def.stats.contains(c));
        Ok(t.files()
            .await?
            .into_iter()
            .filter(|f| {
                let Some((lo, hi)) = col.and_then(|c| f.range(c)) else {
                    return true;
                };
                let (lo, hi) = (date_of(lo), date_of(hi));
                !(matches!((to, lo), (Some(to), Some(lo)) if lo > to)
                    || matches!((from, hi), (Some(from), Some(hi)) if hi < from))
            })
            .collect())
    }

    /// The latest day in a table's `date` (or `event_date`) statistics: its last day with rows,
    /// read from the Delta log alone. `None` for an empty or absent table, or one without them.
    pub async fn latest_date(
        &self,
        def: &'static TableDef,
    ) -> Result<Option<NaiveDate>, DeltaError> {
        let Some(col) = ["date", "event_date"]
            .into_iter()
            .find(|c| def.stats.contains(c))
        else {
            return Ok(None);
        };
        Ok(self
            .files(def, None, None)
            .await?
            .iter()
            .filter_map(|f| f.range(col).and_then(|(_, hi)| date_of(hi)))
            .max())
    }

    /// Rows of a table from the files overlapping `[from, to]` (filter rows yourself: a file
    /// holds a range of days).
    pub async fn read(
        &self,
        def: &'static TableDef,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
    ) -> Result<DataFrame, DeltaError> {
        self.read_columns(def, from, to, None).await
    }

    /// [`Self::read`] of only `columns` (all when `None`): a report over raw events reads the
    /// few it needs, not every column of millions of rows.
    pub async fn read_columns(
        &self,
        def: &'static TableDef,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
        columns: Option<&[&str]>,
    ) -> Result<DataFrame, DeltaError> {
        let files = self.files(def, from, to).await?;
        match self.tables.get(def.name) {
            Some(t) => t.read_columns(&files, columns, self.concurrency).await,
            None => {
                let empty = crate::frame::empty(def);
                Ok(match columns {
                    Some(c) => empty
                        .select(c.iter().copied())
                        .expect("columns of the definition"),
                    None => empty,
                })
            }
        }
    }
}
