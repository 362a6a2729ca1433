//! The latest schema versions on the wire, written and read by hand, without apache-avro.
//!
//! apache-avro's generic path builds a `Value` tree of owned field names and boxed unions; its
//! schema-aware serde path (`write_ser`, `read_deser`, used here before) still looks every field
//! up by name in a SipHash map, and matched field names by string comparison when reading:
//! encoding was 12 % of `publish`'s CPU and decoding 6 % of a catch-up's. The bodies of these
//! records are a handful of Avro primitives (zig-zag varints, length-prefixed strings, enum
//! indexes, union branch numbers), so [`write`] and [`read`] handle them directly for the
//! versions in [`WRITTEN_FOR`].
//!
//! The tests compare [`write`]'s bytes with apache-avro's generic writer and [`read`]'s events
//! with its generic reader, for every kind, optional fields set and unset, two-byte lengths,
//! non-ASCII text and integer extremes, and fail when a newer schema version is added without
//! these following it. Any other version goes through apache-avro. [`read`] gives up (`None`)
//! on anything it does not expect, and the caller reads the body again with apache-avro, whose
//! error names the field.

use uuid::Uuid;

use crate::record::{ComplaintEvent, ComplaintStage, Event, RecordKind, ServiceEvent};
use crate::record::{ServiceStage, UnitDayClosed};
use crate::time::{date_to_epoch_day, epoch_day_to_date};

/// The schema version of each kind that [`write`] writes and [`read`] reads: the latest of each
/// (a test fails when a newer one is added, until both follow it).
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
            put_optional(out, e.fee_riel, long);
            string(out, &e.channel);
            long(out, e.occurred_at);
            long(out, e.recorded_at);
            put_optional(out, e.supersedes_event_id.as_ref(), uuid);
            put_optional(out, e.window_no.map(i64::from), long);
        }
        Event::Complaint(e) => {
            uuid(out, &e.event_id);
            string(out, &e.unit_code);
            string(out, &e.complaint_id);
            put_optional(out, e.sector_code.as_deref(), string);
            long(out, e.stage.index().into());
            long(out, e.occurred_at);
            long(out, e.recorded_at);
            put_optional(out, e.supersedes_event_id.as_ref(), uuid);
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

/// A `["null", T]` union: branch 0 and nothing, or branch 1 and the value.
fn put_optional<T>(out: &mut Vec<u8>, v: Option<T>, put: fn(&mut Vec<u8>, T)) {
    match v {
        None => long(out, 0),
        Some(v) => {
            long(out, 1);
            put(out, v);
        }
    }
}

/// Reads a body of the [`WRITTEN_FOR`] version of `kind`'s schema from the front of `body`,
/// advancing it; `None` on anything else (a truncated body, a bad branch, enum index, UTF-8 or
/// UUID, an `int` out of range).
pub(super) fn read(kind: RecordKind, body: &mut &[u8]) -> Option<Event> {
    let r = body;
    Some(match kind {
        RecordKind::Service => Event::Service(ServiceEvent {
            event_id: read_uuid(r)?,
            unit_code: read_string(r)?,
            request_id: read_string(r)?,
            sector_code: read_string(r)?,
            service_code: read_string(r)?,
            stage: *ServiceStage::ALL.get(usize::try_from(read_long(r)?).ok()?)?,
            fee_riel: optional(r, read_long)?,
            channel: read_string(r)?,
            occurred_at: read_long(r)?,
            recorded_at: read_long(r)?,
            supersedes_event_id: optional(r, read_uuid)?,
            window_no: optional(r, read_int)?,
        }),
        RecordKind::Complaint => Event::Complaint(ComplaintEvent {
            event_id: read_uuid(r)?,
            unit_code: read_string(r)?,
            complaint_id: read_string(r)?,
            sector_code: optional(r, read_string)?,
            stage: *ComplaintStage::ALL.get(usize::try_from(read_long(r)?).ok()?)?,
            occurred_at: read_long(r)?,
            recorded_at: read_long(r)?,
            supersedes_event_id: optional(r, read_uuid)?,
        }),
        RecordKind::UnitDay => Event::UnitDay(UnitDayClosed {
            unit_code: read_string(r)?,
            date: epoch_day_to_date(read_int(r)?),
            services_recorded: read_int(r)?,
            complaints_recorded: read_int(r)?,
            closed_at: read_long(r)?,
        }),
    })
}

/// An Avro `long`: at most ten bytes of 7 bits, low bits first, then zig-zag.
fn read_long(r: &mut &[u8]) -> Option<i64> {
    let mut z: u64 = 0;
    for shift in (0..70).step_by(7) {
        let (&b, rest) = r.split_first()?;
        *r = rest;
        z |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some((z >> 1) as i64 ^ -((z & 1) as i64));
        }
    }
    None
}

/// An Avro `int`: a `long` in the 32-bit range.
fn read_int(r: &mut &[u8]) -> Option<i32> {
    i32::try_from(read_long(r)?).ok()
}

/// The bytes of an Avro `string` or `bytes`.
fn read_bytes<'a>(r: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(read_long(r)?).ok()?;
    if len > r.len() {
        return None;
    }
    let (bytes, rest) = r.split_at(len);
    *r = rest;
    Some(bytes)
}

fn read_string(r: &mut &[u8]) -> Option<String> {
    std::str::from_utf8(read_bytes(r)?).ok().map(str::to_owned)
}

/// A UUID's text in any form the `uuid` crate parses (as apache-avro's reader accepts).
fn read_uuid(r: &mut &[u8]) -> Option<Uuid> {
    Uuid::try_parse_ascii(read_bytes(r)?).ok()
}

/// A `["null", T]` union.
fn optional<T>(r: &mut &[u8], read: fn(&mut &[u8]) -> Option<T>) -> Option<Option<T>> {
    match read_long(r)? {
        0 => Some(None),
        1 => read(r).map(Some),
        _ => None,
    }
}
