//! One Delta table of the lake: open or create it from its definition, write files, commit
//! them with the Kafka offsets they cover, read its active files.
//!
//! Offsets are Delta `txn` actions (as kafka-delta-ingest does): app id `<topic>/<partition>`,
//! version = the last Kafka offset the table holds for that partition. A commit is refused
//! ([`DeltaError::Fenced`]) unless the table's recorded offset for each of its partitions is the
//! one the writer expects — the end of its own previous commit, or what it read when it was
//! given the partition. A concurrent commit of the same partition between that check and ours is
//! caught by delta-rs's conflict checker (`ConcurrentTransaction`). So an instance that stalled
//! past its session timeout cannot commit over the partition's new owner.
//!
//! Data files are written before the commit that lists them: a file no commit lists is
//! invisible to readers, and is removed by [`LakeTable::vacuum`].

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use deltalake::kernel::transaction::{
    CommitBuilder, CommitConflictError, CommitProperties, TransactionError,
};
use deltalake::kernel::{Action, Add, Remove, StructField, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::ObjectStoreExt;
use polars::prelude::DataFrame;

use crate::frame::{self, FrameError};
use crate::store::Store;
use crate::tables::TableDef;

/// An error of one lake table; every variant names the table.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// delta-rs failed: loading, creating or upgrading the table, listing its log, or a commit
    /// (a commit conflict with another writer is one of these: see [`DeltaError::is_fenced`]).
    #[error("table {table}: {source}")]
    Delta {
        /// Short name of the table ([`TableDef::name`]).
        table: &'static str,
        /// delta-rs's error.
        #[source]
        source: Box<DeltaTableError>,
    },
    /// Reading an object of the table (a data file or a commit file) from the store failed.
    #[error("table {table}: object {key}: {source}")]
    Object {
        /// Short name of the table.
        table: &'static str,
        /// Key of the object, relative to the store root.
        key: String,
        /// object_store's error.
        // Boxed: object_store's error is large, and every Result of this module carries it.
        source: Box<object_store::Error>,
    },
    /// The store failed: writing a data file of the table, or listing its log.
    #[error("table {table}: {source}")]
    Store {
        /// Short name of the table.
        table: &'static str,
        /// The store's error.
        // Boxed for the same reason as `Object`'s.
        source: Box<crate::store::StoreError>,
    },
    /// A frame does not fit the table's definition, or Parquet encoding or decoding failed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Another writer committed offsets of these partitions: this writer no longer owns them.
    #[error("table {table}: partition {app_id} was committed by another writer (table holds offset {found:?}, this writer expected {expected:?}); the batch is dropped")]
    Fenced {
        /// Short name of the table.
        table: &'static str,
        /// The txn app id whose offset differed (see [`app_id`]).
        app_id: String,
        /// The offset the writer expected the table to hold (`None`: no offset).
        expected: Option<i64>,
        /// The offset the table holds (`None`: no offset).
        found: Option<i64>,
    },
}

impl DeltaError {
    /// Whether another writer got in the way of this one: [`DeltaError::Fenced`], or any
    /// delta-rs commit conflict (a commit made between this handle's read and its own).
    pub fn is_fenced(&self) -> bool {
        match self {
            DeltaError::Fenced { .. } => true,
            DeltaError::Delta { source, .. } => matches!(
                source.as_ref(),
                DeltaTableError::Transaction {
                    source: TransactionError::CommitConflict(_)
                }
            ),
            _ => false,
        }
    }
}

/// Commits between checkpoints. Each time delta-rs (re)loads a table it replays the commits
/// since the last checkpoint, decoding all of them at once with a buffer of its own each: with
/// the protocol's default of 100, that was ~400 MiB at the peak of an aggregator run. With 10 a
/// replay reads at most ten small commits plus one checkpoint, whatever the table's history;
/// a checkpoint of our tables (a few hundred active files) costs a few milliseconds.
const CHECKPOINT_INTERVAL: u32 = 10;

/// Tries of a commit that other partitions' writers keep getting in the way of.
const COMMIT_ATTEMPTS: u32 = 10;

