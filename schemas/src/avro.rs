//! Avro single-object encoding (`C3 01` + 8-byte little-endian CRC-64-AVRO fingerprint + body).
//!
//! Every schema version ever published is compiled in from `schemas/avro/*.avsc`. The decoder
//! picks the writer schema by the fingerprint in the message and resolves the body to the
//! reader's schema (the latest version of that record), so any producer version can talk to
//! any consumer version. Encoding always uses the latest version. Readers and writers are
//! built once per schema and reused: re-resolving a schema per message is apache-avro's slow
//! path (apache/avro-rs#310).
//!
//! Fingerprints follow the Avro specification's Parsing Canonical Form, so other Avro
//! libraries compute the same ones ([`parsing_canonical_form`]).

use std::sync::OnceLock;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use uuid::Uuid;

use crate::record::{
    ComplaintEvent, ComplaintStage, Event, RecordKind, ServiceEvent, ServiceStage, UnitDayClosed,
};
use crate::time::{date_to_epoch_day, epoch_day_to_date};
use crate::FastMap;

mod wire;

/// Marker of Avro single-object encoding.
pub const MAGIC: [u8; 2] = [0xC3, 0x01];
const HEADER_LEN: usize = 10;

/// One `.avsc` file: every version stays here forever, newest last per kind.
pub struct SchemaFile {
    /// The record this schema describes.
    pub kind: RecordKind,
    /// Version number of the schema within its kind, from 1.
    pub version: u32,
    /// File name in `schemas/avro/`.
    pub file_name: &'static str,
    /// The schema's JSON text, compiled in.
    pub json: &'static str,
}

/// All published schema versions. Adding a version: add the file here, keep it compatible both
/// ways (new fields optional with defaults), and the tests in this module check it.
pub const SCHEMA_FILES: &[SchemaFile] = &[
    SchemaFile {
        kind: RecordKind::Service,
        version: 1,
        file_name: "service_event.v1.avsc",
        json: include_str!("../avro/service_event.v1.avsc"),
    },
    SchemaFile {
        kind: RecordKind::Service,
        version: 2,
        file_name: "service_event.v2.avsc",
        json: include_str!("../avro/service_event.v2.avsc"),
    },
    SchemaFile {
        kind: RecordKind::Complaint,
        version: 1,
        file_name: "complaint_event.v1.avsc",
        json: include_str!("../avro/complaint_event.v1.avsc"),
    },
    SchemaFile {
        kind: RecordKind::UnitDay,
        version: 1,
        file_name: "unit_day_closed.v1.avsc",
        json: include_str!("../avro/unit_day_closed.v1.avsc"),
    },
];

/// Why a message does not decode to an [`Event`].
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the 10-byte header (magic and fingerprint).
    #[error("message of {len} bytes is too short for Avro single-object encoding (needs at least {HEADER_LEN})")]
    TooShort {
        /// Length of the message in bytes.
        len: usize,
    },
    /// The first two bytes are not [`MAGIC`].
    #[error("not Avro single-object encoding: first bytes are {found:02X?}, expected C3 01")]
    BadMagic {
        /// The first two bytes of the message.
        found: [u8; 2],
    },
    /// The fingerprint is not one of [`SCHEMA_FILES`]; from `SchemaSet::decode_as` (tests), also a
    /// reader version that does not exist.
    #[error("unknown writer schema: fingerprint {fingerprint} is not one of the schema versions in schemas/avro/")]
    UnknownSchema {
        /// The fingerprint in hex, or `<kind> v<version>` for a missing reader version.
        fingerprint: String,
    },
    /// The body does not decode against the writer schema (or resolve to the reader's), or
    /// bytes are left over after the record.
    #[error("{kind} v{version} body does not decode: {detail}")]
    Body {
        /// The record kind's import-format name.
        kind: &'static str,
        /// The schema version concerned (0 when unknown).
        version: u32,
        /// apache-avro's message, or what is wrong.
        detail: String,
    },
    /// The record decodes, but a field is missing or holds a value the Rust type cannot take
    /// (a string that is not a UUID, a symbol that is not a stage).
    #[error("field `{field}`: {problem}")]
    Field {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// Why an event does not encode.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// apache-avro refused the value for the schema.
    #[error("{kind} does not encode against its schema: {detail}")]
    Avro {
        /// The record kind's import-format name.
        kind: &'static str,
        /// apache-avro's message.
        detail: String,
    },
    /// No schema file of this version exists for the kind.
    #[error("no schema version {version} for {kind}")]
    NoSuchVersion {
        /// The record kind's import-format name.
        kind: &'static str,
        /// The version asked for.
        version: u32,
    },
}

