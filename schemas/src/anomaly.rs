//! Business-rule anomalies: records a real office could honestly send that break a rule of the
//! reference data or of the process. They are **counted as recorded and flagged**, never
//! refused — a fee above the legal schedule is exactly what oversight wants to see, and a
//! complaint is a complaint wherever it was recorded. (Structural faults, which make a record
//! meaningless, are [`crate::ValidationError`]s and are refused.)
//!
//! Rules about one event are checked by [`crate::validate()`] and kept with the event: the raw
//! tables' `anomalies` column holds their codes, comma-separated. Rules about several events (a
//! request's stages, a unit-day's own count) are derived by the quality report from the raw
//! tables at one table version, so they never depend on the order events arrived in.
//!
//! The codes are part of the lake's contract: never renamed, never reused.

use std::fmt;

/// A business rule. [`Rule::code`] is the stable name stored in the lake and shown in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// A positive fee above the catalogue's maximum for the service: possible overcharging.
    FeeAboveSchedule,
    /// A fee below the catalogue's minimum for the service (a positive fee).
    FeeBelowSchedule,
    /// A refund larger than the catalogue's maximum fee for the service.
    RefundAboveSchedule,
    /// A service the catalogue does not offer at the unit's level (provincial or district).
    ServiceNotAtLevel,
    /// A service event at a unit the registry lists without a One Window Service Unit.
    ServiceWithoutOwsu,
    /// A complaint at a unit the registry lists without an Ombudsman office.
    ComplaintWithoutOmbudsman,
    /// A service code the catalogue does not know (added after this catalogue, or mistyped).
    UnknownService,
    /// A sector code the catalogue does not know.
    UnknownSector,
    /// Recorded (or a day closed) before the event occurred (the day began).
    RecordedBeforeOccurred,
    /// A time more than [`CLOCK_SKEW_MS`] after the clock of the process that sent the event.
    FutureTime,
    /// Derived: a request's stages happened in an impossible order (e.g. APPROVED before
    /// FEE_PAID, FEE_PAID before RECEIVED).
    StagesOutOfOrder,
    /// Derived: a request DELIVERED before it was RECEIVED (negative processing time).
    DeliveredBeforeReceived,
    /// Derived: a closed unit-day whose own count differs from the events that arrived.
    UnitDayMismatch,
    /// Derived: a correction whose original has not arrived (held until it does).
    CorrectionWaiting,
}

/// How far ahead of the sender's clock an event's time may be before it is flagged
/// [`Rule::FutureTime`]: one hour, for office clocks set a little wrong.
pub const CLOCK_SKEW_MS: i64 = 3_600_000;

impl Rule {
    /// Every rule, in report order.
    pub const ALL: [Rule; 14] = [
        Rule::FeeAboveSchedule,
        Rule::FeeBelowSchedule,
        Rule::RefundAboveSchedule,
        Rule::ServiceNotAtLevel,
        Rule::ServiceWithoutOwsu,
        Rule::ComplaintWithoutOmbudsman,
        Rule::UnknownService,
        Rule::UnknownSector,
        Rule::RecordedBeforeOccurred,
        Rule::FutureTime,
        Rule::StagesOutOfOrder,
        Rule::DeliveredBeforeReceived,
        Rule::UnitDayMismatch,
        Rule::CorrectionWaiting,
    ];