/// Registers `s3://` with delta-rs's default log store, which commits with a conditional put.
pub(crate) fn register_s3() {
    /// delta-rs's default log store (conditional-put commits) for a scheme it does not know.
    struct ConditionalPutLogStore;
    impl deltalake::logstore::LogStoreFactory for ConditionalPutLogStore {
        fn with_options(
            &self,
            prefixed_store: deltalake::logstore::ObjectStoreRef,
            root_store: deltalake::logstore::ObjectStoreRef,
            location: &url::Url,
            options: &deltalake::logstore::StorageConfig,
        ) -> deltalake::DeltaResult<Arc<dyn deltalake::logstore::LogStore>> {
            Ok(deltalake::logstore::default_logstore(
                prefixed_store,
                root_store,
                location,
                options,
            ))
        }
    }
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        deltalake::logstore::logstore_factories().insert(
            url::Url::parse("s3://").expect("scheme URL"),
            Arc::new(ConditionalPutLogStore),
        );
    });
}

/// The txn app id of a Kafka topic partition: `<topic>/<partition>`.
pub fn app_id(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// A file of the table as its snapshot lists it.
#[derive(Debug, Clone)]
pub struct FileInfo {
    /// Path relative to the table root.
    pub path: String,
    /// Size of the file in bytes, as its `add` action records it.
    pub size: i64,
    /// Row count from the file's statistics (`numRecords`), when they have one.
    pub rows: Option<usize>,
    /// Parsed Delta statistics (`minValues`, `maxValues`), when written and readable as JSON.
    pub stats: Option<serde_json::Value>,
}

impl FileInfo {
    /// Min and max of a statistics column, as JSON values; `None` when the file has no
    /// statistics or either bound of that column is missing.
    pub fn range(&self, column: &str) -> Option<(&serde_json::Value, &serde_json::Value)> {
        let s = self.stats.as_ref()?;
        Some((s["minValues"].get(column)?, s["maxValues"].get(column)?))
    }
}

/// What a commit does to the table's data (the operation recorded in the Delta log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitKind {
    /// New data (and replaced summary files): a Delta `WRITE` in append mode.
    Write,
    /// Same rows, fewer files (compaction): readers see no change. A Delta `OPTIMIZE`.
    Compact,
    /// Every file replaced (rebuild): a Delta `WRITE` in overwrite mode.
    Overwrite,
}

/// A data file of a table, conformed to its definition and encoded as Parquet, not stored yet:
/// encoding is CPU work that can run on any thread ([`EncodedFile::new`] needs no table), and
/// [`LakeTable::put_file`] stores it.
#[derive(Debug)]
pub struct EncodedFile {
    name: String,
    bytes: Vec<u8>,
    stats: String,
}

impl EncodedFile {
    /// Conforms `df` to `def` (columns, types, sort order) and encodes it as the file `name`
    /// (relative to the table root), with its min/max statistics.
    pub fn new(def: &'static TableDef, name: &str, df: DataFrame) -> Result<Self, DeltaError> {
        let mut df = frame::conform(def, df)?;
        let bytes = frame::parquet_bytes(def, &mut df)?;
        Ok(EncodedFile {
            name: name.to_owned(),
            bytes,
            stats: frame::stats_json(def, &df),
        })
    }
}

/// An open table, read at one version ([`LakeTable::version`]) until it is refreshed or
/// commits.
pub struct LakeTable {
    /// The table's definition.
    pub def: &'static TableDef,
    table: DeltaTable,
    store: Store,
    /// The Kafka offsets (`txn` versions) of the app ids asked about so far, as of table
    /// version [`Self::txns_at`]. delta-kernel answers each such question by replaying the
    /// log since the last checkpoint: with one question per partition per commit, that replay
    /// was most of the aggregator's time and memory after a few years of history (measured:
    /// 466 MiB of JSON decoders at the peak of a fifth year). This cache is kept current by
    /// reading only the commits made since.
    txns: HashMap<String, Option<i64>>,
    txns_at: i64,
}

/// One line of a commit file, as far as the offsets cache cares.
#[derive(serde::Deserialize)]
struct LogLine {
    txn: Option<LogTxn>,
}