/// A parsed schema with its fingerprint.
pub struct KnownSchema {
    /// The `.avsc` file it was parsed from.
    pub file: &'static SchemaFile,
    /// The parsed schema (kept for the life of the process).
    pub schema: &'static Schema,
    /// CRC-64-AVRO of the Parsing Canonical Form, little-endian, as on the wire.
    pub fingerprint: [u8; 8],
}

/// Parsed schemas, one resolved reader per writer version, one writer per version.
///
/// Built once by [`schema_set`]. Building panics if a kept schema does not parse, does not
/// resolve to the latest version, or shares a fingerprint with another (the tests check
/// that none does).
pub struct SchemaSet {
    /// Every schema of [`SCHEMA_FILES`], in that order.
    pub known: Vec<KnownSchema>,
    /// By fingerprint: the schema's index in `known` and its reader (resolving to the latest
    /// version of its kind; the latest versions themselves are read by [`wire::read`] first).
    readers: FastMap<[u8; 8], (usize, GenericDatumReader<'static>)>,
    writers: Vec<GenericDatumWriter<'static>>,
}

impl SchemaSet {
    fn build() -> Self {
        let known: Vec<KnownSchema> = SCHEMA_FILES
            .iter()
            .map(|file| {
                let schema = Schema::parse_str(file.json).unwrap_or_else(|e| {
                    panic!("schemas/avro/{} does not parse: {e}", file.file_name)
                });
                // Schemas live for the whole process; leaking them lets readers borrow them.
                let schema: &'static Schema = Box::leak(Box::new(schema));
                let fingerprint =
                    crc64_avro(parsing_canonical_form(schema).as_bytes()).to_le_bytes();
                KnownSchema {
                    file,
                    schema,
                    fingerprint,
                }
            })
            .collect();
        let mut readers = FastMap::default();
        let mut writers = Vec::new();
        for (i, k) in known.iter().enumerate() {
            let latest = Self::latest_in(&known, k.file.kind);
            // Written with the latest version there is nothing to resolve: the datum is read
            // as written. Resolving anyway (apache-avro resolves a value against the reader
            // schema field by field) was half the decoding time of the aggregator.
            let resolve_to = (k.fingerprint != latest.fingerprint).then_some(latest.schema);
            // Human-readable serde: a UUID is its text, as the schemas' `string` fields hold it.
            let reader = GenericDatumReader::builder(k.schema)
                .maybe_reader_schema(resolve_to)
                .human_readable(true)
                .build()
                .unwrap_or_else(|e| {
                    panic!(
                        "{} cannot be resolved to the latest version: {e}",
                        k.file.file_name
                    )
                });
            let previous = readers.insert(k.fingerprint, (i, reader));
            assert!(
                previous.is_none(),
                "two schema files share a fingerprint: {}",
                k.file.file_name
            );
            writers.push(
                GenericDatumWriter::builder(k.schema)
                    .human_readable(true)
                    .build()
                    .unwrap_or_else(|e| panic!("{}: {e}", k.file.file_name)),
            );
        }
        SchemaSet {
            known,
            readers,
            writers,
        }
    }

    fn latest_in(known: &[KnownSchema], kind: RecordKind) -> &KnownSchema {
        known
            .iter()
            .filter(|k| k.file.kind == kind)
            .max_by_key(|k| k.file.version)
            .expect("every kind has a schema")
    }

    /// The newest schema of a kind: what encoders write and decoders resolve to.
    pub fn latest(&self, kind: RecordKind) -> &KnownSchema {
        Self::latest_in(&self.known, kind)
    }

    fn index_of(&self, kind: RecordKind, version: u32) -> Result<usize, EncodeError> {
        self.known
            .iter()
            .position(|k| k.file.kind == kind && k.file.version == version)
            .ok_or(EncodeError::NoSuchVersion {
                kind: kind.as_str(),
                version,
            })
    }

    /// Encodes with the latest version of the record's schema.
    pub fn encode(&self, event: &Event) -> Result<Vec<u8>, EncodeError> {
        let version = self.latest(event.kind()).file.version;
        self.encode_version(event, version)
    }