    /// The stable code kept in the lake.
    pub fn code(self) -> &'static str {
        match self {
            Rule::FeeAboveSchedule => "FEE_ABOVE_SCHEDULE",
            Rule::FeeBelowSchedule => "FEE_BELOW_SCHEDULE",
            Rule::RefundAboveSchedule => "REFUND_ABOVE_SCHEDULE",
            Rule::ServiceNotAtLevel => "SERVICE_NOT_AT_LEVEL",
            Rule::ServiceWithoutOwsu => "SERVICE_WITHOUT_OWSU",
            Rule::ComplaintWithoutOmbudsman => "COMPLAINT_WITHOUT_OMBUDSMAN",
            Rule::UnknownService => "UNKNOWN_SERVICE",
            Rule::UnknownSector => "UNKNOWN_SECTOR",
            Rule::RecordedBeforeOccurred => "RECORDED_BEFORE_OCCURRED",
            Rule::FutureTime => "FUTURE_TIME",
            Rule::StagesOutOfOrder => "STAGES_OUT_OF_ORDER",
            Rule::DeliveredBeforeReceived => "DELIVERED_BEFORE_RECEIVED",
            Rule::UnitDayMismatch => "UNIT_DAY_MISMATCH",
            Rule::CorrectionWaiting => "CORRECTION_WAITING",
        }
    }

    /// What the rule means, for reports and the data dictionary.
    pub fn meaning(self) -> &'static str {
        match self {
            Rule::FeeAboveSchedule => {
                "fee above the catalogue's maximum for the service (possible overcharging)"
            }
            Rule::FeeBelowSchedule => "fee below the catalogue's minimum for the service",
            Rule::RefundAboveSchedule => "refund larger than the service's maximum fee",
            Rule::ServiceNotAtLevel => "service not offered at the unit's level",
            Rule::ServiceWithoutOwsu => "service at a unit listed without a One Window office",
            Rule::ComplaintWithoutOmbudsman => {
                "complaint at a unit listed without an Ombudsman office"
            }
            Rule::UnknownService => "service code not in the catalogue",
            Rule::UnknownSector => "sector code not in the catalogue",
            Rule::RecordedBeforeOccurred => "recorded before it occurred",
            Rule::FutureTime => "time more than an hour ahead of the sender's clock",
            Rule::StagesOutOfOrder => "a request's stages in an impossible order",
            Rule::DeliveredBeforeReceived => "delivered before it was received",
            Rule::UnitDayMismatch => "a unit's own count of a day differs from what arrived",
            Rule::CorrectionWaiting => "a correction whose original has not arrived",
        }
    }

    /// True for rules found across several events by the quality report, not kept per event.
    pub fn derived(self) -> bool {
        matches!(
            self,
            Rule::StagesOutOfOrder
                | Rule::DeliveredBeforeReceived
                | Rule::UnitDayMismatch
                | Rule::CorrectionWaiting
        )
    }

    /// The rule whose [`Rule::code`] is exactly `code`; `None` for any other text.
    pub fn parse(code: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.code() == code)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The rules one event breaks (a small set; empty for almost every event).
/// `Display` writes the codes comma-separated, in [`Rule::ALL`] order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags(u32);

impl Flags {
    /// No rule broken.
    pub const NONE: Flags = Flags(0);

    /// Adds `r` (adding it twice changes nothing).
    pub fn insert(&mut self, r: Rule) {
        self.0 |= r.bit();
    }
    /// True when `r` is in the set.
    pub fn contains(self, r: Rule) -> bool {
        self.0 & r.bit() != 0
    }
    /// True when no rule is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The rules in the set, in [`Rule::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Rule> {
        Rule::ALL.into_iter().filter(move |r| self.contains(*r))
    }
    /// The lake's form: codes joined by commas, `None` when there are none.
    pub fn to_column(self) -> Option<String> {
        (!self.is_empty()).then(|| self.to_string())
    }
    /// Reads the lake's form (spaces around codes and empty items are ignored; the empty
    /// string is [`Flags::NONE`]). An unknown code (from a later release) is the error value.
    pub fn parse(s: &str) -> Result<Flags, String> {
        let mut f = Flags::NONE;
        for code in s.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            f.insert(Rule::parse(code).ok_or_else(|| code.to_owned())?);
        }
        Ok(f)
    }
}

impl FromIterator<Rule> for Flags {
    fn from_iter<I: IntoIterator<Item = Rule>>(iter: I) -> Self {
        let mut f = Flags::NONE;
        for r in iter {
            f.insert(r);
        }
        f
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(r.code())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        let mut codes: Vec<_> = Rule::ALL.iter().map(|r| r.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Rule::ALL.len());
        for r in Rule::ALL {
            assert_eq!(Rule::parse(r.code()), Some(r));
        }
        let f: Flags = [Rule::FutureTime, Rule::FeeAboveSchedule]
            .into_iter()
            .collect();
        assert_eq!(f.to_string(), "FEE_ABOVE_SCHEDULE,FUTURE_TIME");
        assert_eq!(Flags::parse(&f.to_string()), Ok(f));
        assert_eq!(Flags::NONE.to_column(), None);
        assert_eq!(Flags::parse("NOT_A_RULE"), Err("NOT_A_RULE".to_owned()));
    }
}