#[derive(serde::Deserialize)]
struct LogTxn {
    #[serde(rename = "appId")]
    app_id: String,
    version: i64,
}

impl LakeTable {
    fn err(&self, source: DeltaTableError) -> DeltaError {
        DeltaError::Delta {
            table: self.def.name,
            source: Box::new(source),
        }
    }

    fn builder(store: &Store, def: &'static TableDef) -> Result<DeltaTableBuilder, DeltaError> {
        let url = store.url_of(def.path);
        DeltaTableBuilder::from_url(url.clone())
            .map(|b| b.with_storage_backend(store.delta_root(), url))
            .map_err(|source| DeltaError::Delta {
                table: def.name,
                source: Box::new(source),
            })
    }

    /// Appends the rows of `df` to the table `def` (created if it does not exist) as one new
    /// file in one commit carrying no Kafka offsets: for the append-only audit tables, written
    /// by an operator's command rather than by the pipeline. Returns the new version.
    pub async fn append(
        store: &Store,
        def: &'static TableDef,
        df: DataFrame,
    ) -> Result<i64, DeltaError> {
        let mut table = Self::open_or_create(store, def).await?;
        let name = format!("part-{}.parquet", uuid::Uuid::new_v4());
        let add = table.write_file(&name, df).await?;
        table
            .commit(
                vec![Action::Add(add)],
                &HashMap::new(),
                &HashMap::new(),
                CommitKind::Write,
            )
            .await
    }

    /// Opens the table at its latest version, creating it (version 0, the defined schema) if it
    /// does not exist. An existing table is first brought up to its definition (checkpoint
    /// interval, missing nullable columns), one metadata commit per step.
    pub async fn open_or_create(store: &Store, def: &'static TableDef) -> Result<Self, DeltaError> {
        if let Some(mut t) = Self::open(store, def, None).await? {
            t.upgrade().await?;
            return Ok(t);
        }
        let e = |source| DeltaError::Delta {
            table: def.name,
            source: Box::new(source),
        };
        let table = Self::builder(store, def)?.build().map_err(e)?;
        let columns: Vec<StructField> = def
            .columns
            .iter()
            .map(|c| StructField::new(c.name, c.ty.delta(), c.nullable))
            .collect();
        // Two writers may race to create it: `Ignore` makes the loser open the winner's table.
        let table = table
            .create()
            .with_table_name(def.name)
            .with_comment(def.doc)
            .with_columns(columns)
            .with_configuration_property(
                deltalake::TableProperty::CheckpointInterval,
                Some(CHECKPOINT_INTERVAL.to_string()),
            )
            .with_save_mode(SaveMode::Ignore)
            .await
            .map_err(e)?;
        Ok(Self::new(def, table, store))
    }

    fn new(def: &'static TableDef, table: DeltaTable, store: &Store) -> Self {
        let txns_at = table.version().map_or(-1, |v| v as i64);
        LakeTable {
            def,
            table,
            store: store.clone(),
            txns: HashMap::new(),
            txns_at,
        }
    }

    /// Opens an existing table at `version` (latest when `None`; a negative version reads as 0).
    /// `None` when there is no table: its `_delta_log/` holds no commit or checkpoint file.
    pub async fn open(
        store: &Store,
        def: &'static TableDef,
        version: Option<i64>,
    ) -> Result<Option<Self>, DeltaError> {
        // A table exists once its log has an entry; asking delta-rs to load a location that does
        // not exist is an error whose kind differs by store, so look first.
        let log = store
            .list(&format!("{}/_delta_log/", def.path))
            .await
            .map_err(|e| DeltaError::Store {
                table: def.name,
                source: Box::new(e),
            })?;
        if !log
            .iter()
            .any(|k| k.ends_with(".json") || k.ends_with(".parquet"))
        {
            return Ok(None);
        }
        let mut b = Self::builder(store, def)?;
        if let Some(v) = version {
            b = b.with_version(v.max(0) as u64);
        }
        match b.load().await {
            Ok(table) => Ok(Some(Self::new(def, table, store))),
            Err(DeltaTableError::NotATable(_)) => Ok(None),
            Err(source) => Err(DeltaError::Delta {
                table: def.name,
                source: Box::new(source),
            }),
        }
    }

