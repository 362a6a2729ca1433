//! `owsu`: the umbrella command over the roles' crates.
//!
//! - [`demo`]: `owsu demo`, the whole pipeline end to end on one machine;
//! - `bench` (reached through [`demo`]'s command line): `owsu bench`, speed and memory against Kafka's perf tools and DuckDB;
//! - [`secure`]: the secure local deployment (TLS, SCRAM principals, ACLs, signing keys)
//!   that `owsu demo --secure` and the bench's secure figures run on;
//! - [`truth`]: the oversight list against the simulator's planted problems.
//!
//! It is the one crate that depends on the producer, the aggregator and the jobs; none of them
//! depends on another.

mod bench;
pub mod demo;
pub mod secure;
pub mod truth;
