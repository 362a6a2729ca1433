//! Rules every record must pass before it is published or counted. A *structural* fault (a
//! field missing or empty, an unknown unit or code, money beyond the bound, a time before the
//! reporting era) is a [`ValidationError`] that names the field and the value at fault, so an
//! office can fix the record and a dead-letter reader knows why it is there. A *business-rule
//! anomaly* is not an error: [`validate`] returns it as [`Flags`] (see [`crate::anomaly`]).
//!
//! The verdict depends only on the record, the [`Reference`] data and the sender's clock
//! `now`: given the same three, every process reaches the same verdict.

use chrono::NaiveDate;

use crate::anomaly::{Flags, Rule, CLOCK_SKEW_MS};
use crate::record::{ComplaintStage, Event, RecordKind, ServiceEvent, ServiceStage};
use crate::reference::{Reference, Service};
use crate::time::{day_start, to_rfc3339, Millis};

/// Earliest instant accepted: 2018-01-01 in Cambodia (the OWSU reporting era of FACTS.md).
pub fn earliest_accepted() -> Millis {
    day_start(NaiveDate::from_ymd_opt(2018, 1, 1).expect("valid date"))
}

/// The largest amount of money one record may carry, either sign, in riel (about US$250
/// million, far above any fee in the catalogue). A larger amount is a typing or encoding fault,
/// not a record (refused, not flagged), and the bound keeps every sum the pipeline forms far
/// from overflowing an `i64`: a million such amounts still fit.
pub const MONEY_BOUND_RIEL: i64 = 1_000_000_000_000;

/// A structural fault: the record is refused. The message names the field and the value;
/// [`ValidationError::field`] gives the field alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The `unit_code` (the value) is not in the unit registry.
    #[error("field `unit_code`: unknown unit code {0:?} (not in the unit registry)")]
    UnknownUnit(String),
    /// A sector or service code is empty, longer than [`CODE_MAX_LEN`] bytes, or has a byte
    /// other than an ASCII letter, digit, `-`, `_` or `.`.
    #[error(
        "field `{field}`: {value:?} is not a code: 1 to {} letters, digits, `-`, `_` or `.`",
        CODE_MAX_LEN
    )]
    BadCode {
        /// `sector_code` or `service_code`.
        field: &'static str,
        /// The value, cut to its first `CODE_MAX_LEN + 8` characters.
        value: String,
    },
    /// A service the catalogue knows, given under another sector than its own.
    #[error("field `service_code`: service {service} belongs to sector {actual}, not {given}")]
    ServiceNotInSector {
        /// The service code.
        service: String,
        /// The sector code of the record.
        given: String,
        /// The sector the catalogue puts the service in.
        actual: String,
    },
    /// A stage name that is not a stage of this kind of record.
    #[error("field `stage`: {value:?} is not a possible stage of a {kind} record")]
    ImpossibleStage {
        /// The record kind's import-format name.
        kind: &'static str,
        /// The stage name given.
        value: String,
    },
    /// An amount beyond ±[`MONEY_BOUND_RIEL`].
    #[error(
        "field `{field}`: {value} riel is outside ±{} riel, the bound on any amount",
        MONEY_BOUND_RIEL
    )]
    MoneyOutOfBounds {
        /// The money field (`fee_riel`).
        field: &'static str,
        /// The amount, in riel.
        value: i64,
    },
    /// A FEE_PAID event without `fee_riel`.
    #[error("field `fee_riel`: a FEE_PAID event needs a fee")]
    FeeMissing,
    /// A negative fee on a stage other than FEE_PAID.
    #[error("field `fee_riel`: negative fee {fee} on a {stage} event is not a refund (refunds are negative FEE_PAID events)")]
    NegativeFeeNotRefund {
        /// The fee, in riel.
        fee: i64,
        /// The event's stage symbol.
        stage: &'static str,
    },
    /// A zero or positive fee on a stage other than FEE_PAID.
    #[error("field `fee_riel`: fee {fee} on a {stage} event; fees are recorded on FEE_PAID only")]
    FeeOnWrongStage {
        /// The fee, in riel.
        fee: i64,
        /// The event's stage symbol.
        stage: &'static str,
    },
    /// An `occurred_at` (or a unit-day's `date`) before [`earliest_accepted`].
    #[error("field `{field}`: {value} is before 2018-01-01, the start of OWSU reporting")]
    TooEarly {
        /// `occurred_at`, or `date` for a unit-day.
        field: &'static str,
        /// The time in RFC 3339 (Cambodia time), or the date.
        value: String,
    },
    /// An id field is empty; the value names it (`request_id` or `complaint_id`).
    #[error("field `{0}`: must not be empty")]
    Empty(&'static str),
    /// `supersedes_event_id` equals the event's own `event_id` (the value).
    #[error("field `supersedes_event_id`: an event cannot correct itself ({0})")]
    SelfCorrection(String),
    /// A unit-day count below zero.
    #[error("field `{field}`: count {value} is negative")]
    NegativeCount {
        /// `services_recorded` or `complaints_recorded`.
        field: &'static str,
        /// The count.
        value: i32,
    },
}

