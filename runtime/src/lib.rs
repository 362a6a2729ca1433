//! What every OWSU process shares that is not the wire format and no role owns: how to reach
//! Kafka and the guard rails on it ([`kafka`]), how it logs ([`logging`]), how it ends ([`exit`])
//! and how it lays out a table for the terminal ([`table`]). Role crates depend on this and on
//! `owsu-schemas`, never on each other.

pub mod exit;
pub mod kafka;
pub mod logging;
pub mod table;
