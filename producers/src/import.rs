//! The import format of DESIGN.md: what an office system exports.
//!
//! JSON lines (`{"kind": "service", ...}` one per line) or CSV (one kind per file, the same
//! column names). Timestamps are RFC 3339 with an offset, money integer riel. `request_id` and
//! `complaint_id` are the office's own numbers: [`pseudonymise`] replaces them by keyed hashes
//! before anything is stored or sent, and a missing `event_id` is derived from the record's
//! content and its occurrence in the export ([`ExportIds`]), so importing the same file twice
//! counts once while two identical lines of one export stay two events.
//!
//! Parse errors never quote `request_id` / `complaint_id` values: they are citizen-linked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use owsu_schemas::ids::{derive_event_id, IdHasher};
use owsu_schemas::record::{ComplaintEvent, Event, RecordKind, ServiceEvent, UnitDayClosed};
use owsu_schemas::time::{parse_rfc3339, to_rfc3339};
use owsu_schemas::validate::{complaint_stage, service_stage};
use rayon::prelude::*;
use serde_json::{Map, Value};
use uuid::Uuid;

/// A record that could not be read, with where and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}:{line}: {}{reason}", file.display(), field.map(|f| format!("field `{f}`: ")).unwrap_or_default())]
pub struct RecordError {
    /// The export file the record is in.
    pub file: PathBuf,
    /// 1-based line number in that file (in a CSV file, line 1 is the header).
    pub line: u64,
    /// The field at fault, when one is.
    pub field: Option<&'static str>,
    /// What is wrong, for the office to fix; never quotes a case number.
    pub reason: String,
}

/// File formats the importer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// JSON lines: one JSON object per line, each with a `kind` field.
    Jsonl,
    /// CSV with a header line of field names, one record kind per file.
    Csv,
}

impl Format {
    /// By extension: `.csv` is CSV, anything else JSON lines.
    pub fn from_path(p: &Path) -> Self {
        match p.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("csv") => Format::Csv,
            _ => Format::Jsonl,
        }
    }
}

const SERVICE_FIELDS: &[&str] = &[
    "kind",
    "event_id",
    "unit_code",
    "request_id",
    "sector_code",
    "service_code",
    "stage",
    "fee_riel",
    "channel",
    "occurred_at",
    "recorded_at",
    "supersedes_event_id",
    "window_no",
];
const COMPLAINT_FIELDS: &[&str] = &[
    "kind",
    "event_id",
    "unit_code",
    "complaint_id",
    "sector_code",
    "stage",
    "occurred_at",
    "recorded_at",
    "supersedes_event_id",
];
const UNIT_DAY_FIELDS: &[&str] = &[
    "kind",
    "unit_code",
    "date",
    "services_recorded",
    "complaints_recorded",
    "closed_at",
];

/// The fields a record of `kind` may have.
fn fields_of(kind: RecordKind) -> &'static [&'static str] {
    match kind {
        RecordKind::Service => SERVICE_FIELDS,
        RecordKind::Complaint => COMPLAINT_FIELDS,
        RecordKind::UnitDay => UNIT_DAY_FIELDS,
    }
}

/// Field reader over one record (a JSON object, or a CSV row turned into one with string values).
struct Obj<'a> {
    map: &'a Map<String, Value>,
}

type FieldResult<T> = Result<T, (Option<&'static str>, String)>;

impl Obj<'_> {
    fn raw(&self, f: &'static str) -> Option<&Value> {
        match self.map.get(f) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(v) => Some(v),
        }
    }
    fn opt_str(&self, f: &'static str) -> FieldResult<Option<String>> {
        match self.raw(f) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err((Some(f), "must be a string".into())),
        }
    }
    fn str(&self, f: &'static str) -> FieldResult<String> {
        self.opt_str(f)?.ok_or((Some(f), "is required".into()))
    }
    fn opt_i64(&self, f: &'static str) -> FieldResult<Option<i64>> {
        match self.raw(f) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or((Some(f), format!("{n} is not an integer"))),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| (Some(f), format!("{s:?} is not an integer"))),
            Some(v) => Err((Some(f), format!("{v} is not an integer"))),
        }
    }
    fn i32(&self, f: &'static str) -> FieldResult<i32> {
        let v = self
            .opt_i64(f)?
            .ok_or((Some(f), "is required".to_string()))?;
        i32::try_from(v).map_err(|_| (Some(f), format!("{v} is out of range")))
    }
    fn time(&self, f: &'static str) -> FieldResult<i64> {
        let s = self.str(f)?;
        parse_rfc3339(&s).map_err(|e| {
            (
                Some(f),
                format!("{s:?} is not RFC 3339 with an offset ({e})"),
            )
        })
    }
    fn opt_uuid(&self, f: &'static str) -> FieldResult<Option<Uuid>> {
        match self.opt_str(f)? {
            None => Ok(None),
            Some(s) => Uuid::parse_str(&s)
                .map(Some)
                .map_err(|_| (Some(f), format!("{s:?} is not a UUID"))),
        }
    }
}