    /// Brings a table created by an earlier release up to its definition, one metadata commit
    /// per step: [`CHECKPOINT_INTERVAL`], then the defined columns it lacks (only nullable ones
    /// are ever added, so older files read as nulls in them). A writer racing to do the same is
    /// harmless: after a failed step the table is reloaded and the step found done.
    async fn upgrade(&mut self) -> Result<(), DeltaError> {
        const KEY: &str = "delta.checkpointInterval";
        let want = CHECKPOINT_INTERVAL.to_string();
        for _attempt in 0..6 {
            let snap = self.table.snapshot().map_err(|e| self.err(e))?;
            let interval_set = snap.metadata().configuration().get(KEY) == Some(&want);
            let schema = snap.schema();
            let missing: Vec<StructField> = self
                .def
                .columns
                .iter()
                .filter(|c| schema.field(c.name).is_none())
                .map(|c| StructField::new(c.name, c.ty.delta(), true))
                .collect();
            let step = if !interval_set {
                self.table
                    .clone()
                    .set_tbl_properties()
                    .with_properties(HashMap::from([(KEY.to_owned(), want.clone())]))
                    .await
            } else if !missing.is_empty() {
                self.table.clone().add_columns().with_fields(missing).await
            } else {
                return Ok(());
            };
            match step {
                Ok(t) => self.table = t,
                Err(_) => self.refresh().await?,
            }
        }
        Err(self.err(DeltaTableError::Generic(format!(
            "could not bring the table to its definition ({KEY} = {want}, every defined column)"
        ))))
    }

    /// The table version this handle reads (`-1` if delta-rs has none loaded).
    pub fn version(&self) -> i64 {
        self.table.version().map_or(-1, |v| v as i64)
    }

    /// Moves to the latest version, reading only the commits since the current one.
    pub async fn refresh(&mut self) -> Result<(), DeltaError> {
        self.table
            .update_incremental(None)
            .await
            .map_err(|e| self.err(e))
    }

    /// The last Kafka offset this table holds for `app_id` (see [`app_id`]), as of the version
    /// this handle reads; `None` when no commit recorded one. Answers are cached per handle and
    /// kept current from the commit files read since.
    pub async fn txn_version(&mut self, app_id: &str) -> Result<Option<i64>, DeltaError> {
        self.catch_up_txns().await?;
        if let Some(v) = self.txns.get(app_id) {
            return Ok(*v);
        }
        let snap = self.table.snapshot().map_err(|e| self.err(e))?;
        let v = snap
            .transaction_version(self.table.log_store().as_ref(), app_id)
            .await
            .map_err(|e| self.err(e))?;
        self.txns.insert(app_id.to_owned(), v);
        Ok(v)
    }

