//! The latest schema versions on the wire without apache-avro's generic `Value` tree: written
//! by hand ([`write`]), read through apache-avro's schema-aware serde reader (`read_deser`),
//! which reads the datum directly. Measured on one core (service event, release build):
//! decoding 0.90 M → 1.79 M events/s through serde.
//!
//! Writing: apache-avro's serde writer (`write_ser`) took encoding from 0.62 M to 1.72 M events/s
//! but still looked each field's name up in a SipHash map and probed a second map for fields
//! received out of order, per field: 12 % of `publish`'s CPU. The body of these records is a
//! handful of Avro primitives (zig-zag varints, length-prefixed strings, union branch numbers),
//! so [`write`] writes them directly for the versions in [`WRITTEN_FOR`]; the tests compare its
//! bytes with apache-avro's generic writer for every kind, optional fields set and unset, and
//! fail when a newer schema version is added without it. Any other version goes through the
//! generic writer.
//!
//! [`ServiceEvent`](crate::record::ServiceEvent) and
//! [`ComplaintEvent`](crate::record::ComplaintEvent) are their own wire types: their serde form
//! has the schemas' record names, fields and order, and (the writers and readers being
//! human-readable) a UUID as its hyphenated text; the tests compare the bytes with the generic
//! path's. A day closure's date is an Avro `date` (days since 1970-01-01) on the wire and a
//! calendar date in Rust, hence [`UnitDay`]. Older versions keep the generic path
//! (`to_value`/`from_value`), which resolves them to the latest.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::record::{Event, RecordKind};
use crate::time::date_to_epoch_day;

/// `UnitDayClosed` v1 (`date`: days since 1970-01-01), as read.
#[derive(Serialize, Deserialize)]
#[serde(rename = "UnitDayClosed")]
pub(super) struct UnitDay<S> {
    pub unit_code: S,
    pub date: i32,
    pub services_recorded: i32,
    pub complaints_recorded: i32,
    pub closed_at: i64,
}

/// The schema version of each kind that [`write`] writes: the latest of each (a test fails
/// when a newer one is added, until `write` follows it).
pub(super) const WRITTEN_FOR: [(RecordKind, u32); 3] = [
    (RecordKind::Service, 2),
    (RecordKind::Complaint, 1),
    (RecordKind::UnitDay, 1),
];

/// Appends `event`'s Avro body in the [`WRITTEN_FOR`] version of its schema, field by field in
/// the schema's order.
pub(super) fn write(out: &mut Vec<u8>, event: &Event) {
    match event {
        Event::Service(e) => {
            uuid(out, &e.event_id);
            string(out, &e.unit_code);
            string(out, &e.request_id);
            string(out, &e.sector_code);
            string(out, &e.service_code);
            long(out, e.stage.index().into());
            match e.fee_riel {
                None => long(out, 0),
                Some(fee) => {
                    long(out, 1);
                    long(out, fee);
                }
            }
            string(out, &e.channel);
            long(out, e.occurred_at);
            long(out, e.recorded_at);
            optional_uuid(out, e.supersedes_event_id.as_ref());
            match e.window_no {
                None => long(out, 0),
                Some(w) => {
                    long(out, 1);
                    long(out, w.into());
                }
            }
        }
        Event::Complaint(e) => {
            uuid(out, &e.event_id);
            string(out, &e.unit_code);
            string(out, &e.complaint_id);
            match &e.sector_code {
                None => long(out, 0),
                Some(s) => {
                    long(out, 1);
                    string(out, s);
                }
            }
            long(out, e.stage.index().into());
            long(out, e.occurred_at);
            long(out, e.recorded_at);
            optional_uuid(out, e.supersedes_event_id.as_ref());
        }
        Event::UnitDay(e) => {
            string(out, &e.unit_code);
            long(out, date_to_epoch_day(e.date).into());
            long(out, e.services_recorded.into());
            long(out, e.complaints_recorded.into());
            long(out, e.closed_at);
        }
    }
}

/// An Avro `long` (and `int`, enum index, union branch, length): zig-zag, then 7 bits a byte,
/// low bits first.
fn long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// An Avro `string`: its length in bytes, then its UTF-8.
fn string(out: &mut Vec<u8>, s: &str) {
    long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

/// A UUID as the schemas carry it: a `string` of its lower-case hyphenated text.
fn uuid(out: &mut Vec<u8>, id: &Uuid) {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    string(out, id.hyphenated().encode_lower(&mut text));
}

/// A `["null", "string"]` union holding a UUID or nothing.
fn optional_uuid(out: &mut Vec<u8>, id: Option<&Uuid>) {
    match id {
        None => long(out, 0),
        Some(id) => {
            long(out, 1);
            uuid(out, id);
        }
    }
}