impl ValidationError {
    /// The record field at fault.
    pub fn field(&self) -> &'static str {
        use ValidationError::*;
        match self {
            UnknownUnit(_) => "unit_code",
            BadCode { field, .. } => field,
            ServiceNotInSector { .. } => "service_code",
            ImpossibleStage { .. } => "stage",
            MoneyOutOfBounds { field, .. } => field,
            FeeMissing | NegativeFeeNotRefund { .. } | FeeOnWrongStage { .. } => "fee_riel",
            TooEarly { field, .. } | NegativeCount { field, .. } => field,
            Empty(f) => f,
            SelfCorrection(_) => "supersedes_event_id",
        }
    }
}

/// Parses a service stage, or says it is impossible for a service record.
pub fn service_stage(value: &str) -> Result<ServiceStage, ValidationError> {
    ServiceStage::parse(value).ok_or_else(|| ValidationError::ImpossibleStage {
        kind: RecordKind::Service.as_str(),
        value: value.into(),
    })
}

/// Parses a complaint stage, or says it is impossible for a complaint record.
pub fn complaint_stage(value: &str) -> Result<ComplaintStage, ValidationError> {
    ComplaintStage::parse(value).ok_or_else(|| ValidationError::ImpossibleStage {
        kind: RecordKind::Complaint.as_str(),
        value: value.into(),
    })
}

fn check_times(
    occurred: Millis,
    recorded: Millis,
    now: Millis,
    flags: &mut Flags,
) -> Result<(), ValidationError> {
    if occurred < earliest_accepted() {
        return Err(ValidationError::TooEarly {
            field: "occurred_at",
            value: to_rfc3339(occurred),
        });
    }
    if recorded < occurred {
        flags.insert(Rule::RecordedBeforeOccurred);
    }
    if occurred.max(recorded) > now + CLOCK_SKEW_MS {
        flags.insert(Rule::FutureTime);
    }
    Ok(())
}

/// Longest service or sector code accepted, in bytes: a code the catalogue does not know is
/// counted under its own name, so it must look like a code (and cannot be a pasted paragraph).
pub const CODE_MAX_LEN: usize = 32;

fn check_code(field: &'static str, value: &str) -> Result<(), ValidationError> {
    let ok = (1..=CODE_MAX_LEN).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::BadCode {
            field,
            value: value.chars().take(CODE_MAX_LEN + 8).collect(),
        })
    }
}

/// Fee faults and, for a service the catalogue knows, fees outside its schedule.
fn check_fee(
    e: &ServiceEvent,
    service: Option<&Service>,
    flags: &mut Flags,
) -> Result<(), ValidationError> {
    match (e.stage, e.fee_riel) {
        (ServiceStage::FeePaid, None) => Err(ValidationError::FeeMissing),
        (ServiceStage::FeePaid, Some(fee)) => {
            let Some(service) = service else {
                return Ok(());
            };
            if fee > service.fee_max_riel {
                flags.insert(Rule::FeeAboveSchedule);
            } else if fee > 0 && fee < service.fee_min_riel {
                flags.insert(Rule::FeeBelowSchedule);
            } else if fee < 0 && fee.unsigned_abs() > service.fee_max_riel.unsigned_abs() {
                flags.insert(Rule::RefundAboveSchedule);
            }
            Ok(())
        }
        (_, None) => Ok(()),
        (stage, Some(fee)) if fee < 0 => Err(ValidationError::NegativeFeeNotRefund {
            fee,
            stage: stage.as_str(),
        }),
        (stage, Some(fee)) => Err(ValidationError::FeeOnWrongStage {
            fee,
            stage: stage.as_str(),
        }),
    }
}

