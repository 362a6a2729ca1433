//! Pseudonymous identifiers. No citizen's request or complaint number leaves the office: the
//! producer replaces it by a keyed hash (HMAC-SHA256 with a per-deployment secret), so the same
//! request always maps to the same id and nobody without the secret can reverse or test it.
//!
//! Also here: the owner-only secret files that hold such secrets ([`read_secret_file`],
//! [`write_secret_file`]), and the ids derived from an event's content when an import line has
//! none ([`canonical_form`], [`derive_event_id`]). A derived id depends only on the versioned
//! canonical form, so importing the same file again gives the same ids.

use std::fmt::Write as _;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::record::Event;

/// Namespace of content-derived event ids (UUID v5), fixed forever: changing it would make a
/// re-imported file count twice.
pub const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f77_7375_2d65_7665_6e74_2d69_6473_0001);

/// The version of [`canonical_form`], and its first field. Derived ids depend on this form
/// byte for byte: changing how any field is written means a new version (`owsu-event/v2`), never
/// an edit of v1, or every file imported before would count twice when imported again. The test
/// vectors in `schemas/testdata/event_id_vectors.json` pin v1.
pub const CANONICAL_FORM_VERSION: &str = "owsu-event/v1";

/// The unit separator (byte 0x1F) written between the fields of a canonical form.
const SEP: char = '\u{1f}';

/// Keyed hashing of office identifiers. `Debug` never shows the secret.
#[derive(Clone)]
pub struct IdHasher {
    /// HMAC-SHA256 already keyed: each pseudonym clones it rather than hashing the key's inner
    /// and outer blocks again (a third of a pseudonym's cost, on every event published).
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for IdHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdHasher(<secret>)")
    }
}

/// An id secret too short to use: fewer than 16 bytes after trimming ASCII whitespace.
#[derive(Debug, thiserror::Error)]
#[error("the id secret is {len} bytes; at least 16 are needed so pseudonyms cannot be guessed")]
pub struct WeakSecret {
    /// Length of the secret in bytes, after trimming.
    pub len: usize,
}

/// A secret file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file could not be opened, inspected or read.
    #[error("reading the secret file {path}: {source}")]
    Io {
        /// The secret file.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Unix only: group or others have some permission on the file.
    #[error(
        "the secret file {path} is readable by group or others (mode {mode:04o}): anyone on the \
         machine could read the deployment's secret; run `chmod 600 {path}`"
    )]
    Exposed {
        /// The secret file.
        path: std::path::PathBuf,
        /// The file's permission bits (`mode & 0o7777`).
        mode: u32,
    },
}

/// Reads a secret file's bytes unchanged, refusing one on which group or others have any
/// permission (Unix mode bits `0o077`; not checked on other systems).
pub fn read_secret_file(path: &std::path::Path) -> Result<Vec<u8>, SecretFileError> {
    let io = |source| SecretFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(io)?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SecretFileError::Exposed {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut &file, &mut out).map_err(io)?;
    Ok(out)
}

/// Writes (creates or truncates) a secret file readable by its owner only: on Unix it is
/// created with mode 0600, and an existing file is set to 0600 before it is opened, so it is
/// never readable by others even for an instant. Elsewhere no mode is set.
pub fn write_secret_file(path: &std::path::Path, secret: &[u8]) -> std::io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        o.mode(0o600);
        // An existing file keeps its mode through `open`: set it.
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    std::io::Write::write_all(&mut o.open(path)?, secret)
}

impl IdHasher {
    /// A hasher keyed by `secret` with ASCII whitespace trimmed from both ends (so a
    /// trailing newline in a secret file does not count). Fails with [`WeakSecret`] when
    /// fewer than 16 bytes remain.
    pub fn new(secret: &[u8]) -> Result<Self, WeakSecret> {
        let trimmed = secret.trim_ascii();
        if trimmed.len() < 16 {
            return Err(WeakSecret { len: trimmed.len() });
        }
        Ok(IdHasher {
            keyed: Hmac::<Sha256>::new_from_slice(trimmed).expect("HMAC takes any key length"),
        })
    }

    /// 32 hex characters (128 bits) of HMAC-SHA256 over `unit_code`, a separator and the
    /// office's own number: office numbers repeat across offices, pseudonyms must not.
    pub fn pseudonymise(&self, unit_code: &str, office_id: &str) -> String {
        let mut mac = self.keyed.clone();
        mac.update(unit_code.as_bytes());
        mac.update(&[0x1f]);
        mac.update(office_id.as_bytes());
        // Into a buffer, not `hex::encode`, which builds its String a char at a time: this runs
        // once or twice for every published event.
        let mut text = [0u8; 32];
        hex::encode_to_slice(&mac.finalize().into_bytes()[..16], &mut text)
            .expect("32 digits for 16 bytes");
        std::str::from_utf8(&text).expect("hex digits").to_owned()
    }
}

