//! Reference data as files, not enums: the unit registry (`units.csv`), the sector and service
//! catalogue (`catalogue.json`), the public-holiday calendar (`holidays.csv`) and the units'
//! public signing keys (`keys.csv`).
//!
//! A ministry edits these without a rebuild. Where they are read from, first match wins:
//! an explicit directory (`--reference-dir`), `$OWSU_REFERENCE_DIR`, a `reference/` directory
//! beside the installed binary (or `../share/owsu/reference/` from it), and last the copy
//! compiled into the binary. Never the working directory: a job started from another directory
//! must not pick up whatever `schemas/reference` happens to be there. [`Reference::source`]
//! says which one was used, and processes log it.
//!
//! Loading checks the files and refuses a fault, naming the file (and the line and field where
//! it can): for example a unit code not of the form `KH-PP` / `KH-PPDD`, a unit or a service
//! code listed twice, a fee range with a negative minimum or a minimum above the maximum, or a
//! key of a unit not in the registry.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate, Weekday};
use serde::{Deserialize, Serialize};

use crate::FastMap;

/// Administrative level of a reporting unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// The 25 capital and provincial administrations.
    Provincial,
    /// The 203 municipal, district and khan administrations.
    District,
}

impl Level {
    /// The name used in `units.csv`: `provincial` or `district`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Provincial => "provincial",
            Level::District => "district",
        }
    }
    /// The level named `s` in `units.csv`; `None` for any other text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "provincial" => Some(Level::Provincial),
            "district" => Some(Level::District),
            _ => None,
        }
    }
    /// How FACTS.md names the level in its tables.
    pub fn label(self) -> &'static str {
        match self {
            Level::Provincial => "Capital/provincial",
            Level::District => "Municipal/district/khan",
        }
    }
}

/// One reporting unit (a row of `units.csv`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    /// `KH-PP` for a capital/province, `KH-PPDD` for a municipality, district or khan.
    pub code: String,
    /// Provincial or district; matches the shape of `code`.
    pub level: Level,
    /// Code of the unit's province (`KH-PP`); `code` starts with it.
    pub province_code: String,
    /// Name of the unit's province.
    pub province_name: String,
    /// Name of the unit.
    pub name: String,
    /// capital, province, municipality, district or khan.
    pub kind: String,
    /// The unit has a One Window Service Unit.
    pub has_owsu: bool,
    /// The unit has an Ombudsman office.
    pub has_ombudsman: bool,
    /// The unit's province is on the national border.
    pub border_province: bool,
    /// The unit's name in Khmer (`name_km`, optional: the dashboard's Khmer pages fall back to
    /// `name`).
    pub name_km: Option<String>,
}

/// All reporting units, by code.
#[derive(Debug, Clone)]
pub struct Registry {
    /// Every unit, in file order; codes are unique.
    pub units: Vec<Unit>,
    /// Looked up for every event.
    by_code: FastMap<String, usize>,
}

impl Registry {
    /// The unit with this exact code.
    pub fn get(&self, code: &str) -> Option<&Unit> {
        self.by_code.get(code).map(|&i| &self.units[i])
    }
    /// The capital and provincial units, in file order.
    pub fn provinces(&self) -> impl Iterator<Item = &Unit> {
        self.units.iter().filter(|u| u.level == Level::Provincial)
    }
    /// Units of a province (the province itself and its districts), for scoped views.
    /// A district's code gives that district alone.
    pub fn in_scope<'a>(&'a self, scope: &'a str) -> impl Iterator<Item = &'a Unit> + 'a {
        self.units
            .iter()
            .filter(move |u| u.province_code == scope || u.code == scope)
    }
}

/// One service type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Service code, unique in the catalogue.
    pub code: String,
    /// Name of the service.
    pub name: String,
    /// Its name in Khmer, where the catalogue gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_km: Option<String>,
    /// Levels whose units offer this service.
    pub levels: Vec<Level>,
    /// Lowest fee of the legal schedule, in riel (0 or more).
    pub fee_min_riel: i64,
    /// Highest fee of the legal schedule, in riel (not below `fee_min_riel`).
    pub fee_max_riel: i64,
    /// Usual working days from request to delivery.
    pub typical_days: u32,
    /// The legal time limit, in working days from receipt to delivery, where the schedule
    /// states one: the service standard the review and the dashboard measure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_days: Option<u32>,
    /// A border pass: must be issued inside the OWSU and recorded (FACTS.md, article 004).
    #[serde(default)]
    pub border_pass: bool,
    /// Simulator only: relative demand at provincial units.
    #[serde(default)]
    pub sim_weight_provincial: f64,
    /// Simulator only: relative demand at district units.
    #[serde(default)]
    pub sim_weight_district: f64,
}