    /// Encodes with a given schema version (older producers, compatibility tests); fields
    /// the version lacks (`window_no` before v2) are left out.
    pub fn encode_version(&self, event: &Event, version: u32) -> Result<Vec<u8>, EncodeError> {
        let kind = event.kind();
        let idx = self.index_of(kind, version)?;
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.known[idx].fingerprint);
        if wire::WRITTEN_FOR.contains(&(kind, version)) {
            wire::write(&mut out, event);
            return Ok(out);
        }
        self.writers[idx]
            .write_value_ref(&mut out, &to_value(event, version))
            .map_err(|e| EncodeError::Avro {
                kind: kind.as_str(),
                detail: e.to_string(),
            })?;
        Ok(out)
    }

    /// Decodes any known version, resolved to the latest reader schema. Bytes left over after
    /// the record are an error.
    pub fn decode(&self, bytes: &[u8]) -> Result<Event, DecodeError> {
        let (fingerprint, mut body) = split_header(bytes)?;
        let (idx, reader) =
            self.readers
                .get(&fingerprint)
                .ok_or_else(|| DecodeError::UnknownSchema {
                    fingerprint: hex::encode(fingerprint),
                })?;
        let file = self.known[*idx].file;
        if wire::WRITTEN_FOR.contains(&(file.kind, file.version)) {
            let mut fast = body;
            // A body that does not read this way is read again the generic way below, whose
            // errors name the field.
            if let Some(event) = wire::read(file.kind, &mut fast) {
                if fast.is_empty() {
                    return Ok(event);
                }
            }
        }
        let value = reader
            .read_value(&mut body)
            .map_err(|e| DecodeError::Body {
                kind: file.kind.as_str(),
                version: file.version,
                detail: e.to_string(),
            })?;
        if !body.is_empty() {
            return Err(DecodeError::Body {
                kind: file.kind.as_str(),
                version: file.version,
                detail: format!("{} bytes left over after the record", body.len()),
            });
        }
        from_value(file.kind, value)
    }

    /// Decodes with an explicit reader version, as an older consumer would. Builds a reader
    /// per call (slow) and, unlike [`SchemaSet::decode`], ignores bytes left over.
    #[cfg(test)]
    pub(crate) fn decode_as(
        &self,
        bytes: &[u8],
        reader_version: u32,
    ) -> Result<Event, DecodeError> {
        let (fingerprint, mut body) = split_header(bytes)?;
        let (idx, _) =
            self.readers
                .get(&fingerprint)
                .ok_or_else(|| DecodeError::UnknownSchema {
                    fingerprint: hex::encode(fingerprint),
                })?;
        let writer = &self.known[*idx];
        let kind = writer.file.kind;
        let target = self
            .known
            .iter()
            .find(|k| k.file.kind == kind && k.file.version == reader_version)
            .ok_or_else(|| DecodeError::UnknownSchema {
                fingerprint: format!("{} v{reader_version}", kind.as_str()),
            })?;
        let reader = GenericDatumReader::builder(writer.schema)
            .reader_schema(target.schema)
            .build()
            .map_err(|e| DecodeError::Body {
                kind: kind.as_str(),
                version: reader_version,
                detail: e.to_string(),
            })?;
        let value = reader
            .read_value(&mut body)
            .map_err(|e| DecodeError::Body {
                kind: kind.as_str(),
                version: writer.file.version,
                detail: e.to_string(),
            })?;
        from_value(kind, value)
    }
}

fn split_header(bytes: &[u8]) -> Result<([u8; 8], &[u8]), DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::TooShort { len: bytes.len() });
    }
    if bytes[..2] != MAGIC {
        return Err(DecodeError::BadMagic {
            found: [bytes[0], bytes[1]],
        });
    }
    let fingerprint: [u8; 8] = bytes[2..HEADER_LEN].try_into().expect("8 bytes");
    Ok((fingerprint, &bytes[HEADER_LEN..]))
}