    /// Brings the offsets cache to the handle's version by reading the commits in between.
    async fn catch_up_txns(&mut self) -> Result<(), DeltaError> {
        let to = self.version();
        if self.txns_at > to {
            // The handle went back (time travel): start again.
            self.txns.clear();
        }
        while self.txns_at < to {
            let v = self.txns_at + 1;
            let key = self.key(&format!("_delta_log/{v:020}.json"));
            let got = self
                .store
                .object_store()
                .get(&Path::from(key.as_str()))
                .await;
            let bytes = match got {
                Ok(r) => r.bytes().await,
                Err(e) => Err(e),
            };
            let bytes = match bytes {
                Ok(b) => b,
                // Cleaned up already (the cache was older than the log's retention): ask the
                // kernel again for each app id.
                Err(object_store::Error::NotFound { .. }) => {
                    self.txns.clear();
                    self.txns_at = to;
                    break;
                }
                Err(source) => {
                    return Err(DeltaError::Object {
                        table: self.def.name,
                        key,
                        source: Box::new(source),
                    })
                }
            };
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let parsed: LogLine =
                    serde_json::from_slice(line).map_err(|e| DeltaError::Delta {
                        table: self.def.name,
                        source: Box::new(DeltaTableError::Generic(format!(
                            "commit {v}: unreadable log line: {e}"
                        ))),
                    })?;
                if let Some(t) = parsed.txn {
                    if let Some(known) = self.txns.get_mut(&t.app_id) {
                        *known = Some(t.version);
                    }
                }
            }
            self.txns_at = v;
        }
        Ok(())
    }

    /// The active files as of the version this handle reads (files of later commits are not
    /// listed until [`Self::refresh`]).
    pub async fn files(&self) -> Result<Vec<FileInfo>, DeltaError> {
        let views: Vec<_> = self
            .table
            .get_active_add_actions_by_partitions(&[])
            .try_collect()
            .await
            .map_err(|e| self.err(e))?;
        Ok(views
            .into_iter()
            .map(|v| FileInfo {
                path: v.path().into_owned(),
                size: v.size(),
                rows: v.num_records(),
                stats: v.stats().and_then(|s| serde_json::from_str(&s).ok()),
            })
            .collect())
    }

    fn key(&self, file: &str) -> String {
        format!("{}/{}", self.def.path, file)
    }

    /// Conforms `df` to the table, writes it as one Parquet file named `name` (relative to the
    /// table root) and returns the `add` action to commit. The file is invisible until committed.
    pub async fn write_file(&self, name: &str, df: DataFrame) -> Result<Add, DeltaError> {
        self.put_file(EncodedFile::new(self.def, name, df)?).await
    }

    /// Stores a file encoded by [`EncodedFile::new`] for this table and returns the `add`
    /// action to commit. The file is invisible until committed.
    pub async fn put_file(&self, file: EncodedFile) -> Result<Add, DeltaError> {
        let EncodedFile { name, bytes, stats } = file;
        let size = bytes.len() as i64;
        self.store
            .put(&self.key(&name), bytes)
            .await
            .map_err(|source| DeltaError::Store {
                table: self.def.name,
                source: Box::new(source),
            })?;
        Ok(Add {
            path: name,
            size,
            modification_time: chrono::Utc::now().timestamp_millis(),
            data_change: true,
            stats: Some(stats),
            ..Default::default()
        })
    }

    /// Writes a file written in parts ([`frame::FileParts`]) as `name` (relative to the table
    /// root) and returns the `add` action to commit. The file is invisible until committed.
    pub async fn write_parts(
        &self,
        name: &str,
        parts: frame::FileParts,
    ) -> Result<Add, DeltaError> {
        let (bytes, stats) = parts.finish()?;
        let size = bytes.len() as i64;
        self.store
            .put(&self.key(name), bytes)
            .await
            .map_err(|source| DeltaError::Store {
                table: self.def.name,
                source: Box::new(source),
            })?;
        Ok(Add {
            path: name.to_owned(),
            size,
            modification_time: chrono::Utc::now().timestamp_millis(),
            data_change: true,
            stats: Some(stats.json()),
            ..Default::default()
        })
    }

    /// Reads the given active files into one frame (the table's columns, in order), rows in the
    /// order of `files`; up to `concurrency` files are fetched at once (at least one).
    pub async fn read(
        &self,
        files: &[FileInfo],
        concurrency: usize,
    ) -> Result<DataFrame, DeltaError> {
        self.read_columns(files, None, concurrency).await
    }

    /// [`Self::read`] of only `columns` (all when `None`), in the order given.
    pub async fn read_columns(
        &self,
        files: &[FileInfo],
        columns: Option<&[&str]>,
        concurrency: usize,
    ) -> Result<DataFrame, DeltaError> {
        let store = self.store.object_store();
        let fetched: Vec<Result<(String, bytes::Bytes), DeltaError>> =
            futures::stream::iter(files.iter().map(|f| {
                let store = store.clone();
                let key = self.key(&f.path);
                let table = self.def.name;
                async move {
                    let r = store
                        .get(&Path::from(key.as_str()))
                        .await
                        .map_err(|source| DeltaError::Object {
                            table,
                            key: key.clone(),
                            source: Box::new(source),
                        })?;
                    let b = r.bytes().await.map_err(|source| DeltaError::Object {
                        table,
                        key: key.clone(),
                        source: Box::new(source),
                    })?;
                    Ok((key, b))
                }
            }))
            .buffered(concurrency.max(1))
            .collect()
            .await;
        let all: Vec<&str> = self.def.column_names().collect();
        let columns = columns.unwrap_or(&all);
        let mut out = frame::empty(self.def)
            .select(columns.iter().copied())
            .map_err(|source| FrameError::Polars {
                table: self.def.name,
                source,
            })?;
        for f in fetched {
            let (key, bytes) = f?;
            let df = frame::read_parquet_columns(self.def, &key, &bytes, columns)?;
            let df = frame::conform_read_columns(self.def, df, columns)?;
            out.vstack_mut_owned(df)
                .map_err(|source| FrameError::Read {
                    table: self.def.name,
                    file: key,
                    source,
                })?;
        }
        out.rechunk_mut();
        Ok(out)
    }

    /// The `remove` action for an active file. `data_change` is `false` only when the rows stay
    /// in another file (compaction).
    pub fn remove(file: &FileInfo, data_change: bool) -> Action {
        Action::Remove(Remove {
            path: file.path.clone(),
            data_change,
            deletion_timestamp: Some(chrono::Utc::now().timestamp_millis()),
            // With `extendedFileMetadata` the protocol wants partitionValues and tags too; the
            // size alone is optional and all vacuum needs.
            extended_file_metadata: None,
            size: Some(file.size),
            ..Default::default()
        })
    }

    /// Commits `actions` with the Kafka offsets they cover, provided the table's offsets are the
    /// ones `expected` (per app id; `None` = the table has none). Returns the new version.
    ///
    /// Only the app ids in `offsets` are checked; a missing entry in `expected` means `None`.
    /// The check runs against the latest version. An offset that differs is
    /// [`DeltaError::Fenced`]. A conflict with a writer of other partitions (concurrent append,
    /// or a concurrent remove of a file this snapshot read) is tried again, up to 10 attempts in
    /// all. On success the handle reads the new version.
    pub async fn commit(
        &mut self,
        actions: Vec<Action>,
        offsets: &HashMap<String, i64>,
        expected: &HashMap<String, Option<i64>>,
        kind: CommitKind,
    ) -> Result<i64, DeltaError> {
        // Writers of other partitions commit to the same table: delta-rs refuses a commit when
        // one of theirs removed any file this one's snapshot held, although the two touch
        // different files. That is not fencing, so the commit is tried again from a fresh
        // snapshot, after checking the offsets again (a writer that lost its partition is
        // still refused then, by the offsets).
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .try_commit(actions.clone(), offsets, expected, kind)
                .await
            {
                Err(DeltaError::Delta { source, .. })
                    if attempt < COMMIT_ATTEMPTS
                        && matches!(
                            source.as_ref(),
                            DeltaTableError::Transaction {
                                source: TransactionError::CommitConflict(
                                    CommitConflictError::ConcurrentDeleteRead
                                        | CommitConflictError::ConcurrentAppend
                                )
                            }
                        ) =>
                {
                    tracing::debug!(
                        table = self.def.name,
                        attempt,
                        "another partition's writer committed in between: trying again"
                    );
                }
                other => return other,
            }
        }
    }

    async fn try_commit(
        &mut self,
        actions: Vec<Action>,
        offsets: &HashMap<String, i64>,
        expected: &HashMap<String, Option<i64>>,
        kind: CommitKind,
    ) -> Result<i64, DeltaError> {
        self.refresh().await?;
        for app in offsets.keys() {
            let found = self.txn_version(app).await?;
            let want = expected.get(app).copied().flatten();
            if found != want {
                return Err(DeltaError::Fenced {
                    table: self.def.name,
                    app_id: app.clone(),
                    expected: want,
                    found,
                });
            }
        }
        let txns: Vec<Transaction> = offsets
            .iter()
            .map(|(app, off)| {
                Transaction::new_with_last_update(
                    app,
                    *off,
                    Some(chrono::Utc::now().timestamp_millis()),
                )
            })
            .collect();
        let operation = match kind {
            CommitKind::Write => DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: None,
                predicate: None,
            },
            CommitKind::Overwrite => DeltaOperation::Write {
                mode: SaveMode::Overwrite,
                partition_by: None,
                predicate: None,
            },
            CommitKind::Compact => DeltaOperation::Optimize {
                predicate: None,
                target_size: 0,
            },
        };
        let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
        let done =
            CommitBuilder::from(CommitProperties::default().with_application_transactions(txns))
                .with_actions(actions)
                .build(Some(snapshot), self.table.log_store(), operation)
                .await
                .map_err(|e| self.err(e))?;
        let version = done.version() as i64;
        // The commit's result is the table as of the new version: no need to read it again.
        self.table.state = Some(done.snapshot);
        Ok(version)
    }

    /// Bin-packs the active files smaller than `target_bytes` into files of about that size,
    /// rows re-sorted by the table's order, in one commit that changes no data (Delta OPTIMIZE):
    /// readers see the same rows, writers appending meanwhile are not disturbed. Only for tables
    /// whose files are not addressed by name (the raw tables).
    pub async fn compact(
        &mut self,
        target_bytes: i64,
        concurrency: usize,
    ) -> Result<Compacted, DeltaError> {
        self.refresh().await?;
        let mut small: Vec<FileInfo> = self
            .files()
            .await?
            .into_iter()
            .filter(|f| f.size < target_bytes / 2)
            .collect();
        small.sort_by(|a, b| a.path.cmp(&b.path));
        let mut bins: Vec<Vec<FileInfo>> = Vec::new();
        let mut size = 0;
        for f in small {
            if bins.is_empty() || size + f.size > target_bytes {
                bins.push(Vec::new());
                size = 0;
            }
            size += f.size;
            bins.last_mut().expect("pushed").push(f);
        }
        bins.retain(|b| b.len() > 1);
        let mut report = Compacted::default();
        if bins.is_empty() {
            return Ok(report);
        }
        let mut actions = Vec::new();
        for bin in bins {
            let df = self.read(&bin, concurrency).await?;
            let mut add = self
                .write_file(
                    &format!("part-{}-c.parquet", uuid::Uuid::new_v4().simple()),
                    df,
                )
                .await?;
            add.data_change = false;
            report.files_removed += bin.len();
            report.files_added += 1;
            report.bytes_added += add.size;
            actions.push(Action::Add(add));
            actions.extend(bin.iter().map(|f| Self::remove(f, false)));
        }
        report.version = self
            .commit(
                actions,
                &HashMap::new(),
                &HashMap::new(),
                CommitKind::Compact,
            )
            .await?;
        Ok(report)
    }

    /// Deletes files no version younger than `retain` refers to (Delta VACUUM), except those
    /// the versions `keep_versions` hold (approved reviews read them); time travel to other
    /// versions older than that is then no longer possible. Returns the number of files
    /// deleted. Any `retain` is accepted (Delta's 7-day minimum is not enforced). A commit
    /// conflict is tried again on the newer version, up to 10 attempts, 100 ms more wait each.
    pub async fn vacuum(
        &mut self,
        retain: chrono::Duration,
        keep_versions: &[i64],
    ) -> Result<usize, DeltaError> {
        // Vacuum records itself in the log; a writer committing at the same moment makes that
        // commit conflict, and trying again on the newer version is all it takes.
        let mut attempt = 0;
        loop {
            self.refresh().await?;
            let mut builder = self
                .table
                .clone()
                .vacuum()
                .with_retention_period(retain)
                .with_enforce_retention_duration(false);
            if !keep_versions.is_empty() {
                let keep: Vec<u64> = keep_versions
                    .iter()
                    .filter_map(|v| u64::try_from(*v).ok())
                    .collect();
                builder = builder.with_keep_versions(&keep);
            }
            let r = builder.await;
            match r {
                Ok((table, metrics)) => {
                    self.table = table;
                    return Ok(metrics.files_deleted.len());
                }
                Err(e) => {
                    let e = self.err(e);
                    attempt += 1;
                    if !e.is_fenced() || attempt >= 10 {
                        return Err(e);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                }
            }
        }
    }
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Compacted {
    /// Small files replaced.
    pub files_removed: usize,
    /// Files written (one per bin of small files).
    pub files_added: usize,
    /// Total size of the files written, in bytes.
    pub bytes_added: i64,
    /// The table version it committed (0 when there was nothing to do).
    pub version: i64,
}
