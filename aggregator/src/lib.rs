//! The aggregator: a Kafka consumer group that lands raw events exactly once and keeps the
//! columnar summaries up to date.
//!
//! - [`pipeline`]: the consumer loop and its ordering guarantees (files durable, then commit);
//! - [`raw`]: raw landing in Parquet, named by Kafka offsets;
//! - [`summary`]: per-partition state and the summary tables, a pure function of raw;
//! - [`metrics`]: typed telemetry and the Prometheus endpoint;
//! - [`cli`]: the `owsu-aggregator` command.

pub mod cli;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod raw;
pub mod summary;