/// The schema's Parsing Canonical Form as the Avro specification defines it.
///
/// apache-avro 0.22's `canonical_form()` leaves a primitive with a logical type as
/// `{"type":"long"}`, where the specification's PRIMITIVES rule (and Java, Python fastavro, ...)
/// reduce it to `"long"`; its fingerprints then disagree with every other Avro library's. In
/// canonical form an object whose only attribute is `type` with a primitive name can only be such
/// a primitive, so rewriting exactly those objects gives the specified form.
pub fn parsing_canonical_form(schema: &Schema) -> String {
    let mut form = schema.canonical_form();
    for p in [
        "null", "boolean", "int", "long", "float", "double", "bytes", "string",
    ] {
        form = form.replace(&format!(r#"{{"type":"{p}"}}"#), &format!(r#""{p}""#));
    }
    form
}

/// CRC-64-AVRO (the Rabin fingerprint of the Avro specification).
pub(crate) fn crc64_avro(bytes: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    static TABLE: OnceLock<[u64; 256]> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u64; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (EMPTY & 0u64.wrapping_sub(fp & 1));
            }
            *slot = fp;
        }
        t
    });
    bytes.iter().fold(EMPTY, |fp, b| {
        (fp >> 8) ^ table[((fp ^ *b as u64) & 0xff) as usize]
    })
}

/// The process-wide schema set, built on first use.
pub fn schema_set() -> &'static SchemaSet {
    static SET: OnceLock<SchemaSet> = OnceLock::new();
    SET.get_or_init(SchemaSet::build)
}

/// Encodes an event with the latest schema of its kind.
pub fn encode(event: &Event) -> Result<Vec<u8>, EncodeError> {
    schema_set().encode(event)
}

/// Decodes a single-object-encoded message of any known schema version.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    schema_set().decode(bytes)
}

fn parse_uuid(field: &'static str, s: &str) -> Result<Uuid, DecodeError> {
    Uuid::parse_str(s).map_err(|e| DecodeError::Field {
        field,
        problem: format!("{s:?} is not a UUID: {e}"),
    })
}

fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(x) => Value::Union(1, Box::new(f(x))),
    }
}

fn to_value(event: &Event, version: u32) -> Value {
    let s = |x: &str| Value::String(x.to_owned());
    let fields: Vec<(String, Value)> = match event {
        Event::Service(e) => {
            let mut f = vec![
                ("event_id".into(), Value::String(e.event_id.to_string())),
                ("unit_code".into(), s(&e.unit_code)),
                ("request_id".into(), s(&e.request_id)),
                ("sector_code".into(), s(&e.sector_code)),
                ("service_code".into(), s(&e.service_code)),
                (
                    "stage".into(),
                    Value::Enum(e.stage.index(), e.stage.as_str().into()),
                ),
                ("fee_riel".into(), opt(e.fee_riel, Value::Long)),
                ("channel".into(), s(&e.channel)),
                ("occurred_at".into(), Value::TimestampMillis(e.occurred_at)),
                ("recorded_at".into(), Value::TimestampMillis(e.recorded_at)),
                (
                    "supersedes_event_id".into(),
                    opt(e.supersedes_event_id, |u| Value::String(u.to_string())),
                ),
            ];
            if version >= 2 {
                f.push(("window_no".into(), opt(e.window_no, Value::Int)));
            }
            f
        }
        Event::Complaint(e) => vec![
            ("event_id".into(), Value::String(e.event_id.to_string())),
            ("unit_code".into(), s(&e.unit_code)),
            ("complaint_id".into(), s(&e.complaint_id)),
            (
                "sector_code".into(),
                opt(e.sector_code.as_deref(), |x| Value::String(x.to_owned())),
            ),
            (
                "stage".into(),
                Value::Enum(e.stage.index(), e.stage.as_str().into()),
            ),
            ("occurred_at".into(), Value::TimestampMillis(e.occurred_at)),
            ("recorded_at".into(), Value::TimestampMillis(e.recorded_at)),
            (
                "supersedes_event_id".into(),
                opt(e.supersedes_event_id, |u| Value::String(u.to_string())),
            ),
        ],
        Event::UnitDay(e) => vec![
            ("unit_code".into(), s(&e.unit_code)),
            ("date".into(), Value::Date(date_to_epoch_day(e.date))),
            ("services_recorded".into(), Value::Int(e.services_recorded)),
            (
                "complaints_recorded".into(),
                Value::Int(e.complaints_recorded),
            ),
            ("closed_at".into(), Value::TimestampMillis(e.closed_at)),
        ],
    };
    Value::Record(fields)
}

/// Field access on a resolved record, with errors that name the field.
struct Fields(Vec<(String, Value)>);

impl Fields {
    fn take(&mut self, name: &'static str) -> Result<Value, DecodeError> {
        let pos = self
            .0
            .iter()
            .position(|(n, _)| n == name)
            .ok_or(DecodeError::Field {
                field: name,
                problem: "missing".into(),
            })?;
        Ok(std::mem::replace(&mut self.0[pos].1, Value::Null))
    }