/// One sector with its services.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sector {
    /// Sector code.
    pub code: String,
    /// Name of the sector.
    pub name: String,
    /// Its name in Khmer, where the catalogue gives one (the dashboard's Khmer pages fall back
    /// to `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_km: Option<String>,
    /// The sector's services, in file order.
    pub services: Vec<Service>,
}

/// The sector and service catalogue.
///
/// Load it through [`Reference`]: a `Catalogue` deserialized with serde alone has no service
/// index, so [`Catalogue::service`] finds nothing in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Catalogue {
    /// Version of the catalogue, e.g. `2021.1`.
    pub version: String,
    /// Currency of the fees (`KHR`); empty when the file has none.
    #[serde(default)]
    pub(crate) currency: String,
    /// Free text about the catalogue; empty when the file has none.
    #[serde(default)]
    pub note: String,
    /// The sectors, in file order.
    pub sectors: Vec<Sector>,
    #[serde(skip)]
    services: FastMap<String, (usize, usize)>,
}

impl Catalogue {
    /// The sector with this exact code (the first, if the file lists it twice).
    pub fn sector(&self, code: &str) -> Option<&Sector> {
        self.sectors.iter().find(|s| s.code == code)
    }
    /// A service and the sector it belongs to.
    pub fn service(&self, code: &str) -> Option<(&Sector, &Service)> {
        self.services
            .get(code)
            .map(|&(s, v)| (&self.sectors[s], &self.sectors[s].services[v]))
    }
    /// Every service with its sector, in file order.
    pub fn services(&self) -> impl Iterator<Item = (&Sector, &Service)> {
        self.sectors
            .iter()
            .flat_map(|s| s.services.iter().map(move |v| (s, v)))
    }
}

/// Public holidays; working days are Monday to Friday minus these.
#[derive(Debug, Clone, Default)]
pub struct Holidays {
    /// Each public holiday with its name.
    pub dates: BTreeMap<NaiveDate, String>,
    /// Years the file covers; other years count weekends only (and callers may warn).
    pub years: BTreeSet<i32>,
}

impl Holidays {
    /// True when `d` is a listed public holiday.
    pub(crate) fn is_holiday(&self, d: NaiveDate) -> bool {
        self.dates.contains_key(&d)
    }
    /// True when `d` is Monday to Friday and not a public holiday.
    pub(crate) fn is_working_day(&self, d: NaiveDate) -> bool {
        !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) && !self.is_holiday(d)
    }
    /// Working days in `[from, to]` (both ends included), in order; empty when `from > to`.
    pub fn working_days(&self, from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
        from.iter_days()
            .take_while(|d| *d <= to)
            .filter(|d| self.is_working_day(*d))
            .collect()
    }
    /// True when the file lists at least one holiday in `year`.
    pub fn covers(&self, year: i32) -> bool {
        self.years.contains(&year)
    }
}

