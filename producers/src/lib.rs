//! Office producers: import an office system's export or simulate a national year, validate and
//! pseudonymise every record, and publish it to Kafka through a durable outbox.
//!
//! - [`import`]: the import format (JSON lines / CSV) with errors naming file, line and field;
//! - `outbox`: fsync'd on-disk queue; nothing leaves it before Kafka acknowledges it;
//! - [`publish`]: idempotent `acks=all` producer draining the outbox;
//! - [`simulate`]: a calibrated, deterministic year for all 228 units, with planted problems;
//! - [`commands`]: what `publish` and `simulate` do, as typed functions the CLI and the umbrella
//!   both call;
//! - [`cli`]: the `owsu-producer` command.

pub mod cli;
pub mod commands;
pub mod import;
pub mod kafka;
mod outbox;
pub mod publish;
pub mod simulate;