    fn string(&mut self, name: &'static str) -> Result<String, DecodeError> {
        match unwrap_union(self.take(name)?) {
            Value::String(s) => Ok(s),
            Value::Uuid(u) => Ok(u.to_string()),
            other => Err(wrong(name, "a string", &other)),
        }
    }

    fn opt_string(&mut self, name: &'static str) -> Result<Option<String>, DecodeError> {
        match unwrap_union(self.take(name)?) {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            Value::Uuid(u) => Ok(Some(u.to_string())),
            other => Err(wrong(name, "a string or null", &other)),
        }
    }

    fn uuid(&mut self, name: &'static str) -> Result<Uuid, DecodeError> {
        parse_uuid(name, &self.string(name)?)
    }

    fn opt_uuid(&mut self, name: &'static str) -> Result<Option<Uuid>, DecodeError> {
        self.opt_string(name)?
            .map(|s| parse_uuid(name, &s))
            .transpose()
    }

    fn long(&mut self, name: &'static str) -> Result<i64, DecodeError> {
        match unwrap_union(self.take(name)?) {
            Value::Long(v) | Value::TimestampMillis(v) | Value::TimestampMicros(v) => Ok(v),
            Value::Int(v) => Ok(v as i64),
            other => Err(wrong(name, "a long", &other)),
        }
    }

    fn opt_long(&mut self, name: &'static str) -> Result<Option<i64>, DecodeError> {
        match unwrap_union(self.take(name)?) {
            Value::Null => Ok(None),
            Value::Long(v) => Ok(Some(v)),
            Value::Int(v) => Ok(Some(v as i64)),
            other => Err(wrong(name, "a long or null", &other)),
        }
    }

    fn int(&mut self, name: &'static str) -> Result<i32, DecodeError> {
        match unwrap_union(self.take(name)?) {
            Value::Int(v) | Value::Date(v) => Ok(v),
            other => Err(wrong(name, "an int", &other)),
        }
    }

    fn opt_int(&mut self, name: &'static str) -> Result<Option<i32>, DecodeError> {
        match self.0.iter().any(|(n, _)| n == name) {
            false => Ok(None),
            true => match unwrap_union(self.take(name)?) {
                Value::Null => Ok(None),
                Value::Int(v) => Ok(Some(v)),
                other => Err(wrong(name, "an int or null", &other)),
            },
        }
    }

    fn symbol(&mut self, name: &'static str) -> Result<String, DecodeError> {
        match unwrap_union(self.take(name)?) {
            Value::Enum(_, s) | Value::String(s) => Ok(s),
            other => Err(wrong(name, "an enum symbol", &other)),
        }
    }
}

fn unwrap_union(v: Value) -> Value {
    match v {
        Value::Union(_, inner) => *inner,
        other => other,
    }
}

fn wrong(field: &'static str, expected: &str, got: &Value) -> DecodeError {
    DecodeError::Field {
        field,
        problem: format!("expected {expected}, found {got:?}"),
    }
}