/// Parses one record object into an event whose ids are still the office's own
/// (call [`pseudonymise`] next). A missing `event_id` is left nil.
pub fn parse_object(
    map: &Map<String, Value>,
    default_kind: Option<RecordKind>,
) -> FieldResult<Event> {
    let o = Obj { map };
    let kind = match o.opt_str("kind")? {
        Some(k) => RecordKind::parse(&k).ok_or((
            Some("kind"),
            format!("{k:?} is not service, complaint or unit_day"),
        ))?,
        None => default_kind.ok_or((
            Some("kind"),
            "is required (or pass --kind for a CSV file)".to_string(),
        ))?,
    };
    let allowed = fields_of(kind);
    if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err((
            None,
            format!("unknown field `{unknown}` for a {} record", kind.as_str()),
        ));
    }
    let stage_err = |e: owsu_schemas::ValidationError| {
        (Some("stage"), e.to_string().replace("field `stage`: ", ""))
    };
    Ok(match kind {
        RecordKind::Service => {
            let occurred_at = o.time("occurred_at")?;
            Event::Service(ServiceEvent {
                event_id: o.opt_uuid("event_id")?.unwrap_or_default(),
                unit_code: o.str("unit_code")?,
                request_id: o.str("request_id")?,
                sector_code: o.str("sector_code")?,
                service_code: o.str("service_code")?,
                stage: service_stage(&o.str("stage")?).map_err(stage_err)?,
                fee_riel: o.opt_i64("fee_riel")?,
                channel: o.opt_str("channel")?.unwrap_or_else(|| "counter".into()),
                occurred_at,
                recorded_at: if o.raw("recorded_at").is_some() {
                    o.time("recorded_at")?
                } else {
                    occurred_at
                },
                supersedes_event_id: o.opt_uuid("supersedes_event_id")?,
                window_no: o.opt_i64("window_no")?.map(|v| v as i32),
            })
        }
        RecordKind::Complaint => {
            let occurred_at = o.time("occurred_at")?;
            Event::Complaint(ComplaintEvent {
                event_id: o.opt_uuid("event_id")?.unwrap_or_default(),
                unit_code: o.str("unit_code")?,
                complaint_id: o.str("complaint_id")?,
                sector_code: o.opt_str("sector_code")?,
                stage: complaint_stage(&o.str("stage")?).map_err(stage_err)?,
                occurred_at,
                recorded_at: if o.raw("recorded_at").is_some() {
                    o.time("recorded_at")?
                } else {
                    occurred_at
                },
                supersedes_event_id: o.opt_uuid("supersedes_event_id")?,
            })
        }
        RecordKind::UnitDay => {
            let d = o.str("date")?;
            Event::UnitDay(UnitDayClosed {
                unit_code: o.str("unit_code")?,
                date: NaiveDate::parse_from_str(&d, "%Y-%m-%d")
                    .map_err(|_| (Some("date"), format!("{d:?} is not YYYY-MM-DD")))?,
                services_recorded: o.i32("services_recorded")?,
                complaints_recorded: o.i32("complaints_recorded")?,
                closed_at: o.time("closed_at")?,
            })
        }
    })
}

/// The common case of a JSON line read without a `serde_json::Value` tree: a record whose
/// fields are each of their plain JSON type (strings non-empty, integers as numbers) and all
/// allowed for its kind, read straight into borrowed fields. Anything else — a null, an empty
/// string, a number given as text, an unknown or repeated field, a value that does not parse —
/// gives `None`, and the line is read again by [`parse_object`], which decides and words every
/// error: both paths give the same event for the lines this one takes (tested), and this one
/// never refuses a line. About twice as fast as building the `Value` (which, with
/// `preserve_order` on through other crates, hashes every key into an index map).
mod fast {
    use owsu_schemas::record::{ComplaintEvent, Event, RecordKind, ServiceEvent, UnitDayClosed};
    use owsu_schemas::time::parse_rfc3339;
    use owsu_schemas::validate::{complaint_stage, service_stage};
    use serde::Deserialize;
    use uuid::Uuid;

    /// Borrowed from the line: a string with a backslash escape does not borrow, and goes to
    /// the slow path like any other surprise.
    type Text<'a> = Option<&'a str>;

