//! The lake: Delta Lake tables on an object store (a local directory by default, S3 by URL).
//!
//! - [`tables`]: every table defined once (columns, sort order, statistics), for every reader
//!   and writer;
//! - `store`: the object store behind the lake, from a URL;
//! - [`delta`]: one table: create, write files, commit them with their Kafka offsets (fenced),
//!   list and read active files;
//! - [`frame`]: frames conformed to a table, Parquet bytes, Delta file statistics;
//! - [`snapshot`]: a reader's consistent view of every table at one version each;
//! - [`audit`]: what the audit tables ask of maintenance (the versions approvals read).
//!
//! Layout under the store root: `raw/{service_events,complaint_events,unit_days}/` and
//! `summaries/{services_daily,complaints_daily,unit_days,processing_times}/`, each a Delta table
//! (`_delta_log/` plus Parquet files).

pub mod audit;
pub mod delta;
pub mod frame;
pub mod snapshot;
mod store;
pub mod tables;

pub use delta::{app_id, CommitKind, DeltaError, EncodedFile, FileInfo, LakeTable};
pub use snapshot::Snapshot;
pub use store::{is_unavailable, Store, StoreError};
