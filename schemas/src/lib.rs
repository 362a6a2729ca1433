//! The OWSU pipeline's wire format and reference data, and nothing else.
//!
//! Every process depends on this crate and on nothing of each other's:
//! - [`record`]: the three event records (`ServiceEvent`, `ComplaintEvent`, `UnitDayClosed`);
//! - [`avro`]: Avro single-object encoding against every schema version kept in `schemas/avro/`;
//! - [`validate`](mod@validate): the rules a record must pass, with errors that name the field and value;
//! - [`anomaly`]: business-rule anomalies, counted and flagged rather than refused;
//! - [`reference`](mod@reference): the unit registry, sector/service catalogue and holiday calendar, loaded
//!   from data files at run time so the ministry edits them without a rebuild;
//! - [`ids`]: pseudonymous request/complaint ids (HMAC) and content-derived event ids (the
//!   versioned canonical form of an event, [`ids::CANONICAL_FORM_VERSION`]);
//! - [`signing`]: Ed25519 office keys, the signature header of each message, and its check
//!   against the public keys of the reference data;
//! - [`time`]: Cambodia-time periods (UTC+07:00), which every figure is counted in.

pub mod anomaly;
pub mod avro;
pub mod ids;
pub mod record;
pub mod reference;
pub mod signing;
pub mod time;
pub mod validate;

pub use anomaly::{Flags, Rule};

/// A hash map with a fast, fixed hash (foldhash), for maps looked up for every event whose keys
/// no event can choose to crowd a bucket: codes of the reference files, schema fingerprints,
/// counters of our own, ids already spread by hashing. SipHash, std's default, was 1.3 % of a
/// catch-up's CPU.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;
pub use avro::{decode, encode, DecodeError, EncodeError};
pub use record::{
    ComplaintEvent, ComplaintStage, Event, RecordKind, ServiceEvent, ServiceStage, UnitDayClosed,
};
pub use reference::{Catalogue, Holidays, Level, Reference, ReferenceError, Registry, Unit};
pub use validate::{validate, ValidationError};

/// Kafka topic names of DESIGN.md. A deployment (or a test) may put a prefix in front.
pub mod topics {
    /// Topic of [`ServiceEvent`](crate::ServiceEvent) messages.
    pub const SERVICE_EVENTS: &str = "owsu.service-events.v1";
    /// Topic of [`ComplaintEvent`](crate::ComplaintEvent) messages.
    pub const COMPLAINT_EVENTS: &str = "owsu.complaint-events.v1";
    /// Topic of [`UnitDayClosed`](crate::UnitDayClosed) messages.
    pub const UNIT_DAYS: &str = "owsu.unit-days.v1";
    /// Topic the aggregator writes refused messages to, with a `reason` header.
    pub const DEAD_LETTER: &str = "owsu.dead-letter.v1";
}

/// Riel per US dollar used when reports also show dollars. Stated in every report that uses it.
pub const RIEL_PER_USD: i64 = 4_100;