    /// Every field of the three kinds: `None` when absent. A field present with `null` does
    /// not deserialize ([`present`]), so the line goes to [`super::parse_object`], for which a
    /// present field counts against the kind's allowed fields even when null.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Record<'a> {
        #[serde(borrow, default, deserialize_with = "present")]
        kind: Text<'a>,
        #[serde(borrow, default, deserialize_with = "present")]
        event_id: Text<'a>,
        #[serde(borrow, default, deserialize_with = "present")]
        unit_code: Text<'a>,
        #[serde(borrow, default, deserialize_with = "present")]
        request_id: Text<'a>,
        #[serde(borrow, default, deserialize_with = "present")]
        complaint_id: Text<'a>,
        #[serde(borrow, default, deserialize_with = "present")]
        sector_code: Text<'a>,
        #[serde(borrow, default, deserialize_with = "present")]
        service_code: Text<'a>,
        #[serde(borrow, default, deserialize_with = "present")]
        stage: Text<'a>,
        #[serde(default, deserialize_with = "present")]
        fee_riel: Option<i64>,
        #[serde(borrow, default, deserialize_with = "present")]
        channel: Text<'a>,
        #[serde(borrow, default, deserialize_with = "present")]
        occurred_at: Text<'a>,
        #[serde(borrow, default, deserialize_with = "present")]
        recorded_at: Text<'a>,
        #[serde(borrow, default, deserialize_with = "present")]
        supersedes_event_id: Text<'a>,
        #[serde(default, deserialize_with = "present")]
        window_no: Option<i64>,
        #[serde(borrow, default, deserialize_with = "present")]
        date: Text<'a>,
        #[serde(default, deserialize_with = "present")]
        services_recorded: Option<i64>,
        #[serde(default, deserialize_with = "present")]
        complaints_recorded: Option<i64>,
        #[serde(borrow, default, deserialize_with = "present")]
        closed_at: Text<'a>,
    }

    /// [`Record`]'s fields by name, in the order of [`Record::present`]'s bits.
    const NAMES: [&str; 18] = [
        "kind",
        "event_id",
        "unit_code",
        "request_id",
        "complaint_id",
        "sector_code",
        "service_code",
        "stage",
        "fee_riel",
        "channel",
        "occurred_at",
        "recorded_at",
        "supersedes_event_id",
        "window_no",
        "date",
        "services_recorded",
        "complaints_recorded",
        "closed_at",
    ];

    impl Record<'_> {
        /// A bit per field present, in the order of [`NAMES`].
        fn present(&self) -> u32 {
            [
                self.kind.is_some(),
                self.event_id.is_some(),
                self.unit_code.is_some(),
                self.request_id.is_some(),
                self.complaint_id.is_some(),
                self.sector_code.is_some(),
                self.service_code.is_some(),
                self.stage.is_some(),
                self.fee_riel.is_some(),
                self.channel.is_some(),
                self.occurred_at.is_some(),
                self.recorded_at.is_some(),
                self.supersedes_event_id.is_some(),
                self.window_no.is_some(),
                self.date.is_some(),
                self.services_recorded.is_some(),
                self.complaints_recorded.is_some(),
                self.closed_at.is_some(),
            ]
            .iter()
            .enumerate()
            .fold(0, |bits, (i, there)| bits | (u32::from(*there) << i))
        }
    }

    /// The bits of [`NAMES`] that a record of `kind` may have, from the kind's field list
    /// (one definition for both paths), worked out once.
    fn allowed(kind: RecordKind) -> u32 {
        static MASKS: std::sync::OnceLock<[u32; 3]> = std::sync::OnceLock::new();
        let masks = MASKS.get_or_init(|| {
            RecordKind::ALL.map(|k| {
                super::fields_of(k).iter().fold(0, |bits, f| {
                    let i = NAMES
                        .iter()
                        .position(|n| n == f)
                        .expect("a field of Record");
                    bits | 1 << i
                })
            })
        });
        masks[kind as usize]
    }

    /// A field that is there: its value, which must not be null.
    fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: serde::Deserializer<'de>,
        T: Deserialize<'de>,
    {
        T::deserialize(d).map(Some)
    }

    /// A present, non-empty text (an empty one is "absent" to [`super::parse_object`]).
    fn text<'b>(t: &Text<'b>) -> Option<Option<&'b str>> {
        match *t {
            Some("") => None,
            other => Some(other),
        }
    }

    fn required<'b>(t: &Text<'b>) -> Option<&'b str> {
        text(t)?
    }

    fn time(t: &Text<'_>) -> Option<i64> {
        parse_rfc3339(required(t)?).ok()
    }

    fn uuid(t: &Text<'_>) -> Option<Option<Uuid>> {
        match text(t)? {
            None => Some(None),
            Some(s) => Uuid::parse_str(s).ok().map(Some),
        }
    }

    /// The event of `line`, or `None` when [`super::parse_object`] must read it.
    pub(super) fn parse(line: &str, default_kind: Option<RecordKind>) -> Option<Event> {
        let r: Record<'_> = serde_json::from_str(line).ok()?;
        let kind = match text(&r.kind)? {
            Some(k) => RecordKind::parse(k)?,
            None => default_kind?,
        };
        // Fields of another kind: `parse_object` names the first.
        let foreign = r.present() & !allowed(kind) != 0;
        if foreign {
            return None;
        }
        Some(match kind {
            RecordKind::Service => {
                let occurred_at = time(&r.occurred_at)?;
                Event::Service(ServiceEvent {
                    event_id: uuid(&r.event_id)?.unwrap_or_default(),
                    unit_code: required(&r.unit_code)?.to_owned(),
                    request_id: required(&r.request_id)?.to_owned(),
                    sector_code: required(&r.sector_code)?.to_owned(),
                    service_code: required(&r.service_code)?.to_owned(),
                    stage: service_stage(required(&r.stage)?).ok()?,
                    fee_riel: r.fee_riel,
                    channel: text(&r.channel)?.unwrap_or("counter").to_owned(),
                    occurred_at,
                    recorded_at: match text(&r.recorded_at)? {
                        Some(_) => time(&r.recorded_at)?,
                        None => occurred_at,
                    },
                    supersedes_event_id: uuid(&r.supersedes_event_id)?,
                    window_no: r.window_no.map(|v| v as i32),
                })
            }
            RecordKind::Complaint => {
                let occurred_at = time(&r.occurred_at)?;
                Event::Complaint(ComplaintEvent {
                    event_id: uuid(&r.event_id)?.unwrap_or_default(),
                    unit_code: required(&r.unit_code)?.to_owned(),
                    complaint_id: required(&r.complaint_id)?.to_owned(),
                    sector_code: text(&r.sector_code)?.map(str::to_owned),
                    stage: complaint_stage(required(&r.stage)?).ok()?,
                    occurred_at,
                    recorded_at: match text(&r.recorded_at)? {
                        Some(_) => time(&r.recorded_at)?,
                        None => occurred_at,
                    },
                    supersedes_event_id: uuid(&r.supersedes_event_id)?,
                })
            }
            RecordKind::UnitDay => Event::UnitDay(UnitDayClosed {
                unit_code: required(&r.unit_code)?.to_owned(),
                date: chrono::NaiveDate::parse_from_str(required(&r.date)?, "%Y-%m-%d").ok()?,
                services_recorded: i32::try_from(r.services_recorded?).ok()?,
                complaints_recorded: i32::try_from(r.complaints_recorded?).ok()?,
                closed_at: time(&r.closed_at)?,
            }),
        })
    }
}

