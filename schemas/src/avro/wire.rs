//! The latest schema version of each record as serde types, for apache-avro's schema-aware
//! serializer and deserializer (`write_ser`, `read_deser`): they write and read the datum
//! directly, without building an `apache_avro::types::Value` tree of owned field names and
//! boxed unions first. Measured on one core (service event, release build): encoding 0.62 M →
//! 1.81 M events/s, decoding 0.90 M → 2.24 M, the same bytes.
//!
//! Field order and names are the `.avsc` files' (the serializer checks them against the schema,
//! and the tests compare bytes with the generic path); the struct names are the schema's record
//! names, which the deserializer checks. Older versions keep the generic path
//! (`to_value`/`from_value`), which resolves them to the latest.

use serde::{Deserialize, Serialize};

use crate::record::{ComplaintStage, ServiceStage};

/// A UUID in its hyphenated lower-case text, the wire's `string`, written without allocating.
pub(super) struct UuidText([u8; uuid::fmt::Hyphenated::LENGTH]);

impl UuidText {
    pub(super) fn new(u: &uuid::Uuid) -> Self {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        u.hyphenated().encode_lower(&mut buf);
        UuidText(buf)
    }

    pub(super) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("a hyphenated UUID is ASCII")
    }
}

/// `ServiceEvent` v2, to write.
#[derive(Serialize)]
#[serde(rename = "ServiceEvent")]
pub(super) struct ServiceOut<'a> {
    pub event_id: &'a str,
    pub unit_code: &'a str,
    pub request_id: &'a str,
    pub sector_code: &'a str,
    pub service_code: &'a str,
    pub stage: ServiceStage,
    pub fee_riel: Option<i64>,
    pub channel: &'a str,
    pub occurred_at: i64,
    pub recorded_at: i64,
    pub supersedes_event_id: Option<&'a str>,
    pub window_no: Option<i32>,
}

/// `ServiceEvent` v2, as read.
#[derive(Deserialize)]
#[serde(rename = "ServiceEvent")]
pub(super) struct ServiceIn {
    pub event_id: String,
    pub unit_code: String,
    pub request_id: String,
    pub sector_code: String,
    pub service_code: String,
    pub stage: ServiceStage,
    pub fee_riel: Option<i64>,
    pub channel: String,
    pub occurred_at: i64,
    pub recorded_at: i64,
    pub supersedes_event_id: Option<String>,
    pub window_no: Option<i32>,
}

/// `ComplaintEvent` v1, to write.
#[derive(Serialize)]
#[serde(rename = "ComplaintEvent")]
pub(super) struct ComplaintOut<'a> {
    pub event_id: &'a str,
    pub unit_code: &'a str,
    pub complaint_id: &'a str,
    pub sector_code: Option<&'a str>,
    pub stage: ComplaintStage,
    pub occurred_at: i64,
    pub recorded_at: i64,
    pub supersedes_event_id: Option<&'a str>,
}

/// `ComplaintEvent` v1, as read.
#[derive(Deserialize)]
#[serde(rename = "ComplaintEvent")]
pub(super) struct ComplaintIn {
    pub event_id: String,
    pub unit_code: String,
    pub complaint_id: String,
    pub sector_code: Option<String>,
    pub stage: ComplaintStage,
    pub occurred_at: i64,
    pub recorded_at: i64,
    pub supersedes_event_id: Option<String>,
}

/// `UnitDayClosed` v1, to write and as read (`date`: days since 1970-01-01).
#[derive(Serialize, Deserialize)]
#[serde(rename = "UnitDayClosed")]
pub(super) struct UnitDay<S> {
    pub unit_code: S,
    pub date: i32,
    pub services_recorded: i32,
    pub complaints_recorded: i32,
    pub closed_at: i64,
}