/// Reference data that cannot be loaded. The message names the file (and line and field
/// where there is one).
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    // The cause is in the message and not a `source`, so a printed error chain says it once.
    /// A file could not be read.
    #[error("{file}: cannot read: {cause}")]
    Io {
        /// The file.
        file: PathBuf,
        /// The operating system's error.
        cause: std::io::Error,
    },
    /// A line of a file is wrong.
    #[error("{file}, line {line}: {problem}")]
    Line {
        /// The file.
        file: PathBuf,
        /// Line number from 1; in a CSV file the header is line 1.
        line: u64,
        /// What is wrong, naming the field.
        problem: String,
    },
    /// A file is wrong as a whole (a duplicate or an invalid fee range in the catalogue).
    #[error("{file}: {problem}")]
    File {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// Registry, catalogue and calendar, loaded together.
#[derive(Debug, Clone)]
pub struct Reference {
    /// The unit registry (`units.csv`).
    pub registry: Registry,
    /// The sector and service catalogue (`catalogue.json`).
    pub catalogue: Catalogue,
    /// The public-holiday calendar (`holidays.csv`).
    pub holidays: Holidays,
    /// Each unit's public signing keys with their validity (`keys.csv`; absent: none).
    pub keys: crate::signing::PublicKeys,
    /// Where the data came from (a directory, or "built-in").
    pub source: String,
}

const BUILTIN_UNITS: &str = include_str!("../reference/units.csv");
const BUILTIN_CATALOGUE: &str = include_str!("../reference/catalogue.json");
const BUILTIN_HOLIDAYS: &str = include_str!("../reference/holidays.csv");
const BUILTIN_KEYS: &str = include_str!("../reference/keys.csv");

impl Reference {
    /// Loads from `dir`, else `$OWSU_REFERENCE_DIR`, else beside the binary, else built-in.
    /// A chosen directory that does not load is an error: there is no fall-back past it.
    pub fn load(dir: Option<&Path>) -> Result<Self, ReferenceError> {
        let env_dir = std::env::var_os("OWSU_REFERENCE_DIR").map(PathBuf::from);
        let chosen = dir
            .map(Path::to_path_buf)
            .or(env_dir)
            .or_else(Self::beside_binary);
        match chosen {
            Some(d) => Self::from_dir(&d),
            None => Ok(Self::builtin()),
        }
    }

    /// `reference/` beside the running binary, or `../share/owsu/reference/` from it (an
    /// installed layout), if it holds a registry.
    pub(crate) fn beside_binary() -> Option<PathBuf> {
        let exe = std::env::current_exe().ok()?;
        let bin = exe.parent()?;
        [bin.join("reference"), bin.join("../share/owsu/reference")]
            .into_iter()
            .find(|d| d.join("units.csv").is_file())
    }

    /// The copy compiled into the binary (the repository's `schemas/reference/` at build time).
    pub fn builtin() -> Self {
        let name = |f: &str| PathBuf::from(format!("<built-in>/{f}"));
        Self::parse(
            (name("units.csv"), BUILTIN_UNITS),
            (name("catalogue.json"), BUILTIN_CATALOGUE),
            (name("holidays.csv"), BUILTIN_HOLIDAYS),
            (name("keys.csv"), BUILTIN_KEYS),
            "built-in".into(),
        )
        .expect("the built-in reference data is checked by the tests")
    }

    /// Loads `units.csv`, `catalogue.json`, `holidays.csv` and `keys.csv` from `dir`.
    /// A missing `keys.csv` means no unit has a key; any other file missing is an error.
    pub(crate) fn from_dir(dir: &Path) -> Result<Self, ReferenceError> {
        let read = |f: &str| {
            let p = dir.join(f);
            std::fs::read_to_string(&p)
                .map(|s| (p.clone(), s))
                .map_err(|cause| ReferenceError::Io { file: p, cause })
        };
        let (u, c, h) = (
            read("units.csv")?,
            read("catalogue.json")?,
            read("holidays.csv")?,
        );
        // Reference directories of earlier releases have no keys: no unit has one.
        let k = match read("keys.csv") {
            Ok(k) => k,
            Err(ReferenceError::Io { cause, .. })
                if cause.kind() == std::io::ErrorKind::NotFound =>
            {
                (dir.join("keys.csv"), String::new())
            }
            Err(e) => return Err(e),
        };
        Self::parse(
            (u.0, &u.1),
            (c.0, &c.1),
            (h.0, &h.1),
            (k.0, &k.1),
            dir.display().to_string(),
        )
    }

    /// The texts of `units.csv`, `catalogue.json` and `holidays.csv` this data was loaded from
    /// (the directory's files, or the built-in copy), to write a copy with other keys.
    /// A directory's files are read again now, so they show any edit made since loading.
    pub fn source_files(&self) -> Result<Vec<(&'static str, String)>, ReferenceError> {
        const FILES: [(&str, &str); 3] = [
            ("units.csv", BUILTIN_UNITS),
            ("catalogue.json", BUILTIN_CATALOGUE),
            ("holidays.csv", BUILTIN_HOLIDAYS),
        ];
        FILES
            .iter()
            .map(|&(name, builtin)| {
                if self.source == "built-in" {
                    return Ok((name, builtin.to_owned()));
                }
                let file = Path::new(&self.source).join(name);
                std::fs::read_to_string(&file)
                    .map(|t| (name, t))
                    .map_err(|cause| ReferenceError::Io { file, cause })
            })
            .collect()
    }

    fn parse(
        units: (PathBuf, &str),
        catalogue: (PathBuf, &str),
        holidays: (PathBuf, &str),
        keys: (PathBuf, &str),
        source: String,
    ) -> Result<Self, ReferenceError> {
        let registry = parse_units(&units.0, units.1)?;
        let keys = parse_keys(&keys.0, keys.1, &registry)?;
        Ok(Reference {
            registry,
            catalogue: parse_catalogue(&catalogue.0, catalogue.1)?,
            holidays: parse_holidays(&holidays.0, holidays.1)?,
            keys,
            source,
        })
    }
}

/// `keys.csv`: unit_code, public_key (64 hex digits), valid_from, valid_until (empty: no end);
/// times are RFC 3339 instants or dates (a date is its midnight in Cambodia).
fn parse_keys(
    file: &Path,
    text: &str,
    registry: &Registry,
) -> Result<crate::signing::PublicKeys, ReferenceError> {
    use crate::signing::{key_id, PublicKey};
    let mut out = Vec::new();
    if text.trim().is_empty() {
        return Ok(crate::signing::PublicKeys::new(out));
    }
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    for (i, rec) in rdr.records().enumerate() {
        let line = i as u64 + 2;
        let err = |problem: String| ReferenceError::Line {
            file: file.into(),
            line,
            problem,
        };
        let rec = rec.map_err(|e| err(e.to_string()))?;
        let field = |n: usize| rec.get(n).unwrap_or("").trim();
        let unit = field(0);
        if registry.get(unit).is_none() {
            return Err(err(format!(
                "field `unit_code`: {unit:?} is not in units.csv"
            )));
        }
        let key = hex::decode(field(1))
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
            .ok_or_else(|| {
                err("field `public_key`: not an Ed25519 public key in 64 hex digits".into())
            })?;
        let time = |name: &str, v: &str| -> Result<crate::time::Millis, ReferenceError> {
            if let Ok(d) = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d") {
                return Ok(crate::time::day_start(d));
            }
            crate::time::parse_rfc3339(v).map_err(|_| {
                err(format!(
                    "field `{name}`: {v:?} is not a date or RFC 3339 time"
                ))
            })
        };
        let valid_from = time("valid_from", field(2))?;
        let valid_until = match field(3) {
            "" => None,
            v => Some(time("valid_until", v)?),
        };
        out.push(PublicKey {
            unit_code: unit.to_owned(),
            key_id: key_id(&key),
            key,
            valid_from,
            valid_until,
        });
    }
    Ok(crate::signing::PublicKeys::new(out))
}

