//! `owsu`: the umbrella command over the roles' crates.
//!
//! - [`demo`]: `owsu demo`, the whole pipeline end to end on one machine;
//! - [`bench`]: `owsu bench`, speed and memory against Kafka's perf tools and DuckDB;
//! - [`truth`]: the oversight list against the simulator's planted problems.
//!
//! It is the one crate that depends on the producer, the aggregator and the jobs; none of them
//! depends on another.

pub mod bench;
pub mod demo;
pub mod truth;