fn from_value(kind: RecordKind, value: Value) -> Result<Event, DecodeError> {
    let Value::Record(fields) = value else {
        return Err(DecodeError::Body {
            kind: kind.as_str(),
            version: 0,
            detail: "not a record".into(),
        });
    };
    let mut f = Fields(fields);
    Ok(match kind {
        RecordKind::Service => {
            let stage = f.symbol("stage")?;
            Event::Service(ServiceEvent {
                event_id: f.uuid("event_id")?,
                unit_code: f.string("unit_code")?,
                request_id: f.string("request_id")?,
                sector_code: f.string("sector_code")?,
                service_code: f.string("service_code")?,
                stage: ServiceStage::parse(&stage).ok_or(DecodeError::Field {
                    field: "stage",
                    problem: format!("{stage:?} is not a service stage"),
                })?,
                fee_riel: f.opt_long("fee_riel")?,
                channel: f.string("channel")?,
                occurred_at: f.long("occurred_at")?,
                recorded_at: f.long("recorded_at")?,
                supersedes_event_id: f.opt_uuid("supersedes_event_id")?,
                window_no: f.opt_int("window_no")?,
            })
        }
        RecordKind::Complaint => {
            let stage = f.symbol("stage")?;
            Event::Complaint(ComplaintEvent {
                event_id: f.uuid("event_id")?,
                unit_code: f.string("unit_code")?,
                complaint_id: f.string("complaint_id")?,
                sector_code: f.opt_string("sector_code")?,
                stage: ComplaintStage::parse(&stage).ok_or(DecodeError::Field {
                    field: "stage",
                    problem: format!("{stage:?} is not a complaint stage"),
                })?,
                occurred_at: f.long("occurred_at")?,
                recorded_at: f.long("recorded_at")?,
                supersedes_event_id: f.opt_uuid("supersedes_event_id")?,
            })
        }
        RecordKind::UnitDay => Event::UnitDay(UnitDayClosed {
            unit_code: f.string("unit_code")?,
            date: epoch_day_to_date(f.int("date")?),
            services_recorded: f.int("services_recorded")?,
            complaints_recorded: f.int("complaints_recorded")?,
            closed_at: f.long("closed_at")?,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    pub(crate) fn service() -> ServiceEvent {
        ServiceEvent {
            event_id: Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0),
            unit_code: "KH-0101".into(),
            request_id: "a1b2".into(),
            sector_code: "COM".into(),
            service_code: "COM-TRADE-LIC".into(),
            stage: ServiceStage::FeePaid,
            fee_riel: Some(120_000),
            channel: "counter".into(),
            occurred_at: 1_620_000_000_000,
            recorded_at: 1_620_000_060_000,
            supersedes_event_id: Some(Uuid::from_u128(7)),
            window_no: Some(3),
        }
    }

    #[test]
    fn every_record_round_trips_through_the_latest_schema() {
        let events = vec![
            Event::Service(service()),
            Event::Complaint(ComplaintEvent {
                event_id: Uuid::from_u128(9),
                unit_code: "KH-12".into(),
                complaint_id: "c1".into(),
                sector_code: None,
                stage: ComplaintStage::OutsideJurisdiction,
                occurred_at: 1,
                recorded_at: 2,
                supersedes_event_id: None,
            }),
            Event::UnitDay(UnitDayClosed {
                unit_code: "KH-12".into(),
                date: NaiveDate::from_ymd_opt(2021, 3, 4).unwrap(),
                services_recorded: 17,
                complaints_recorded: 0,
                closed_at: 1_614_850_000_000,
            }),
        ];
        for e in events {
            let bytes = encode(&e).unwrap();
            assert_eq!(&bytes[..2], &MAGIC);
            assert_eq!(decode(&bytes).unwrap(), e);
        }
    }

    /// Every kind, with its optional fields set and unset.
    fn variety() -> Vec<Event> {
        let mut bare = service();
        bare.fee_riel = None;
        bare.supersedes_event_id = None;
        bare.window_no = None;
        bare.stage = ServiceStage::Cancelled;
        let complaint = ComplaintEvent {
            event_id: Uuid::from_u128(9),
            unit_code: "KH-12".into(),
            complaint_id: "c1".into(),
            sector_code: Some("LMC".into()),
            stage: ComplaintStage::Withdrawn,
            occurred_at: -5,
            recorded_at: i64::MAX,
            supersedes_event_id: Some(Uuid::from_u128(u128::MAX)),
        };
        let bare_complaint = ComplaintEvent {
            sector_code: None,
            supersedes_event_id: None,
            stage: ComplaintStage::Received,
            ..complaint.clone()
        };
        // Lengths past 63 bytes take two varint bytes (a request id is 64 hex digits); text
        // beyond ASCII counts in bytes; the extremes of every integer.
        let mut long = service();
        long.request_id = "f".repeat(64);
        long.channel = "អនឡាញ".into();
        long.unit_code = "x".repeat(200);
        long.fee_riel = Some(i64::MIN);
        long.occurred_at = i64::MAX;
        long.recorded_at = -1;
        long.window_no = Some(i32::MIN);
        long.stage = ServiceStage::Received;
        vec![
            Event::Service(service()),
            Event::Service(bare),
            Event::Service(long),
            Event::Complaint(complaint),
            Event::Complaint(bare_complaint),
            Event::UnitDay(UnitDayClosed {
                unit_code: "KH-1201".into(),
                date: NaiveDate::from_ymd_opt(1969, 12, 31).unwrap(),
                services_recorded: i32::MAX,
                complaints_recorded: -1,
                closed_at: 0,
            }),
        ]
    }

    #[test]
    fn the_hand_written_encoder_follows_the_latest_versions() {
        let set = schema_set();
        for kind in RecordKind::ALL {
            let latest = set.latest(kind).file.version;
            assert!(
                wire::WRITTEN_FOR.contains(&(kind, latest)),
                "{} v{latest} is the latest schema: make avro/wire.rs `write` write it (and \
                 WRITTEN_FOR name it), or publishing falls back to the slow generic writer",
                kind.as_str()
            );
        }
    }

    #[test]
    fn the_latest_versions_are_written_and_read_as_the_generic_path_does() {
        let set = schema_set();
        for e in variety() {
            let latest = set.latest(e.kind());
            let idx = set.index_of(e.kind(), latest.file.version).unwrap();
            let fast = encode(&e).unwrap();
            let mut generic = Vec::from(MAGIC);
            generic.extend_from_slice(&latest.fingerprint);
            set.writers[idx]
                .write_value_ref(&mut generic, &to_value(&e, latest.file.version))
                .unwrap();
            assert_eq!(fast, generic, "{e:?}");
            let (_, reader) = &set.readers[&latest.fingerprint];
            let mut body = &fast[HEADER_LEN..];
            let read = wire::read(e.kind(), &mut body).unwrap();
            assert!(body.is_empty());
            let mut body = &fast[HEADER_LEN..];
            let value = reader.read_value(&mut body).unwrap();
            assert_eq!(read, from_value(e.kind(), value).unwrap());
            assert_eq!(read, e);
        }
    }

    #[test]
    fn every_stage_goes_by_hand_to_the_schema_symbol_of_its_name() {
        let set = schema_set();
        let mut events: Vec<Event> = ServiceStage::ALL
            .iter()
            .map(|&stage| Event::Service(ServiceEvent { stage, ..service() }))
            .collect();
        for &stage in ComplaintStage::ALL {
            events.push(Event::Complaint(ComplaintEvent {
                event_id: Uuid::from_u128(9),
                unit_code: "KH-12".into(),
                complaint_id: "c1".into(),
                sector_code: None,
                stage,
                occurred_at: 1,
                recorded_at: 2,
                supersedes_event_id: None,
            }));
        }
        for e in events {
            let latest = set.latest(e.kind());
            let (_, reader) = &set.readers[&latest.fingerprint];
            let bytes = encode(&e).unwrap();
            let mut body = &bytes[HEADER_LEN..];
            let value = reader.read_value(&mut body).unwrap();
            assert_eq!(from_value(e.kind(), value).unwrap(), e);
        }
    }

    #[test]
    fn the_hand_written_reader_refuses_what_the_generic_reader_refuses_and_never_panics() {
        let set = schema_set();
        for e in variety() {
            let latest = set.latest(e.kind());
            let (_, reader) = &set.readers[&latest.fingerprint];
            let bytes = encode(&e).unwrap();
            let body = &bytes[HEADER_LEN..];
            // Every truncation and every single-byte change: whatever the hand-written reader
            // accepts whole, the generic reader reads the same; what it refuses, decode
            // reports as an error of the generic reader, or reads the same.
            let mut bodies: Vec<Vec<u8>> = (0..body.len()).map(|n| body[..n].to_vec()).collect();
            for i in 0..body.len() {
                for b in [0x00, 0x01, 0x02, 0x7f, 0x80, 0xff, b'-', b'g'] {
                    let mut changed = body.to_vec();
                    changed[i] = b;
                    bodies.push(changed);
                }
            }
            for b in bodies {
                let mut fast = b.as_slice();
                let by_hand = wire::read(e.kind(), &mut fast).filter(|_| fast.is_empty());
                let mut slow = b.as_slice();
                let generic = reader
                    .read_value(&mut slow)
                    .ok()
                    .filter(|_| slow.is_empty())
                    .and_then(|v| from_value(e.kind(), v).ok());
                if let Some(read) = by_hand {
                    assert_eq!(Some(read), generic, "{b:?}");
                }
            }
        }
    }

    /// [`service`] in the latest version, written by apache-avro's generic writer with `text`
    /// as its `event_id`.
    fn service_with_event_id_text(text: &str) -> Vec<u8> {
        let set = schema_set();
        let latest = set.latest(RecordKind::Service);
        let idx = set
            .index_of(RecordKind::Service, latest.file.version)
            .unwrap();
        let mut value = to_value(&Event::Service(service()), latest.file.version);
        if let Value::Record(fields) = &mut value {
            fields[0].1 = Value::String(text.into());
        }
        let mut bytes = Vec::from(MAGIC);
        bytes.extend_from_slice(&latest.fingerprint);
        set.writers[idx]
            .write_value_ref(&mut bytes, &value)
            .unwrap();
        bytes
    }

    #[test]
    fn a_uuid_in_another_form_reads_the_same_both_ways() {
        let e = Event::Service(service());
        let bytes = service_with_event_id_text("123456789ABCDEF0123456789ABCDEF0");
        let mut body = &bytes[HEADER_LEN..];
        assert_eq!(wire::read(RecordKind::Service, &mut body), Some(e.clone()));
        assert_eq!(decode(&bytes).unwrap(), e);
    }

    #[test]
    fn a_bad_uuid_or_left_over_bytes_are_named_on_the_fast_path_too() {
        let bytes = service_with_event_id_text("not-a-uuid");
        let err = decode(&bytes).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Field { field: "event_id", problem } if problem.contains("not-a-uuid")),
            "{err}"
        );
        let mut longer = encode(&Event::Service(service())).unwrap();
        longer.push(0);
        let err = decode(&longer).unwrap_err();
        assert!(err.to_string().contains("1 bytes left over"), "{err}");
    }

    #[test]
    fn v1_reader_reads_v2_data_and_v2_reader_reads_v1_data() {
        let set = schema_set();
        let e = Event::Service(service());
        // v2 writer, v1 reader: the added field is dropped, everything else is intact.
        let v2 = set.encode_version(&e, 2).unwrap();
        let Event::Service(read_v1) = set.decode_as(&v2, 1).unwrap() else {
            panic!("kind")
        };
        assert_eq!(
            read_v1,
            ServiceEvent {
                window_no: None,
                ..service()
            }
        );
        // v1 writer, v2 reader: the added field takes its default.
        let v1 = set.encode_version(&e, 1).unwrap();
        assert_ne!(
            v1[2..10],
            v2[2..10],
            "versions must have different fingerprints"
        );
        let Event::Service(read_v2) = set.decode(&v1).unwrap() else {
            panic!("kind")
        };
        assert_eq!(read_v2.window_no, None);
        assert_eq!(read_v2.fee_riel, Some(120_000));
    }

    #[test]
    fn every_kept_version_is_compatible_both_ways_with_the_latest() {
        use apache_avro::schema_compatibility::SchemaCompatibility;
        let set = schema_set();
        for k in &set.known {
            let latest = set.latest(k.file.kind);
            SchemaCompatibility::can_read(k.schema, latest.schema)
                .unwrap_or_else(|e| panic!("latest cannot read {}: {e}", k.file.file_name));
            SchemaCompatibility::can_read(latest.schema, k.schema)
                .unwrap_or_else(|e| panic!("{} cannot read latest: {e}", k.file.file_name));
        }
    }

    #[test]
    fn fingerprints_follow_the_specification() {
        // Test vector from Python fastavro: `fingerprint(to_parsing_canonical_form(s), "CRC-64-AVRO")`
        // prints the wire bytes, 55e2106eccfc0903.
        let set = schema_set();
        let k = set.latest(RecordKind::UnitDay);
        assert_eq!(
            parsing_canonical_form(k.schema),
            r#"{"name":"kh.gov.moi.owsu.UnitDayClosed","type":"record","fields":[{"name":"unit_code","type":"string"},{"name":"date","type":"int"},{"name":"services_recorded","type":"int"},{"name":"complaints_recorded","type":"int"},{"name":"closed_at","type":"long"}]}"#
        );
        assert_eq!(
            crc64_avro(parsing_canonical_form(k.schema).as_bytes()),
            0x0309_fccc_6e10_e255
        );
        assert_eq!(
            k.fingerprint,
            [0x55, 0xe2, 0x10, 0x6e, 0xcc, 0xfc, 0x09, 0x03],
            "stored little-endian on the wire"
        );
    }

    #[test]
    fn bad_messages_say_what_is_wrong() {
        assert!(matches!(
            decode(&[1, 2, 3]),
            Err(DecodeError::TooShort { len: 3 })
        ));
        assert!(matches!(
            decode(b"{\"json\": true}"),
            Err(DecodeError::BadMagic { .. })
        ));
        let mut unknown = encode(&Event::Service(service())).unwrap();
        unknown[5] ^= 0xFF;
        let err = decode(&unknown).unwrap_err();
        assert!(err.to_string().contains("unknown writer schema"), "{err}");
        let mut truncated = encode(&Event::Service(service())).unwrap();
        truncated.truncate(20);
        assert!(matches!(decode(&truncated), Err(DecodeError::Body { .. })));
    }
}