fn parse_bool(file: &Path, line: u64, field: &str, v: &str) -> Result<bool, ReferenceError> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ReferenceError::Line {
            file: file.into(),
            line,
            problem: format!("field `{field}`: {v:?} is not true/false"),
        }),
    }
}

fn parse_units(file: &Path, text: &str) -> Result<Registry, ReferenceError> {
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let mut units = Vec::new();
    let mut by_code = FastMap::default();
    for (i, rec) in rdr.records().enumerate() {
        let line = i as u64 + 2;
        let rec = rec.map_err(|e| ReferenceError::Line {
            file: file.into(),
            line,
            problem: e.to_string(),
        })?;
        let get = |n: usize| rec.get(n).unwrap_or("").trim().to_owned();
        let level_s = get(1);
        let level = Level::parse(&level_s).ok_or_else(|| ReferenceError::Line {
            file: file.into(),
            line,
            problem: format!("field `level`: {level_s:?} is not provincial/district"),
        })?;
        let code = get(0);
        let shape_ok = match level {
            Level::Provincial => code.len() == 5,
            Level::District => code.len() == 7,
        } && code.starts_with("KH-")
            && code[3..].bytes().all(|b| b.is_ascii_digit());
        if !shape_ok {
            return Err(ReferenceError::Line {
                file: file.into(),
                line,
                problem: format!(
                    "field `code`: {code:?} is not KH-PP (provincial) or KH-PPDD (district)"
                ),
            });
        }
        let unit = Unit {
            code: code.clone(),
            level,
            province_code: get(2),
            province_name: get(3),
            name: get(4),
            kind: get(5),
            has_owsu: parse_bool(file, line, "has_owsu", &get(6))?,
            has_ombudsman: parse_bool(file, line, "has_ombudsman", &get(7))?,
            border_province: parse_bool(file, line, "border_province", &get(8))?,
            name_km: Some(get(9)).filter(|n| !n.is_empty()),
        };
        if !code.starts_with(&unit.province_code) {
            return Err(ReferenceError::Line {
                file: file.into(),
                line,
                problem: format!(
                    "field `province_code`: {} does not contain unit {code}",
                    unit.province_code
                ),
            });
        }
        if by_code.insert(code.clone(), units.len()).is_some() {
            return Err(ReferenceError::Line {
                file: file.into(),
                line,
                problem: format!("field `code`: {code} appears twice"),
            });
        }
        units.push(unit);
    }
    Ok(Registry { units, by_code })
}