/// The canonical form of a service or complaint event, from which a missing `event_id` is
/// derived ([`derive_event_id`]); `None` for a unit-day, which has no event id. It does not
/// depend on serde or on the Rust types, so it can be reimplemented anywhere:
///
/// A UTF-8 string of fields joined by the unit separator U+001F (one byte, 0x1F; none before
/// the first field or after the last). The fields, in this order:
///
/// - service event: `owsu-event/v1`, `service`, `unit_code`, `request_id`, `sector_code`,
///   `service_code`, `stage`, `fee_riel`, `channel`, `occurred_at`, `recorded_at`,
///   `supersedes_event_id`, `window_no`, occurrence (14 fields);
/// - complaint event: `owsu-event/v1`, `complaint`, `unit_code`, `complaint_id`,
///   `sector_code`, `stage`, `occurred_at`, `recorded_at`, `supersedes_event_id`, occurrence
///   (10 fields).
///
/// Each value is written as follows:
///
/// - text (`unit_code`, the codes, `channel`, and `request_id` / `complaint_id`, which are the
///   keyed hashes of [`IdHasher::pseudonymise`], never the office's own numbers): its UTF-8
///   bytes unchanged (no trimming, case folding or Unicode normalisation), except that a
///   backslash `\` is written `\\` and a byte 0x1F is written as the four characters `\x1f`,
///   so a value can never contain a separator;
/// - `stage`: its wire name, the Avro symbol (`RECEIVED`, `FEE_PAID`, `WITHIN_JURISDICTION`, …);
/// - instants (`occurred_at`, `recorded_at`): integer milliseconds since 1970-01-01T00:00:00Z;
/// - money (`fee_riel`, integer riel) and `window_no`: a base-10 integer, `-` before a negative
///   one, no `+`, no leading zeros, no separators of thousands;
/// - `supersedes_event_id`: the UUID in lowercase hyphenated form (36 characters);
/// - an absent optional value (`fee_riel`, `supersedes_event_id`, `window_no`, a complaint's
///   `sector_code`): the empty string;
/// - occurrence: a base-10 integer, 0 for the first record of this content (all fields before
///   it equal) in one export, 1 for the second, and so on, so that identical lines of one
///   export, which are honest records (the same fee paid twice in a minute), stay distinct
///   events, while importing the same export again gives the same ids.
///
/// The event's own `event_id` is not part of the form. A field added to a record later is not
/// part of v1 either: v1 ids never change because of it.
///
/// Example (with `␟` standing for 0x1F), a fee of 100 000 riel paid at a counter, the first
/// such line of its export:
/// `owsu-event/v1␟service␟KH-0101␟<32 hex>␟COM␟COM-TRADE-LIC␟FEE_PAID␟100000␟counter␟1614823200000␟1614823260000␟␟␟0`.
pub fn canonical_form(event: &Event, occurrence: u32) -> Option<String> {
    let mut f = String::with_capacity(256);
    f.push_str(CANONICAL_FORM_VERSION);
    let text = |f: &mut String, v: &str| {
        f.push(SEP);
        for c in v.chars() {
            match c {
                '\\' => f.push_str("\\\\"),
                SEP => f.push_str("\\x1f"),
                c => f.push(c),
            }
        }
    };
    let int = |f: &mut String, v: Option<i64>| {
        f.push(SEP);
        if let Some(v) = v {
            write!(f, "{v}").expect("writing to a String");
        }
    };
    let uuid = |f: &mut String, v: Option<Uuid>| {
        f.push(SEP);
        if let Some(v) = v {
            write!(f, "{}", v.hyphenated()).expect("writing to a String");
        }
    };
    match event {
        Event::Service(e) => {
            text(&mut f, "service");
            text(&mut f, &e.unit_code);
            text(&mut f, &e.request_id);
            text(&mut f, &e.sector_code);
            text(&mut f, &e.service_code);
            text(&mut f, e.stage.as_str());
            int(&mut f, e.fee_riel);
            text(&mut f, &e.channel);
            int(&mut f, Some(e.occurred_at));
            int(&mut f, Some(e.recorded_at));
            uuid(&mut f, e.supersedes_event_id);
            int(&mut f, e.window_no.map(i64::from));
        }
        Event::Complaint(e) => {
            text(&mut f, "complaint");
            text(&mut f, &e.unit_code);
            text(&mut f, &e.complaint_id);
            text(&mut f, e.sector_code.as_deref().unwrap_or(""));
            text(&mut f, e.stage.as_str());
            int(&mut f, Some(e.occurred_at));
            int(&mut f, Some(e.recorded_at));
            uuid(&mut f, e.supersedes_event_id);
        }
        Event::UnitDay(_) => return None,
    }
    int(&mut f, Some(i64::from(occurrence)));
    Some(f)
}