/// Fields of an office's record that identify a citizen's case and never leave the office in
/// clear (Kafka carries their keyed hash, see [`pseudonymise`]).
pub(crate) const CASE_NUMBER_FIELDS: [&str; 2] = ["request_id", "complaint_id"];

/// A rejected line as the rejects file may show it: the JSON object with its case numbers
/// withheld (the file and line number identify it for the office), or nothing when the line is
/// not a JSON object, since it could hold anything.
pub(crate) fn redacted(line: &str) -> Option<Value> {
    let mut v: Value = serde_json::from_str(line).ok()?;
    let o = v.as_object_mut()?;
    for f in CASE_NUMBER_FIELDS {
        if let Some(x) = o.get_mut(f) {
            *x = Value::String("(withheld)".into());
        }
    }
    Some(v)
}

/// Replaces the office's case numbers (`request_id`, `complaint_id`) by keyed hashes; the
/// event id is left as it is.
fn hash_case_numbers(event: &mut Event, hasher: &IdHasher) {
    match event {
        Event::Service(e) => e.request_id = hasher.pseudonymise(&e.unit_code, &e.request_id),
        Event::Complaint(e) => e.complaint_id = hasher.pseudonymise(&e.unit_code, &e.complaint_id),
        Event::UnitDay(_) => {}
    }
}

fn set_event_id(event: &mut Event, id: Uuid) {
    match event {
        Event::Service(e) => e.event_id = id,
        Event::Complaint(e) => e.event_id = id,
        Event::UnitDay(_) => {}
    }
}

/// The derived id at occurrence 0 of a service or complaint event that came without an
/// event id (`None` otherwise): the occurrence index is counted by it.
fn first_derived_id(event: &Event) -> Option<Uuid> {
    let nil = match event {
        Event::Service(e) => e.event_id.is_nil(),
        Event::Complaint(e) => e.event_id.is_nil(),
        Event::UnitDay(_) => false,
    };
    if nil {
        derive_event_id(event, 0)
    } else {
        None
    }
}

/// Replaces office numbers by keyed hashes and fills a missing event id from the content, as
/// for the first record of its content in an export (occurrence 0). For the records of an
/// export use [`ExportIds`], which counts identical records.
pub fn pseudonymise(mut event: Event, hasher: &IdHasher) -> Event {
    hash_case_numbers(&mut event, hasher);
    if let Some(id) = first_derived_id(&event) {
        set_event_id(&mut event, id);
    }
    event
}

/// Pseudonymises the records of one export (one `publish` of one file) and gives each record
/// without an `event_id` the id derived from its content *and its occurrence*
/// ([`owsu_schemas::ids::canonical_form`]): the first record of a content gets occurrence 0,
/// an identical record later in the export occurrence 1, and so on. Two identical lines (the
/// same fee paid twice in a minute) are two events, and importing the same file again gives
/// exactly the same ids, which the pipeline then counts once. Records with their own
/// `event_id` are left as they are and not counted.
///
/// Records are counted by their occurrence-0 id (a 122-bit digest of the content), 20-odd
/// bytes per distinct record: under 50 MB for a 1.5-million-line export.
#[derive(Debug, Default)]
pub struct ExportIds {
    seen: HashMap<Uuid, u32>,
}

impl ExportIds {
    /// The counter of a new export: no content seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next occurrence of the content whose occurrence-0 id is `first`.
    fn next(&mut self, first: Uuid) -> u32 {
        let n = self.seen.entry(first).or_insert(0);
        let occurrence = *n;
        *n = n
            .checked_add(1)
            .expect("fewer than 2^32 identical records in one export");
        occurrence
    }

    /// Pseudonymises one record; records must come in the order of the export.
    #[cfg(test)]
    fn pseudonymise(&mut self, mut event: Event, hasher: &IdHasher) -> Event {
        hash_case_numbers(&mut event, hasher);
        if let Some(first) = first_derived_id(&event) {
            let occurrence = self.next(first);
            if let Some(id) = derive_event_id(&event, occurrence) {
                set_event_id(&mut event, id);
            }
        }
        event
    }

    /// Pseudonymises the parsed records of a batch of lines in place, on all cores: the lines
    /// must be the export's next ones, in order (occurrences are counted in that order).
    pub(crate) fn pseudonymise_lines(&mut self, lines: &mut [Line], hasher: &IdHasher) {
        let firsts: Vec<Option<Uuid>> = lines
            .par_iter_mut()
            .map(|l| {
                let e = l.parsed.as_mut().ok()?;
                hash_case_numbers(e, hasher);
                first_derived_id(e)
            })
            .collect();
        let occurrences: Vec<Option<(Uuid, u32)>> = firsts
            .into_iter()
            .map(|f| f.map(|f| (f, self.next(f))))
            .collect();
        lines
            .par_iter_mut()
            .zip(occurrences)
            .for_each(|(l, occurrence)| {
                if let (Ok(e), Some((first, n))) = (&mut l.parsed, occurrence) {
                    let id = if n == 0 {
                        Some(first)
                    } else {
                        derive_event_id(e, n)
                    };
                    if let Some(id) = id {
                        set_event_id(e, id);
                    }
                }
            });
    }
}