/// Checks one record against the rules and the reference data: a structural fault is an
/// error; business-rule anomalies come back as [`Flags`] (the record is still counted). `now`
/// is the sender's clock, against which [`Rule::FutureTime`] is judged. The first fault found
/// is returned; the record itself is not changed.
pub fn validate(
    event: &Event,
    reference: &Reference,
    now: Millis,
) -> Result<Flags, ValidationError> {
    let mut flags = Flags::NONE;
    let unit_code = event.unit_code();
    let unit = reference
        .registry
        .get(unit_code)
        .ok_or_else(|| ValidationError::UnknownUnit(unit_code.to_owned()))?;
    match event {
        Event::Service(e) => {
            if !unit.has_owsu {
                flags.insert(Rule::ServiceWithoutOwsu);
            }
            if e.request_id.is_empty() {
                return Err(ValidationError::Empty("request_id"));
            }
            if let Some(fee) = e.fee_riel {
                // unsigned_abs: i64::MIN has no positive counterpart (`abs` would wrap).
                if fee.unsigned_abs() > MONEY_BOUND_RIEL.unsigned_abs() {
                    return Err(ValidationError::MoneyOutOfBounds {
                        field: "fee_riel",
                        value: fee,
                    });
                }
            }
            check_code("sector_code", &e.sector_code)?;
            check_code("service_code", &e.service_code)?;
            // A code the catalogue does not know (a service added after it, or retired from
            // it) is counted under its own code and flagged; a known service under another
            // sector than its own is a contradiction, refused.
            if reference.catalogue.sector(&e.sector_code).is_none() {
                flags.insert(Rule::UnknownSector);
            }
            let service = reference.catalogue.service(&e.service_code);
            match service {
                Some((sector, service)) => {
                    if sector.code != e.sector_code {
                        return Err(ValidationError::ServiceNotInSector {
                            service: service.code.clone(),
                            given: e.sector_code.clone(),
                            actual: sector.code.clone(),
                        });
                    }
                    if !service.levels.contains(&unit.level) {
                        flags.insert(Rule::ServiceNotAtLevel);
                    }
                }
                None => flags.insert(Rule::UnknownService),
            }
            check_fee(e, service.map(|(_, s)| s), &mut flags)?;
            if e.supersedes_event_id == Some(e.event_id) {
                return Err(ValidationError::SelfCorrection(e.event_id.to_string()));
            }
            check_times(e.occurred_at, e.recorded_at, now, &mut flags)?;
        }
        Event::Complaint(e) => {
            if !unit.has_ombudsman {
                flags.insert(Rule::ComplaintWithoutOmbudsman);
            }
            if e.complaint_id.is_empty() {
                return Err(ValidationError::Empty("complaint_id"));
            }
            if let Some(s) = &e.sector_code {
                check_code("sector_code", s)?;
                if reference.catalogue.sector(s).is_none() {
                    flags.insert(Rule::UnknownSector);
                }
            }
            if e.supersedes_event_id == Some(e.event_id) {
                return Err(ValidationError::SelfCorrection(e.event_id.to_string()));
            }
            check_times(e.occurred_at, e.recorded_at, now, &mut flags)?;
        }
        Event::UnitDay(e) => {
            if e.services_recorded < 0 {
                return Err(ValidationError::NegativeCount {
                    field: "services_recorded",
                    value: e.services_recorded,
                });
            }
            if e.complaints_recorded < 0 {
                return Err(ValidationError::NegativeCount {
                    field: "complaints_recorded",
                    value: e.complaints_recorded,
                });
            }
            let start = day_start(e.date);
            if start < earliest_accepted() {
                return Err(ValidationError::TooEarly {
                    field: "date",
                    value: e.date.to_string(),
                });
            }
            check_times(start, e.closed_at, now, &mut flags)?;
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{ComplaintEvent, ServiceEvent, UnitDayClosed};
    use crate::time::parse_rfc3339;
    use uuid::Uuid;

    fn reference() -> Reference {
        Reference::builtin()
    }
    fn now() -> Millis {
        parse_rfc3339("2021-06-01T12:00:00+07:00").unwrap()
    }
    fn good_service() -> ServiceEvent {
        ServiceEvent {
            event_id: Uuid::from_u128(1),
            unit_code: "KH-01".into(),
            request_id: "abc".into(),
            sector_code: "COM".into(),
            service_code: "COM-TRADE-LIC".into(),
            stage: ServiceStage::FeePaid,
            fee_riel: Some(100_000),
            channel: "counter".into(),
            occurred_at: parse_rfc3339("2021-05-03T09:00:00+07:00").unwrap(),
            recorded_at: parse_rfc3339("2021-05-03T09:05:00+07:00").unwrap(),
            supersedes_event_id: None,
            window_no: None,
        }
    }
    fn check(e: ServiceEvent) -> Result<Flags, ValidationError> {
        validate(&Event::Service(e), &reference(), now())
    }

    #[test]
    fn a_good_service_event_passes() {
        assert_eq!(check(good_service()), Ok(Flags::NONE));
        // A refund: negative fee on FEE_PAID.
        assert_eq!(
            check(ServiceEvent {
                fee_riel: Some(-100_000),
                ..good_service()
            }),
            Ok(Flags::NONE)
        );
    }

    #[test]
    fn business_anomalies_are_flagged_not_refused() {
        let one = |r: Rule| -> Flags { [r].into_iter().collect() };
        let cases: Vec<(ServiceEvent, Rule)> = vec![
            // Market stalls are a district service; KH-01 is provincial.
            (
                ServiceEvent {
                    service_code: "COM-MARKET-STALL".into(),
                    fee_riel: Some(10_000),
                    ..good_service()
                },
                Rule::ServiceNotAtLevel,
            ),
            (
                ServiceEvent {
                    fee_riel: Some(99_000_000),
                    ..good_service()
                },
                Rule::FeeAboveSchedule,
            ),
            (
                ServiceEvent {
                    fee_riel: Some(-99_000_000),
                    ..good_service()
                },
                Rule::RefundAboveSchedule,
            ),
            (
                ServiceEvent {
                    fee_riel: Some(100),
                    ..good_service()
                },
                Rule::FeeBelowSchedule,
            ),
            (
                ServiceEvent {
                    occurred_at: parse_rfc3339("2021-06-03T12:00:00+07:00").unwrap(),
                    recorded_at: parse_rfc3339("2021-06-03T12:00:00+07:00").unwrap(),
                    ..good_service()
                },
                Rule::FutureTime,
            ),
            (
                ServiceEvent {
                    recorded_at: parse_rfc3339("2021-05-03T08:00:00+07:00").unwrap(),
                    ..good_service()
                },
                Rule::RecordedBeforeOccurred,
            ),
        ];
        for (event, rule) in cases {
            assert_eq!(check(event.clone()), Ok(one(rule)), "{event:?}");
        }
        // Within the stated clock skew is not the future.
        let now = now();
        let e = ServiceEvent {
            occurred_at: now + CLOCK_SKEW_MS - 1,
            recorded_at: now + CLOCK_SKEW_MS,
            ..good_service()
        };
        assert_eq!(check(e), Ok(Flags::NONE));
    }

    #[test]
    fn money_beyond_the_bound_is_refused_whatever_its_sign() {
        for fee in [
            i64::MIN,
            -MONEY_BOUND_RIEL - 1,
            MONEY_BOUND_RIEL + 1,
            i64::MAX,
        ] {
            let e = check(ServiceEvent {
                fee_riel: Some(fee),
                ..good_service()
            })
            .unwrap_err();
            assert_eq!(
                e,
                ValidationError::MoneyOutOfBounds {
                    field: "fee_riel",
                    value: fee
                }
            );
            assert_eq!(e.field(), "fee_riel");
            assert!(e.to_string().contains(&fee.to_string()), "{e}");
        }
        // At the bound it is a structurally valid amount (here a refund above the schedule).
        let f = check(ServiceEvent {
            fee_riel: Some(-MONEY_BOUND_RIEL),
            ..good_service()
        })
        .unwrap();
        assert_eq!(f, [Rule::RefundAboveSchedule].into_iter().collect());
    }

    #[test]
    fn each_service_rule_names_its_field() {
        let cases: Vec<(ServiceEvent, &str, &str)> = vec![
            (
                ServiceEvent {
                    unit_code: "KH-99".into(),
                    ..good_service()
                },
                "unit_code",
                "KH-99",
            ),
            (
                ServiceEvent {
                    sector_code: "".into(),
                    ..good_service()
                },
                "sector_code",
                "",
            ),
            (
                ServiceEvent {
                    service_code: "COM NOPE; DROP".into(),
                    ..good_service()
                },
                "service_code",
                "COM NOPE; DROP",
            ),
            (
                ServiceEvent {
                    sector_code: "AGR".into(),
                    ..good_service()
                },
                "service_code",
                "AGR",
            ),
            (
                ServiceEvent {
                    stage: ServiceStage::Received,
                    fee_riel: Some(-500),
                    ..good_service()
                },
                "fee_riel",
                "-500",
            ),
            (
                ServiceEvent {
                    stage: ServiceStage::Delivered,
                    fee_riel: Some(500),
                    ..good_service()
                },
                "fee_riel",
                "500",
            ),
            (
                ServiceEvent {
                    fee_riel: None,
                    ..good_service()
                },
                "fee_riel",
                "FEE_PAID",
            ),
            (
                ServiceEvent {
                    occurred_at: parse_rfc3339("2017-12-31T23:00:00+07:00").unwrap(),
                    recorded_at: parse_rfc3339("2018-01-02T00:00:00+07:00").unwrap(),
                    ..good_service()
                },
                "occurred_at",
                "2017-12-31",
            ),
            (
                ServiceEvent {
                    request_id: String::new(),
                    ..good_service()
                },
                "request_id",
                "empty",
            ),
            (
                ServiceEvent {
                    supersedes_event_id: Some(Uuid::from_u128(1)),
                    ..good_service()
                },
                "supersedes_event_id",
                "itself",
            ),
        ];
        for (event, field, value) in cases {
            let err = check(event.clone()).expect_err(&format!("{event:?} should fail"));
            assert_eq!(err.field(), field, "{err}");
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("`{field}`")) && msg.contains(value),
                "{msg}"
            );
        }
    }

    #[test]
    fn impossible_stages_are_named() {
        let err = complaint_stage("FEE_PAID").unwrap_err();
        assert_eq!(err.field(), "stage");
        assert!(err.to_string().contains("FEE_PAID") && err.to_string().contains("complaint"));
        assert!(service_stage("RESOLVED").is_err());
        assert_eq!(service_stage("DELIVERED").unwrap(), ServiceStage::Delivered);
    }

    #[test]
    fn codes_the_catalogue_does_not_know_are_flagged_not_refused() {
        let r = reference();
        let unknown_service = ServiceEvent {
            service_code: "COM-NEW-2030".into(),
            ..good_service()
        };
        let f = validate(&Event::Service(unknown_service), &r, now()).unwrap();
        assert!(f.contains(Rule::UnknownService) && !f.contains(Rule::UnknownSector));
        let both = ServiceEvent {
            sector_code: "NEW".into(),
            service_code: "NEW-1".into(),
            ..good_service()
        };
        let f = validate(&Event::Service(both), &r, now()).unwrap();
        assert!(f.contains(Rule::UnknownService) && f.contains(Rule::UnknownSector));
    }

    #[test]
    fn complaint_and_unit_day_rules() {
        let r = reference();
        let c = ComplaintEvent {
            event_id: Uuid::from_u128(5),
            unit_code: "KH-12".into(),
            complaint_id: "x".into(),
            sector_code: Some("NOPE".into()),
            stage: ComplaintStage::Received,
            occurred_at: good_service().occurred_at,
            recorded_at: good_service().recorded_at,
            supersedes_event_id: None,
        };
        // A sector the catalogue does not know: counted under its code, flagged.
        assert!(validate(&Event::Complaint(c.clone()), &r, now())
            .unwrap()
            .contains(Rule::UnknownSector));
        let bad = ComplaintEvent {
            sector_code: Some("a sector\n".into()),
            ..c.clone()
        };
        assert_eq!(
            validate(&Event::Complaint(bad), &r, now())
                .unwrap_err()
                .field(),
            "sector_code"
        );
        let no_office = r
            .registry
            .units
            .iter()
            .find(|u| !u.has_ombudsman)
            .unwrap()
            .code
            .clone();
        // A complaint is a complaint wherever it was recorded: flagged, not refused.
        let flags = validate(
            &Event::Complaint(ComplaintEvent {
                unit_code: no_office,
                sector_code: None,
                ..c
            }),
            &r,
            now(),
        )
        .unwrap();
        assert_eq!(
            flags,
            [Rule::ComplaintWithoutOmbudsman].into_iter().collect()
        );
        let day = UnitDayClosed {
            unit_code: "KH-12".into(),
            date: NaiveDate::from_ymd_opt(2021, 5, 3).unwrap(),
            services_recorded: -1,
            complaints_recorded: 0,
            closed_at: good_service().recorded_at,
        };
        assert_eq!(
            validate(&Event::UnitDay(day.clone()), &r, now())
                .unwrap_err()
                .field(),
            "services_recorded"
        );
        validate(
            &Event::UnitDay(UnitDayClosed {
                services_recorded: 3,
                ..day
            }),
            &r,
            now(),
        )
        .unwrap();
    }
}
