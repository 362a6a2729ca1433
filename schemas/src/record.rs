//! The three records of DESIGN.md, as Rust types. Field names match the `.avsc` files and the
//! import format (snake_case); instants are [`Millis`] in UTC.
//!
//! These types only hold values: they check nothing. [`crate::validate()`] decides whether a
//! record may be published or counted, and [`crate::avro`] puts it on the wire.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::time::Millis;

/// Which record a message or an import line holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A [`ServiceEvent`].
    Service,
    /// A [`ComplaintEvent`].
    Complaint,
    /// A [`UnitDayClosed`].
    UnitDay,
}

impl RecordKind {
    /// Every kind, in declaration order.
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

    /// The kind named `s` in the import format (`service`, `complaint`, `unit_day`);
    /// `None` for any other text.
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
}

macro_rules! stage_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* #[serde(rename = $text)] $variant),+ }

        impl $name {
            /// Every stage, in the order of the Avro enum's symbols.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The Avro enum symbol.
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $text),+ } }
            /// The stage whose Avro symbol is exactly `s` (case-sensitive); `None` otherwise.
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
        /// The unit received the request; the first RECEIVED starts processing time.
        Received = "RECEIVED",
        /// A fee was paid, or refunded (negative `fee_riel`); the only stage with a fee.
        FeePaid = "FEE_PAID",
        /// The request was approved.
        Approved = "APPROVED",
        /// The request was rejected.
        Rejected = "REJECTED",
        /// The service was delivered; the first DELIVERED ends processing time.
        Delivered = "DELIVERED",
        /// The request was cancelled.
        Cancelled = "CANCELLED",
    }
);

stage_enum!(
    /// Step of a complaint. Jurisdiction decisions and status changes share one enum on the wire.
    ComplaintStage {
        /// The office received the complaint; it is counted where its first RECEIVED falls.
        Received = "RECEIVED",
        /// Jurisdiction decision: within the office's jurisdiction.
        WithinJurisdiction = "WITHIN_JURISDICTION",
        /// Jurisdiction decision: outside the office's jurisdiction.
        OutsideJurisdiction = "OUTSIDE_JURISDICTION",
        /// Status: more information is required.
        MoreInfoRequired = "MORE_INFO_REQUIRED",
        /// Status: resolved (implies within jurisdiction).
        Resolved = "RESOLVED",
        /// Status: withdrawn.
        Withdrawn = "WITHDRAWN",
    }
);

/// One stage of one service request (schema `ServiceEvent`, latest version v2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEvent {
    /// Unique per event; a duplicate id is counted once.
    pub event_id: Uuid,
    /// Reporting unit, `KH-PP` or `KH-PPDD` (a code of the unit registry).
    pub unit_code: String,
    /// Pseudonymous: a keyed hash of the office's request number.
    pub request_id: String,
    /// Sector of the service (a catalogue sector code).
    pub sector_code: String,
    /// Service requested (a catalogue service code).
    pub service_code: String,
    /// The stage of the request this event records.
    pub stage: ServiceStage,
    /// Integer riel, on FEE_PAID only; negative for a refund.
    pub fee_riel: Option<i64>,
    /// How the request came in: counter, online, phone or other (not checked).
    pub channel: String,
    /// When the stage happened, UTC milliseconds.
    pub occurred_at: Millis,
    /// When the office system recorded it, UTC milliseconds.
    pub recorded_at: Millis,
    /// Set on a correction: the `event_id` this event replaces.
    pub supersedes_event_id: Option<Uuid>,
    /// The counter window that handled the request, when known.
    /// Added in v2; absent (None) in v1 data.
    pub window_no: Option<i32>,
}

/// One step of one complaint (schema `ComplaintEvent` v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComplaintEvent {
    /// Unique per event; a duplicate id is counted once.
    pub event_id: Uuid,
    /// Reporting unit whose Ombudsman office holds the complaint.
    pub unit_code: String,
    /// Pseudonymous: a keyed hash of the office's complaint number.
    pub complaint_id: String,
    /// Sector complained about, when known (a catalogue sector code).
    pub sector_code: Option<String>,
    /// The step of the complaint this event records.
    pub stage: ComplaintStage,
    /// When the step happened, UTC milliseconds.
    pub occurred_at: Millis,
    /// When the office system recorded it, UTC milliseconds.
    pub recorded_at: Millis,
    /// Set on a correction: the `event_id` this event replaces.
    pub supersedes_event_id: Option<Uuid>,
}

/// A unit closes a working day with its own counts (schema `UnitDayClosed` v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitDayClosed {
    /// Reporting unit that closed the day.
    pub unit_code: String,
    /// The working day closed, a Cambodia calendar day.
    pub date: NaiveDate,
    /// Service events the unit recorded that day (by `recorded_at`, Cambodia time).
    pub services_recorded: i32,
    /// Complaint events the unit recorded that day.
    pub complaints_recorded: i32,
    /// When the day was closed, UTC milliseconds; a later close of the same day replaces
    /// an earlier one.
    pub closed_at: Millis,
}

/// Any of the three records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A stage of a service request.
    Service(ServiceEvent),
    /// A step of a complaint.
    Complaint(ComplaintEvent),
    /// A unit's close of a working day.
    UnitDay(UnitDayClosed),
}

impl Event {
    /// Which of the three records this is.
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

    /// A unique identity for deduplication: the `event_id` in hyphenated form, or for a
    /// unit-day `<unit_code>/<date>` (e.g. `KH-0101/2021-03-04`).
    pub fn identity(&self) -> String {
        match self {
            Event::Service(e) => e.event_id.to_string(),
            Event::Complaint(e) => e.event_id.to_string(),
            Event::UnitDay(e) => format!("{}/{}", e.unit_code, e.date),
        }
    }
}