/// The import-format JSON object of an event (the inverse of [`parse_object`]).
pub fn to_import_json(event: &Event) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            m.insert(k.to_owned(), v);
        }
    };
    put("kind", event.kind().as_str().into());
    match event {
        Event::Service(e) => {
            put("event_id", e.event_id.to_string().into());
            put("unit_code", e.unit_code.clone().into());
            put("request_id", e.request_id.clone().into());
            put("sector_code", e.sector_code.clone().into());
            put("service_code", e.service_code.clone().into());
            put("stage", e.stage.as_str().into());
            put("fee_riel", e.fee_riel.into());
            put("channel", e.channel.clone().into());
            put("occurred_at", to_rfc3339(e.occurred_at).into());
            put("recorded_at", to_rfc3339(e.recorded_at).into());
            put(
                "supersedes_event_id",
                e.supersedes_event_id.map(|u| u.to_string()).into(),
            );
            put("window_no", e.window_no.into());
        }
        Event::Complaint(e) => {
            put("event_id", e.event_id.to_string().into());
            put("unit_code", e.unit_code.clone().into());
            put("complaint_id", e.complaint_id.clone().into());
            put("sector_code", e.sector_code.clone().into());
            put("stage", e.stage.as_str().into());
            put("occurred_at", to_rfc3339(e.occurred_at).into());
            put("recorded_at", to_rfc3339(e.recorded_at).into());
            put(
                "supersedes_event_id",
                e.supersedes_event_id.map(|u| u.to_string()).into(),
            );
        }
        Event::UnitDay(e) => {
            put("unit_code", e.unit_code.clone().into());
            put("date", e.date.to_string().into());
            put("services_recorded", e.services_recorded.into());
            put("complaints_recorded", e.complaints_recorded.into());
            put("closed_at", to_rfc3339(e.closed_at).into());
        }
    }
    Value::Object(m)
}

/// One line of input: its number, original text (for the rejects file) and parse result.
pub struct Line {
    /// 1-based line number in the file (in a CSV file, line 1 is the header).
    pub number: u64,
    /// The line as read (a CSV row as a JSON object of its columns); empty when unreadable.
    pub text: String,
    /// The event, ids still the office's own, or why the line is refused.
    pub parsed: Result<Event, RecordError>,
}

/// The longest line an export may hold (a record is a few hundred bytes): a longer one is
/// reported and skipped without being held in memory.
pub(crate) const MAX_LINE_BYTES: usize = 1 << 20;

/// The lines of a text file, one at a time, as [`std::io::BufRead::lines`] gives them (without
/// `\n` or `\r\n`), but: a UTF-8 byte-order mark before the first line is dropped; a line that
/// is not UTF-8 or is longer than [`MAX_LINE_BYTES`] is an error *for that line only*, and the
/// lines after it are still read.
pub(crate) struct Lines<R> {
    reader: R,
    first: bool,
    buf: Vec<u8>,
}

impl<R: std::io::BufRead> Lines<R> {
    /// Lines of `reader`, whose first bytes are the start of the file (for the byte-order mark).
    pub(crate) fn new(reader: R) -> Self {
        Lines {
            reader,
            first: true,
            buf: Vec::new(),
        }
    }
}

impl<R: std::io::BufRead> Iterator for Lines<R> {
    type Item = std::io::Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        use std::io::{BufRead, Read};
        self.buf.clear();
        let limit = MAX_LINE_BYTES as u64 + 2; // room for "\r\n"
        match self
            .reader
            .by_ref()
            .take(limit)
            .read_until(b'\n', &mut self.buf)
        {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) => return Some(Err(e)),
        }
        if self.buf.last() != Some(&b'\n') && self.buf.len() as u64 == limit {
            // Too long: skip the rest of it, a buffer at a time.
            loop {
                let (found, used) = match self.reader.fill_buf() {
                    Ok([]) => break,
                    Ok(b) => match b.iter().position(|c| *c == b'\n') {
                        Some(i) => (true, i + 1),
                        None => (false, b.len()),
                    },
                    Err(e) => return Some(Err(e)),
                };
                self.reader.consume(used);
                if found {
                    break;
                }
            }
            self.first = false;
            return Some(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "line longer than {MAX_LINE_BYTES} bytes (1 MiB); a record is a few hundred"
                ),
            )));
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        }
        let mut bytes = &self.buf[..];
        if std::mem::take(&mut self.first) {
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        Some(match std::str::from_utf8(bytes) {
            Ok(t) => Ok(t.to_owned()),
            Err(e) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "not UTF-8 (invalid byte at column {}): export the file as UTF-8",
                    e.valid_up_to() + 1
                ),
            )),
        })
    }
}

/// Reads the raw lines of a JSON lines file (1-based numbers), unparsed: [`parse_json_line`]
/// turns each into a [`Line`], so the parsing can be spread over threads.
pub(crate) fn json_lines(
    path: &Path,
) -> std::io::Result<impl Iterator<Item = (u64, std::io::Result<String>)>> {
    let file = std::fs::File::open(path)?;
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    Ok(Lines::new(reader)
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l)))
}

/// One line of a JSON lines file as a [`Line`] (`None` for a blank line).
pub(crate) fn parse_json_line(
    path: &Path,
    number: u64,
    line: std::io::Result<String>,
    kind: Option<RecordKind>,
) -> Option<Line> {
    let err = |field, reason| RecordError {
        file: path.to_path_buf(),
        line: number,
        field,
        reason,
    };
    let text = match line {
        Ok(t) => t,
        Err(e) => {
            return Some(Line {
                number,
                text: String::new(),
                parsed: Err(err(None, format!("unreadable line: {e}"))),
            })
        }
    };
    if text.trim().is_empty() {
        return None;
    }
    if let Some(event) = fast::parse(&text, kind) {
        return Some(Line {
            number,
            text,
            parsed: Ok(event),
        });
    }
    let parsed = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => parse_object(&map, kind).map_err(|(f, r)| err(f, r)),
        Ok(_) => Err(err(None, "not a JSON object".into())),
        Err(e) => Err(err(None, format!("not valid JSON: {e}"))),
    };
    Some(Line {
        number,
        text,
        parsed,
    })
}

