//! The aggregator: a Kafka consumer group that lands raw events exactly once and keeps the
//! columnar summaries up to date.
//!
//! - [`pipeline`]: the consumer loop; raw and summary commits carry the Kafka offsets (the lake
//!   says where to resume) and are fenced against a partition's previous owner;
//! - `flush`: what batches leave for the lake, committed on size or time (raw files, summary
//!   files), each commit fenced by the offsets the table holds;
//! - `gaps`: offsets Kafka deleted before the lake held them: refused, or accepted and recorded;
//! - `raw`: events as rows of the lake's raw tables;
//! - [`state`]: per-partition state on disk (redb): events, corrections and the summary cells,
//!   snapshotted to the lake's store so a new owner restores it without reading raw history;
//! - [`summary`]: the summary tables' rows, a pure function of the cells;
//! - `maintenance` (reached through [`cli`]): rebuild, compact, vacuum;
//! - `metrics`: typed telemetry and the Prometheus endpoint;
//! - [`service`]: the pipeline as a service: compaction beside it, metrics and health, signals;
//! - [`cli`]: the `owsu-aggregator` command.

pub mod cli;
mod flush;
mod gaps;
mod kafka;
pub(crate) mod maintenance;
mod metrics;
pub mod pipeline;
mod raw;
mod restore;
pub mod service;
pub mod state;
pub mod summary;