fn parse_catalogue(file: &Path, text: &str) -> Result<Catalogue, ReferenceError> {
    let mut cat: Catalogue = serde_json::from_str(text).map_err(|e| ReferenceError::Line {
        file: file.into(),
        line: e.line() as u64,
        problem: e.to_string(),
    })?;
    for (si, sector) in cat.sectors.iter().enumerate() {
        for (vi, svc) in sector.services.iter().enumerate() {
            if svc.fee_min_riel < 0 || svc.fee_min_riel > svc.fee_max_riel {
                return Err(ReferenceError::File {
                    file: file.into(),
                    problem: format!(
                        "service {}: fee range {}..{} riel is not valid",
                        svc.code, svc.fee_min_riel, svc.fee_max_riel
                    ),
                });
            }
            if cat.services.insert(svc.code.clone(), (si, vi)).is_some() {
                return Err(ReferenceError::File {
                    file: file.into(),
                    problem: format!("service code {} appears twice", svc.code),
                });
            }
        }
    }
    Ok(cat)
}

fn parse_holidays(file: &Path, text: &str) -> Result<Holidays, ReferenceError> {
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let mut h = Holidays::default();
    for (i, rec) in rdr.records().enumerate() {
        let line = i as u64 + 2;
        let rec = rec.map_err(|e| ReferenceError::Line {
            file: file.into(),
            line,
            problem: e.to_string(),
        })?;
        let d = rec.get(0).unwrap_or("");
        let date = NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|e| ReferenceError::Line {
            file: file.into(),
            line,
            problem: format!("field `date`: {d:?}: {e}"),
        })?;
        h.years.insert(date.year());
        h.dates.insert(date, rec.get(1).unwrap_or("").to_owned());
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_registry_has_the_published_shape() {
        let r = Reference::builtin();
        let reg = &r.registry;
        assert_eq!(reg.units.len(), 228);
        assert_eq!(reg.provinces().count(), 25, "Phnom Penh and 24 provinces");
        let districts: Vec<_> = reg
            .units
            .iter()
            .filter(|u| u.level == Level::District)
            .collect();
        assert_eq!(districts.len(), 203);
        assert_eq!(
            districts.iter().filter(|u| u.has_ombudsman).count(),
            120,
            "FACTS.md: 120 district Ombudsman offices"
        );
        assert_eq!(reg.get("KH-25").unwrap().province_name, "Tbong Khmum");
        assert_eq!(reg.get("KH-12").unwrap().kind, "capital");
        for d in &districts {
            let p = reg
                .get(&d.province_code)
                .expect("district's province exists");
            assert_eq!(p.level, Level::Provincial);
        }
    }

    #[test]
    fn builtin_catalogue_has_fifteen_sectors_and_border_passes() {
        let c = Reference::builtin().catalogue;
        assert_eq!(c.sectors.len(), 15);
        let district_sectors = c
            .sectors
            .iter()
            .filter(|s| {
                s.services
                    .iter()
                    .any(|v| v.levels.contains(&Level::District))
            })
            .count();
        assert_eq!(
            district_sectors, 14,
            "one-stop offices: 14 sectors (FACTS.md)"
        );
        assert!(c.services().any(|(_, s)| s.border_pass));
        let (sector, svc) = c.service("COM-TRADE-LIC").unwrap();
        assert_eq!(sector.code, "COM");
        assert!(svc.fee_min_riel <= svc.fee_max_riel);
    }

    #[test]
    fn working_days_skip_weekends_and_khmer_new_year() {
        let h = Reference::builtin().holidays;
        let d = |m, day| NaiveDate::from_ymd_opt(2021, m, day).unwrap();
        assert!(!h.is_working_day(d(4, 14)), "Khmer New Year");
        assert!(!h.is_working_day(d(10, 6)), "Pchum Ben");
        assert!(!h.is_working_day(d(3, 6)), "Saturday");
        assert!(h.is_working_day(d(3, 5)));
        let n = h.working_days(d(1, 1), d(12, 31)).len();
        assert!((230..=250).contains(&n), "2021 has {n} working days");
    }

    #[test]
    fn a_broken_units_file_names_file_line_and_field() {
        let dir = std::env::temp_dir().join(format!("owsu-ref-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("units.csv"), "code,level,province_code,province_name,name,kind,has_owsu,has_ombudsman,border_province\nKH-01,provincial,KH-01,B,B,province,true,true,true\nKH-0101,regional,KH-01,B,M,district,true,true,true\n").unwrap();
        std::fs::write(dir.join("catalogue.json"), BUILTIN_CATALOGUE).unwrap();
        std::fs::write(dir.join("holidays.csv"), BUILTIN_HOLIDAYS).unwrap();
        let err = Reference::from_dir(&dir).unwrap_err().to_string();
        assert!(
            err.contains("units.csv, line 3")
                && err.contains("`level`")
                && err.contains("regional"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