/// Streams the records of an export file, one [`Line`] at a time, so a large file never sits
/// in memory. `kind` is required for CSV files without a `kind` column.
pub(crate) fn read_file(
    path: &Path,
    format: Format,
    kind: Option<RecordKind>,
) -> std::io::Result<Box<dyn Iterator<Item = Line>>> {
    let file = std::fs::File::open(path)?;
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    let path = path.to_path_buf();
    match format {
        Format::Jsonl => Ok(Box::new(Lines::new(reader).enumerate().filter_map(
            move |(i, line)| parse_json_line(&path, i as u64 + 1, line, kind),
        ))),
        Format::Csv => {
            let mut rdr = csv::ReaderBuilder::new()
                .flexible(false)
                .from_reader(reader);
            let headers: Vec<String> = rdr
                .headers()
                .map_err(std::io::Error::other)?
                .iter()
                // A spreadsheet's UTF-8 export may start with a byte-order mark.
                .map(|h| h.trim_start_matches('\u{feff}').trim().to_owned())
                .collect();
            // A CSV holds one kind; infer it from its columns when not told.
            let kind = kind.or_else(|| {
                let has = |c: &str| headers.iter().any(|h| h == c);
                if has("request_id") {
                    Some(RecordKind::Service)
                } else if has("complaint_id") {
                    Some(RecordKind::Complaint)
                } else if has("services_recorded") {
                    Some(RecordKind::UnitDay)
                } else {
                    None
                }
            });
            Ok(Box::new(rdr.into_records().enumerate().map(
                move |(i, rec)| {
                    let number = i as u64 + 2; // line 1 is the header
                    let err = |field, reason| RecordError {
                        file: path.clone(),
                        line: number,
                        field,
                        reason,
                    };
                    match rec {
                        Err(e) => Line {
                            number,
                            text: String::new(),
                            parsed: Err(err(None, format!("bad CSV row: {e}"))),
                        },
                        Ok(rec) => {
                            let map: Map<String, Value> = headers
                                .iter()
                                .cloned()
                                .zip(rec.iter().map(|v| Value::String(v.trim().to_owned())))
                                .collect();
                            // Shown (redacted) in the rejects file: as a JSON object, so
                            // each value is named by its column.
                            let text = Value::Object(map.clone()).to_string();
                            Line {
                                number,
                                text,
                                parsed: parse_object(&map, kind).map_err(|(f, r)| err(f, r)),
                            }
                        }
                    }
                },
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hasher() -> IdHasher {
        IdHasher::new(b"test-secret-0123456789").unwrap()
    }

    #[test]
    fn a_rejected_line_never_shows_the_case_number() {
        let line = r#"{"kind":"service","unit_code":"KH-99","request_id":"PP-2021-000123","complaint_id":"C-9","fee_riel":1}"#;
        let shown = redacted(line).unwrap().to_string();
        assert!(
            !shown.contains("PP-2021-000123") && !shown.contains("C-9"),
            "{shown}"
        );
        assert!(
            shown.contains("KH-99") && shown.contains("(withheld)"),
            "{shown}"
        );
        assert_eq!(redacted("not json PP-2021-000123"), None);
        assert_eq!(redacted("[1,2]"), None);
    }

    #[test]
    fn lines_survive_bom_crlf_bad_utf8_and_huge_lines() {
        let mut input = b"\xEF\xBB\xBFfirst\r\nsecond\n".to_vec();
        input.extend_from_slice(b"bad \xFF byte\n");
        input.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
        input.extend_from_slice(b"\nafter\r\nlast without newline");
        let got: Vec<Result<String, String>> =
            Lines::new(std::io::BufReader::with_capacity(4096, &input[..]))
                .map(|l| l.map_err(|e| e.to_string()))
                .collect();
        assert_eq!(got.len(), 6, "{got:?}");
        assert_eq!(got[0], Ok("first".to_owned()), "BOM and CR dropped");
        assert_eq!(got[1], Ok("second".to_owned()));
        assert!(
            got[2].as_ref().unwrap_err().contains("not UTF-8"),
            "{:?}",
            got[2]
        );
        assert!(
            got[2].as_ref().unwrap_err().contains("column 5"),
            "{:?}",
            got[2]
        );
        assert!(
            got[3].as_ref().unwrap_err().contains("longer than"),
            "{:?}",
            got[3]
        );
        assert_eq!(got[4], Ok("after".to_owned()));
        assert_eq!(got[5], Ok("last without newline".to_owned()));
        // A line of exactly the limit is a line.
        let mut exact = vec![b'y'; MAX_LINE_BYTES];
        exact.extend_from_slice(b"\r\n");
        let got: Vec<_> = Lines::new(&exact[..]).collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].as_ref().unwrap().len(), MAX_LINE_BYTES);
    }

    #[test]
    fn a_csv_with_a_byte_order_mark_reads_its_first_column() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("e.csv");
        std::fs::write(
            &f,
            "\u{feff}unit_code,date,services_recorded,complaints_recorded,closed_at\r\n\
             KH-01,2021-03-04,3,0,2021-03-04T17:00:00+07:00\r\n",
        )
        .unwrap();
        let lines: Vec<Line> = read_file(&f, Format::Csv, None).unwrap().collect();
        assert_eq!(lines.len(), 1);
        let e = lines[0]
            .parsed
            .as_ref()
            .expect("the BOM is not part of the column name");
        assert_eq!(e.unit_code(), "KH-01");
    }

    /// The slow path's reading of a line, for comparison with the fast one.
    fn slow(line: &str, kind: Option<RecordKind>) -> FieldResult<Event> {
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(map)) => parse_object(&map, kind),
            _ => Err((None, "not a JSON object".into())),
        }
    }

    #[test]
    fn the_fast_path_reads_what_parse_object_reads_and_leaves_it_every_doubt() {
        let service = r#""kind":"service","event_id":"0b1e3f9a-7f6c-4d2e-9b8a-1c2d3e4f5a6b","unit_code":"KH-0101","request_id":"R-77","sector_code":"COM","service_code":"COM-TRADE-LIC","stage":"FEE_PAID","fee_riel":100000,"channel":"online","occurred_at":"2021-03-04T09:00:00+07:00","recorded_at":"2021-03-04T09:01:00+07:00","window_no":4"#;
        let taken = [
            format!("{{{service}}}"),
            // Optional fields absent: channel, recorded_at, window_no, fee, event id.
            r#"{"kind":"service","unit_code":"KH-0101","request_id":"R","sector_code":"COM","service_code":"COM-TRADE-LIC","stage":"RECEIVED","occurred_at":"2021-03-04T09:00:00Z"}"#.into(),
            r#"{"kind":"complaint","event_id":"0b1e3f9a-7f6c-4d2e-9b8a-1c2d3e4f5a6c","unit_code":"KH-12","complaint_id":"C-1","sector_code":"LMC","stage":"RESOLVED","occurred_at":"2021-03-04T09:00:00+07:00","supersedes_event_id":"0b1e3f9a-7f6c-4d2e-9b8a-1c2d3e4f5a6b"}"#.into(),
            r#"{"kind":"complaint","unit_code":"KH-12","complaint_id":"C-1","stage":"RECEIVED","occurred_at":"2021-03-04T09:00:00+07:00"}"#.into(),
            r#"{"kind":"unit_day","unit_code":"KH-12","date":"2021-03-04","services_recorded":17,"complaints_recorded":0,"closed_at":"2021-03-04T17:00:00+07:00"}"#.into(),
            // Key order does not matter, nor spaces.
            r#"{ "stage" : "DELIVERED", "occurred_at":"2021-03-04T09:00:00+07:00","kind":"service","unit_code":"KH-0101","request_id":"R","sector_code":"COM","service_code":"COM-TRADE-LIC" }"#.into(),
        ];
        for line in &taken {
            let fast = fast::parse(line, None).unwrap_or_else(|| panic!("not taken: {line}"));
            assert_eq!(Ok(fast), slow(line, None), "{line}");
        }
        // A CSV-like record without `kind` takes the file's.
        let no_kind = r#"{"unit_code":"KH-12","complaint_id":"C-1","stage":"RECEIVED","occurred_at":"2021-03-04T09:00:00+07:00"}"#;
        assert_eq!(
            fast::parse(no_kind, Some(RecordKind::Complaint)).map(Ok),
            Some(slow(no_kind, Some(RecordKind::Complaint)))
        );
        // Surprises the slow path accepts, in its own way (a number as text, an empty or null
        // channel, an escape, a repeated field: the last one holds)...
        let odd = [
            format!("{{{}}}", service.replace("100000", r#""100000""#)),
            format!("{{{}}}", service.replace(r#""online""#, r#""""#)),
            format!("{{{}}}", service.replace(r#""online""#, "null")),
            format!("{{{}}}", service.replace("R-77", r#"R-\u0037"#)),
            format!(r#"{{{service},"stage":"RECEIVED"}}"#),
        ];
        // ...and what it refuses, naming the field.
        let bad = [
            format!(r#"{{{service},"complaint_id":null}}"#),
            format!(r#"{{{service},"colour":"red"}}"#),
            format!("{{{}}}", service.replace("FEE_PAID", "PAID")),
            format!("{{{}}}", service.replace("2021-03-04T09:00:00+07:00", "2021-03-04 09:00")),
            format!("{{{}}}", service.replace("\"kind\":\"service\",", "")),
            r#"{"kind":"unit_day","unit_code":"KH-12","date":"2021-03-04","services_recorded":3000000000,"complaints_recorded":0,"closed_at":"2021-03-04T17:00:00+07:00"}"#.into(),
            "[1, 2]".into(),
            "{".into(),
        ];
        for line in &odd {
            assert_eq!(fast::parse(line, None), None, "taken: {line}");
            assert!(slow(line, None).is_ok(), "{line}");
        }
        for line in &bad {
            assert_eq!(fast::parse(line, None), None, "taken: {line}");
            assert!(slow(line, None).is_err(), "{line}");
        }
    }

    #[test]
    fn json_round_trip_and_deterministic_ids() {
        let line = json!({"kind":"service","unit_code":"KH-0101","request_id":"R-77","sector_code":"COM",
            "service_code":"COM-TRADE-LIC","stage":"FEE_PAID","fee_riel":100000,
            "occurred_at":"2021-03-04T09:00:00+07:00","recorded_at":"2021-03-04T09:01:00+07:00"});
        let e1 = pseudonymise(
            parse_object(line.as_object().unwrap(), None).unwrap(),
            &hasher(),
        );
        let e2 = pseudonymise(
            parse_object(line.as_object().unwrap(), None).unwrap(),
            &hasher(),
        );
        assert_eq!(e1, e2, "same record, same event id");
        let Event::Service(s) = &e1 else { panic!() };
        assert!(!s.event_id.is_nil());
        assert!(!s.request_id.contains("R-77"));
        let back = parse_object(to_import_json(&e1).as_object().unwrap(), None).unwrap();
        assert_eq!(back, e1);
    }

    /// Two identical lines without event id in one export are two events; importing the same
    /// export again gives exactly the same ids; a line with its own id keeps it.
    #[test]
    fn identical_lines_of_one_export_get_distinct_ids_stable_across_imports() {
        let fee = r#"{"kind":"service","unit_code":"KH-0101","request_id":"R-77","sector_code":"COM","service_code":"COM-TRADE-LIC","stage":"FEE_PAID","fee_riel":100000,"occurred_at":"2021-03-04T09:00:00+07:00"}"#;
        let own = r#"{"kind":"service","event_id":"9b2e4f10-3c5d-4e6f-8a7b-1c2d3e4f5a6b","unit_code":"KH-0101","request_id":"R-77","sector_code":"COM","service_code":"COM-TRADE-LIC","stage":"FEE_PAID","fee_riel":100000,"occurred_at":"2021-03-04T09:00:00+07:00"}"#;
        let complaint = r#"{"kind":"complaint","unit_code":"KH-0101","complaint_id":"C-1","stage":"RECEIVED","occurred_at":"2021-03-04T09:00:00+07:00"}"#;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("export.jsonl");
        let text = [fee, complaint, fee, own, complaint, fee, own].join("\n");
        std::fs::write(&f, text).unwrap();
        let id = |e: &Event| match e {
            Event::Service(s) => s.event_id,
            Event::Complaint(c) => c.event_id,
            Event::UnitDay(_) => unreachable!(),
        };
        // The export as `publish` reads it, in batches of `batch` lines.
        let import = |batch: usize| -> Vec<Uuid> {
            let mut ids = ExportIds::new();
            let mut out = Vec::new();
            let mut lines: Vec<Line> = read_file(&f, Format::Jsonl, None).unwrap().collect();
            for c in lines.chunks_mut(batch) {
                ids.pseudonymise_lines(c, &hasher());
            }
            for l in lines {
                let e = l.parsed.unwrap();
                if let Event::Service(s) = &e {
                    assert!(!s.request_id.contains("R-77"), "pseudonymised");
                }
                out.push(id(&e));
            }
            out
        };
        let first = import(8192);
        let [f0, c0, f1, o0, c1, f2, o1] = first[..] else {
            panic!("{first:?}")
        };
        let own_id = Uuid::parse_str("9b2e4f10-3c5d-4e6f-8a7b-1c2d3e4f5a6b").unwrap();
        assert_eq!((o0, o1), (own_id, own_id), "an id of its own is kept");
        let derived = std::collections::HashSet::from([f0, f1, f2, c0, c1]);
        assert_eq!(
            derived.len(),
            5,
            "identical lines are distinct events: {first:?}"
        );
        assert!(!derived.contains(&Uuid::nil()) && !derived.contains(&own_id));
        // The first of its content has the single-record id; the later ones count on.
        let one = |l: &str| {
            let v: Value = serde_json::from_str(l).unwrap();
            parse_object(v.as_object().unwrap(), None).unwrap()
        };
        let mut hashed = pseudonymise(one(fee), &hasher());
        assert_eq!(id(&hashed), f0);
        set_event_id(&mut hashed, Uuid::nil());
        assert_eq!(derive_event_id(&hashed, 2), Some(f2));
        // Importing the same export again, whatever the batches, gives the same ids.
        assert_eq!(import(8192), first);
        assert_eq!(import(1), first);
        assert_eq!(import(2), first);
        // One record at a time, as the sequential API does, too.
        let mut ids = ExportIds::new();
        let sequential: Vec<Uuid> = [fee, complaint, fee, own, complaint, fee, own]
            .iter()
            .map(|l| id(&ids.pseudonymise(one(l), &hasher())))
            .collect();
        assert_eq!(sequential, first);
    }

    #[test]
    fn parse_errors_name_the_field_without_quoting_citizen_ids() {
        let bad = json!({"kind":"complaint","unit_code":"KH-01","complaint_id":"SECRET-NUMBER","stage":"FEE_PAID",
            "occurred_at":"2021-03-04T09:00:00+07:00"});
        let (field, reason) = parse_object(bad.as_object().unwrap(), None).unwrap_err();
        assert_eq!(field, Some("stage"));
        assert!(
            reason.contains("FEE_PAID") && !reason.contains("SECRET"),
            "{reason}"
        );
        let bad_time = json!({"kind":"unit_day","unit_code":"KH-01","date":"2021-13-01","services_recorded":1,
            "complaints_recorded":0,"closed_at":"2021-03-04T17:00:00+07:00"});
        assert_eq!(
            parse_object(bad_time.as_object().unwrap(), None)
                .unwrap_err()
                .0,
            Some("date")
        );
        let unknown = json!({"kind":"unit_day","unit_code":"KH-01","dte":"x"});
        assert!(parse_object(unknown.as_object().unwrap(), None)
            .unwrap_err()
            .1
            .contains("`dte`"));
    }

    #[test]
    fn csv_infers_kind_and_reports_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("days.csv");
        std::fs::write(&p, "unit_code,date,services_recorded,complaints_recorded,closed_at\nKH-01,2021-03-04,5,0,2021-03-04T17:00:00+07:00\nKH-01,2021-03-05,x,0,2021-03-05T17:00:00+07:00\n").unwrap();
        let lines: Vec<Line> = read_file(&p, Format::Csv, None).unwrap().collect();
        assert!(lines[0].parsed.is_ok());
        let err = lines[1].parsed.as_ref().unwrap_err();
        assert_eq!((err.line, err.field), (3, Some("services_recorded")));
        assert!(
            err.to_string()
                .starts_with(&format!("{}:3: field `services_recorded`", p.display())),
            "{err}"
        );
    }
}
