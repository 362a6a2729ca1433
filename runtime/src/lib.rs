//! What the producer and the aggregator share that is not the wire format: how to reach Kafka
//! and the guard rails on it. Role crates depend on this and on `owsu-schemas`, never on each
//! other.

pub mod kafka;
