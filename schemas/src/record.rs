//! The three records of DESIGN.md, as Rust types. Field names match the `.avsc` files and the
//! import format (snake_case); instants are [`Millis`] in UTC.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::time::Millis;

/// Which record a message or an import line holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Service,
    Complaint,
    UnitDay,
}

impl RecordKind {
    pub const ALL: [RecordKind; 3] = [
        RecordKind::Service,
        RecordKind::Complaint,
        RecordKind::UnitDay,
    ];

    /// The name used in the import format's `kind` field.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Service => "service",
            RecordKind::Complaint => "complaint",
            RecordKind::UnitDay => "unit_day",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The topic (without deployment prefix) this kind is published to.
    pub fn topic(self) -> &'static str {
        match self {
            RecordKind::Service => crate::topics::SERVICE_EVENTS,
            RecordKind::Complaint => crate::topics::COMPLAINT_EVENTS,
            RecordKind::UnitDay => crate::topics::UNIT_DAYS,
        }
    }

    /// The Avro record's full name.
    pub fn avro_name(self) -> &'static str {
        match self {
            RecordKind::Service => "kh.gov.moi.owsu.ServiceEvent",
            RecordKind::Complaint => "kh.gov.moi.owsu.ComplaintEvent",
            RecordKind::UnitDay => "kh.gov.moi.owsu.UnitDayClosed",
        }
    }
}

macro_rules! stage_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The Avro enum symbol.
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $text),+ } }
            pub fn parse(s: &str) -> Option<Self> { Self::ALL.iter().copied().find(|v| v.as_str() == s) }
            /// Position in the Avro enum's symbol list.
            pub fn index(self) -> u32 { self as u32 }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

stage_enum!(
    /// Stage of a service request. Order matches the Avro symbols.
    ServiceStage {
        Received = "RECEIVED",
        FeePaid = "FEE_PAID",
        Approved = "APPROVED",
        Rejected = "REJECTED",
        Delivered = "DELIVERED",
        Cancelled = "CANCELLED",
    }
);

stage_enum!(
    /// Step of a complaint. Jurisdiction decisions and status changes share one enum on the wire.
    ComplaintStage {
        Received = "RECEIVED",
        WithinJurisdiction = "WITHIN_JURISDICTION",
        OutsideJurisdiction = "OUTSIDE_JURISDICTION",
        MoreInfoRequired = "MORE_INFO_REQUIRED",
        Resolved = "RESOLVED",
        Withdrawn = "WITHDRAWN",
    }
);

/// One stage of one service request (schema `ServiceEvent`, latest version v2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEvent {
    pub event_id: Uuid,
    pub unit_code: String,
    /// Pseudonymous: a keyed hash of the office's request number.
    pub request_id: String,
    pub sector_code: String,
    pub service_code: String,
    pub stage: ServiceStage,
    /// Integer riel, on FEE_PAID only; negative for a refund.
    pub fee_riel: Option<i64>,
    pub channel: String,
    pub occurred_at: Millis,
    pub recorded_at: Millis,
    pub supersedes_event_id: Option<Uuid>,
    /// Added in v2; absent (None) in v1 data.
    pub window_no: Option<i32>,
}

/// One step of one complaint (schema `ComplaintEvent` v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComplaintEvent {
    pub event_id: Uuid,
    pub unit_code: String,
    /// Pseudonymous: a keyed hash of the office's complaint number.
    pub complaint_id: String,
    pub sector_code: Option<String>,
    pub stage: ComplaintStage,
    pub occurred_at: Millis,
    pub recorded_at: Millis,
    pub supersedes_event_id: Option<Uuid>,
}

/// A unit closes a working day with its own counts (schema `UnitDayClosed` v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitDayClosed {
    pub unit_code: String,
    pub date: NaiveDate,
    /// Service events the unit recorded that day (by `recorded_at`, Cambodia time).
    pub services_recorded: i32,
    /// Complaint events the unit recorded that day.
    pub complaints_recorded: i32,
    pub closed_at: Millis,
}

/// Any of the three records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Service(ServiceEvent),
    Complaint(ComplaintEvent),
    UnitDay(UnitDayClosed),
}

impl Event {
    pub fn kind(&self) -> RecordKind {
        match self {
            Event::Service(_) => RecordKind::Service,
            Event::Complaint(_) => RecordKind::Complaint,
            Event::UnitDay(_) => RecordKind::UnitDay,
        }
    }

    /// The Kafka key: events of one unit stay in order on one partition.
    pub fn unit_code(&self) -> &str {
        match self {
            Event::Service(e) => &e.unit_code,
            Event::Complaint(e) => &e.unit_code,
            Event::UnitDay(e) => &e.unit_code,
        }
    }

    /// A unique identity for deduplication; unit-days are identified by unit and date.
    pub fn identity(&self) -> String {
        match self {
            Event::Service(e) => e.event_id.to_string(),
            Event::Complaint(e) => e.event_id.to_string(),
            Event::UnitDay(e) => format!("{}/{}", e.unit_code, e.date),
        }
    }
}