/// The id of an event that came without one: the UUID v5 (RFC 4122 / 9562, SHA-1) in
/// [`EVENT_ID_NAMESPACE`] of the UTF-8 bytes of its [`canonical_form`]. The same record at the
/// same occurrence always has the same id; `None` for a unit-day.
pub fn derive_event_id(event: &Event, occurrence: u32) -> Option<Uuid> {
    canonical_form(event, occurrence).map(|f| Uuid::new_v5(&EVENT_ID_NAMESPACE, f.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_stable_keyed_and_per_unit() {
        let a = IdHasher::new(b"0123456789abcdef-secret").unwrap();
        let b = IdHasher::new(b"another-deployment-secret").unwrap();
        assert_eq!(
            a.pseudonymise("KH-01", "REQ-1"),
            a.pseudonymise("KH-01", "REQ-1")
        );
        assert_ne!(
            a.pseudonymise("KH-01", "REQ-1"),
            b.pseudonymise("KH-01", "REQ-1")
        );
        assert_ne!(
            a.pseudonymise("KH-01", "REQ-1"),
            a.pseudonymise("KH-02", "REQ-1")
        );
        assert!(!a.pseudonymise("KH-01", "REQ-1").contains("REQ"));
        assert!(IdHasher::new(b"short").is_err());
    }

    fn service() -> Event {
        Event::Service(crate::record::ServiceEvent {
            event_id: Uuid::nil(),
            unit_code: "KH-0101".into(),
            request_id: "3f1c9a0e5b7d42c88e6a1b2c3d4e5f60".into(),
            sector_code: "COM".into(),
            service_code: "COM-TRADE-LIC".into(),
            stage: crate::record::ServiceStage::FeePaid,
            fee_riel: Some(100_000),
            channel: "counter".into(),
            occurred_at: 1_614_823_200_000,
            recorded_at: 1_614_823_260_000,
            supersedes_event_id: None,
            window_no: Some(3),
        })
    }

    #[test]
    fn derived_ids_are_deterministic_and_ignore_the_own_id() {
        let e = service();
        assert_eq!(derive_event_id(&e, 0), derive_event_id(&e, 0));
        assert_ne!(derive_event_id(&e, 0), derive_event_id(&e, 1));
        let Event::Service(mut other) = e.clone() else {
            unreachable!()
        };
        other.event_id = Uuid::from_u128(7);
        assert_eq!(
            canonical_form(&Event::Service(other.clone()), 0),
            canonical_form(&e, 0)
        );
        other.fee_riel = Some(100_001);
        assert_ne!(
            derive_event_id(&Event::Service(other), 0),
            derive_event_id(&e, 0)
        );
        let day = Event::UnitDay(crate::record::UnitDayClosed {
            unit_code: "KH-0101".into(),
            date: chrono::NaiveDate::from_ymd_opt(2021, 3, 4).unwrap(),
            services_recorded: 1,
            complaints_recorded: 0,
            closed_at: 1_614_852_000_000,
        });
        assert_eq!(canonical_form(&day, 0), None);
        assert_eq!(derive_event_id(&day, 0), None);
    }

    /// Values cannot run into each other: moving text from one field to the next, or putting
    /// a separator inside a value, gives another form.
    #[test]
    fn fields_cannot_run_into_each_other() {
        let Event::Service(a) = service() else {
            unreachable!()
        };
        let mut b = a.clone();
        b.sector_code = "CO".into();
        b.service_code = "MCOM-TRADE-LIC".into();
        assert_ne!(
            canonical_form(&Event::Service(a.clone()), 0),
            canonical_form(&Event::Service(b), 0)
        );
        let mut c = a.clone();
        c.channel = "counter\u{1f}1614823200000".into();
        let form = canonical_form(&Event::Service(c), 0).unwrap();
        assert_eq!(form.matches('\u{1f}').count(), 13, "{form:?}");
        assert!(form.contains("counter\\x1f1614823200000"), "{form:?}");
    }

    /// The frozen test vectors of `schemas/testdata/event_id_vectors.json`: a change that
    /// alters any derived id fails here (and would make re-imported files count twice).
    #[test]
    fn canonical_form_v1_matches_the_frozen_vectors() {
        #[derive(serde::Deserialize)]
        struct Vector {
            name: String,
            occurrence: u32,
            event: Event,
            canonical: String,
            event_id: Uuid,
        }
        #[derive(serde::Deserialize)]
        struct File {
            vectors: Vec<Vector>,
        }
        let text = include_str!("../testdata/event_id_vectors.json");
        let file: File = serde_json::from_str(text).expect("the vectors file is valid JSON");
        assert!(file.vectors.len() >= 6);
        for v in &file.vectors {
            let form = canonical_form(&v.event, v.occurrence).expect("not a unit-day");
            assert!(form.starts_with("owsu-event/v1\u{1f}"), "{}", v.name);
            assert_eq!(form, v.canonical, "canonical form of {:?}", v.name);
            assert_eq!(
                derive_event_id(&v.event, v.occurrence),
                Some(v.event_id),
                "event id of {:?}",
                v.name
            );
            assert_eq!(v.event_id.get_version_num(), 5, "{}", v.name);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        write_secret_file(&p, b"0123456789abcdef0123").unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read_secret_file(&p).unwrap(), b"0123456789abcdef0123");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_secret_file(&p).unwrap_err().to_string();
        assert!(e.contains("0644") && e.contains("chmod 600"), "{e}");
        // Rewriting it makes it private again.
        write_secret_file(&p, b"0123456789abcdef0123").unwrap();
        assert!(read_secret_file(&p).is_ok());
    }
}
