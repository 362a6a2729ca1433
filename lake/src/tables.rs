//! Every table of the lake, defined once: name, location, columns, sort order, statistics.
//!
//! Writers conform their frames to these definitions ([`crate::frame::conform`]) and readers
//! take column names from them, so a column exists in exactly one place in the code. The README's
//! "Lake layout" section is this file in prose.
//!
//! No table is partitioned: partition columns are not stored inside Delta's Parquet files, so a
//! reader that opens the files directly (DuckDB, pandas) would lose them. Files are instead few
//! and large and carry min/max statistics of the columns in `stats`, which Delta readers use to
//! skip files.

use polars::prelude::{DataType as PlType, TimeUnit, TimeZone};

/// A column's type, as Delta names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// UTF-8 text.
    String,
    /// 64-bit integer.
    Long,
    /// 32-bit integer.
    Integer,
    /// Calendar date (Cambodia time where it is a day of events).
    Date,
    /// Instant, microseconds, UTC.
    Timestamp,
    /// True or false.
    Boolean,
    /// 64-bit floating point.
    Double,
}

impl ColumnType {
    /// The Delta type.
    pub fn delta(self) -> deltalake::kernel::DataType {
        use deltalake::kernel::{DataType, PrimitiveType};
        DataType::Primitive(match self {
            ColumnType::String => PrimitiveType::String,
            ColumnType::Long => PrimitiveType::Long,
            ColumnType::Integer => PrimitiveType::Integer,
            ColumnType::Date => PrimitiveType::Date,
            ColumnType::Timestamp => PrimitiveType::Timestamp,
            ColumnType::Boolean => PrimitiveType::Boolean,
            ColumnType::Double => PrimitiveType::Double,
        })
    }

    /// The polars type a frame must have to be written as this column.
    pub fn polars(self) -> PlType {
        match self {
            ColumnType::String => PlType::String,
            ColumnType::Long => PlType::Int64,
            ColumnType::Integer => PlType::Int32,
            ColumnType::Date => PlType::Date,
            ColumnType::Timestamp => PlType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)),
            ColumnType::Boolean => PlType::Boolean,
            ColumnType::Double => PlType::Float64,
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, Copy)]
pub struct Col {
    /// Column name, as stored in Parquet and Delta.
    pub name: &'static str,
    /// Its type.
    pub ty: ColumnType,
    /// Whether it may hold nulls; writers refuse nulls in a column that may not.
    pub(crate) nullable: bool,
    /// What the column means (the data dictionary).
    pub doc: &'static str,
}

const fn col(name: &'static str, ty: ColumnType, doc: &'static str) -> Col {
    Col {
        name,
        ty,
        nullable: false,
        doc,
    }
}

const fn opt(name: &'static str, ty: ColumnType, doc: &'static str) -> Col {
    Col {
        name,
        ty,
        nullable: true,
        doc,
    }
}

/// Raw tables hold events as they arrived; summary tables are a pure function of raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Events as they arrived, with their Kafka position.
    Raw,
    /// Figures derived from the raw tables (rebuilt from them when needed).
    Summary,
    /// Append-only records of what operators decided (never rebuilt, compacted or vacuumed).
    Audit,
}

/// A Delta table of the lake.
#[derive(Debug)]
pub struct TableDef {
    /// Short name, used in logs, reports and CLI output.
    pub name: &'static str,
    /// Location under the store root.
    pub path: &'static str,
    /// Raw or summary.
    pub role: Role,
    /// What the table holds (also the Delta table's comment).
    pub doc: &'static str,
    /// The columns, in their stored order.
    pub columns: &'static [Col],
    /// Rows in every file are sorted by these columns.
    pub sort_by: &'static [&'static str],
    /// Columns whose min/max go into each file's Delta statistics (file skipping).
    pub stats: &'static [&'static str],
}

impl TableDef {
    /// The column named `name`, if the table has one.
    pub fn column(&self, name: &str) -> Option<&Col> {
        self.columns.iter().find(|c| c.name == name)
    }
    /// The column names, in their stored order.
    pub(crate) fn column_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.columns.iter().map(|c| c.name)
    }
}

use ColumnType::*;

const KAFKA_PARTITION: Col = col(
    "kafka_partition",
    Integer,
    "Kafka partition the event was read from.",
);
const KAFKA_OFFSET: Col = col(
    "kafka_offset",
    Long,
    "Kafka offset the event was read from.",
);
const ANOMALIES: Col = opt(
    "anomalies",
    String,
    "Business-rule anomalies of this event: rule codes, comma-separated (README, \"Anomalies\"); null when none. Counted as recorded all the same.",
);
const UNIT: Col = col("unit_code", String, "Reporting unit (KH-PP or KH-PPDD).");
const PROVINCE: Col = col(
    "province_code",
    String,
    "Province of the unit (KH-PP; the unit itself for a province).",
);
const LEVEL: Col = col("level", String, "provincial or district.");
const DAY: Col = col("date", Date, "Day in Cambodia time (UTC+07:00).");

/// `raw/service_events`: every accepted service event, duplicates included.
pub const RAW_SERVICE_EVENTS: TableDef = TableDef {
    name: "raw_service_events",
    path: "raw/service_events",
    role: Role::Raw,
    doc:
        "Every accepted ServiceEvent as it arrived (duplicates included), with its Kafka position.",
    columns: &[
        col("event_id", String, "Event id (UUID)."),
        UNIT,
        col(
            "request_id",
            String,
            "Pseudonymous request id (keyed hash).",
        ),
        col("sector_code", String, "Sector of the service."),
        col("service_code", String, "Service type."),
        col(
            "stage",
            String,
            "RECEIVED, FEE_PAID, APPROVED, REJECTED, DELIVERED or CANCELLED.",
        ),
        opt(
            "fee_riel",
            Long,
            "Fee in riel on FEE_PAID (negative: refund).",
        ),
        col("channel", String, "Counter, online, ..."),
        col("occurred_at", Timestamp, "When it happened."),
        col("recorded_at", Timestamp, "When the office recorded it."),
        opt(
            "supersedes_event_id",
            String,
            "The event this one corrects.",
        ),
        opt("window_no", Integer, "Counter window number."),
        col("event_date", Date, "Day of occurred_at in Cambodia time."),
        KAFKA_PARTITION,
        KAFKA_OFFSET,
        ANOMALIES,
    ],
    sort_by: &["unit_code", "occurred_at"],
    stats: &["kafka_partition", "kafka_offset", "event_date", "unit_code"],
};

/// `raw/complaint_events`: every accepted complaint event.
pub const RAW_COMPLAINT_EVENTS: TableDef = TableDef {
    name: "raw_complaint_events",
    path: "raw/complaint_events",
    role: Role::Raw,
    doc: "Every accepted ComplaintEvent as it arrived, with its Kafka position.",
    columns: &[
        col("event_id", String, "Event id (UUID)."),
        UNIT,
        col("complaint_id", String, "Pseudonymous complaint id (keyed hash)."),
        opt("sector_code", String, "Sector, when known."),
        col("stage", String, "RECEIVED, WITHIN_JURISDICTION, OUTSIDE_JURISDICTION, MORE_INFO_REQUIRED, RESOLVED or WITHDRAWN."),
        col("occurred_at", Timestamp, "When it happened."),
        col("recorded_at", Timestamp, "When the office recorded it."),
        opt("supersedes_event_id", String, "The event this one corrects."),
        col("event_date", Date, "Day of occurred_at in Cambodia time."),
        KAFKA_PARTITION,
        KAFKA_OFFSET,
        ANOMALIES,
    ],
    sort_by: &["unit_code", "occurred_at"],
    stats: &["kafka_partition", "kafka_offset", "event_date", "unit_code"],
};

/// `raw/unit_days`: every UnitDayClosed, a unit's own count of a working day.
pub const RAW_UNIT_DAYS: TableDef = TableDef {
    name: "raw_unit_days",
    path: "raw/unit_days",
    role: Role::Raw,
    doc: "Every UnitDayClosed as it arrived: a unit's own count of a working day.",
    columns: &[
        UNIT,
        col("date", Date, "The working day closed."),
        col(
            "services_recorded",
            Integer,
            "The unit's own count of service events recorded that day.",
        ),
        col(
            "complaints_recorded",
            Integer,
            "The unit's own count of complaint events recorded that day.",
        ),
        col("closed_at", Timestamp, "When the day was closed."),
        KAFKA_PARTITION,
        KAFKA_OFFSET,
        ANOMALIES,
    ],
    sort_by: &["unit_code", "date"],
    stats: &["kafka_partition", "kafka_offset", "date", "unit_code"],
};

/// `summaries/services_daily`: per unit, day and service.
pub const SERVICES_DAILY: TableDef = TableDef {
    name: "services_daily",
    path: "summaries/services_daily",
    role: Role::Summary,
    doc: "Per unit, day and service: requests, deliveries, fees and processing time sums.",
    columns: &[
        DAY,
        UNIT,
        PROVINCE,
        LEVEL,
        col("sector_code", String, "Sector of the service."),
        col("service_code", String, "Service type."),
        col(
            "requests_received",
            Long,
            "Requests whose first RECEIVED falls on this day.",
        ),
        col(
            "services_delivered",
            Long,
            "Requests whose first DELIVERED falls on this day (services provided).",
        ),
        col("requests_rejected", Long, "Requests rejected on this day."),
        col(
            "requests_cancelled",
            Long,
            "Requests cancelled on this day.",
        ),
        col("fee_payments", Long, "FEE_PAID events with a positive fee."),
        col("refunds", Long, "FEE_PAID events with a negative fee."),
        col(
            "revenue_riel",
            Long,
            "Sum of fees paid on this day, refunds negative (riel).",
        ),
        col(
            "processing_seconds_sum",
            Long,
            "Sum of DELIVERED - RECEIVED over the services delivered (seconds).",
        ),
        col(
            "processing_count",
            Long,
            "Services delivered with a known RECEIVED time.",
        ),
    ],
    sort_by: &["date", "unit_code", "service_code"],
    stats: &["date", "unit_code"],
};

/// `summaries/complaints_daily`: per unit, day of receipt and sector.
pub const COMPLAINTS_DAILY: TableDef = TableDef {
    name: "complaints_daily",
    path: "summaries/complaints_daily",
    role: Role::Summary,
    doc: "Per unit, day of receipt and sector: complaints by jurisdiction and by status.",
    columns: &[
        DAY,
        UNIT,
        PROVINCE,
        LEVEL,
        opt("sector_code", String, "Sector, when known."),
        col(
            "complaints_received",
            Long,
            "Complaints whose RECEIVED falls on this day.",
        ),
        col(
            "within_jurisdiction",
            Long,
            "Of those, latest jurisdiction decision within (or resolved).",
        ),
        col(
            "outside_jurisdiction",
            Long,
            "Of those, latest decision outside jurisdiction.",
        ),
        col(
            "jurisdiction_undecided",
            Long,
            "Of those, no jurisdiction decision yet.",
        ),
        col("resolved", Long, "Latest status RESOLVED."),
        col(
            "more_info_required",
            Long,
            "Latest status MORE_INFO_REQUIRED.",
        ),
        col("open", Long, "No status event yet."),
        col("withdrawn", Long, "Latest status WITHDRAWN."),
        col(
            "open_within_jurisdiction",
            Long,
            "Open and within jurisdiction: answers owed.",
        ),
    ],
    sort_by: &["date", "unit_code", "sector_code"],
    stats: &["date", "unit_code"],
};

/// `summaries/unit_days`: per unit and day, the unit's own counts against what arrived.
pub const UNIT_DAYS: TableDef = TableDef {
    name: "unit_days",
    path: "summaries/unit_days",
    role: Role::Summary,
    doc: "Per unit and day: whether the unit closed the day, and its own counts against what arrived.",
    columns: &[
        DAY,
        UNIT,
        PROVINCE,
        LEVEL,
        col("closed", Boolean, "A UnitDayClosed arrived for this day."),
        opt("reported_services", Long, "The unit's own count of service events (latest close)."),
        opt("reported_complaints", Long, "The unit's own count of complaint events (latest close)."),
        col("arrived_services", Long, "Distinct service events recorded on this day that arrived."),
        col("arrived_complaints", Long, "Distinct complaint events recorded on this day that arrived."),
        opt("services_gap", Long, "reported - arrived (services); positive: events missing."),
        opt("complaints_gap", Long, "reported - arrived (complaints)."),
        col("status", String, "ok, missing_events, extra_events or not_closed."),
    ],
    sort_by: &["date", "unit_code"],
    stats: &["date", "unit_code"],
};

/// `summaries/processing_times`: one row per delivered request.
pub const PROCESSING_TIMES: TableDef = TableDef {
    name: "processing_times",
    path: "summaries/processing_times",
    role: Role::Summary,
    doc: "One row per delivered request: its processing time (exact medians and percentiles).",
    columns: &[
        DAY,
        UNIT,
        PROVINCE,
        LEVEL,
        col("sector_code", String, "Sector of the service."),
        col("service_code", String, "Service type."),
        col("processing_seconds", Long, "DELIVERED - RECEIVED, seconds."),
        col("processing_days", Double, "The same in days."),
        opt(
            "received_date",
            Date,
            "Day of its first RECEIVED, Cambodia time (null in rows an older aggregator wrote).",
        ),
    ],
    sort_by: &["date", "unit_code", "service_code", "processing_seconds"],
    stats: &["date", "unit_code"],
};

/// `audit/offset_gaps`: events Kafka deleted before the lake held them, accepted by an operator.
///
/// The aggregator refuses to resume a partition whose next offset Kafka no longer has (retention
/// passed while no aggregator ran): resuming at the log start would skip those events silently.
/// `owsu-aggregator run --accept-gaps-by NAME` resumes there and appends one row per gap here,
/// so every report can say what the figures lack.
pub const OFFSET_GAPS: TableDef = TableDef {
    name: "offset_gaps",
    path: "audit/offset_gaps",
    role: Role::Audit,
    doc: "Offsets Kafka deleted before the lake held them, and who accepted the loss.",
    columns: &[
        col("topic", String, "Kafka topic of the gap."),
        KAFKA_PARTITION,
        opt(
            "lake_offset",
            Long,
            "Last offset of the partition the lake held (null: none).",
        ),
        col(
            "log_start",
            Long,
            "First offset Kafka still had: the aggregator resumed here.",
        ),
        col(
            "events_lost",
            Long,
            "Offsets in between, never counted (log_start - lake_offset - 1).",
        ),
        col(
            "group_id",
            String,
            "Consumer group of the aggregator that accepted the gap.",
        ),
        col(
            "accepted_by",
            String,
            "The operator who accepted it (--accept-gaps-by).",
        ),
        col("accepted_at", Timestamp, "When it was accepted (UTC)."),
    ],
    sort_by: &["topic", "kafka_partition", "log_start"],
    stats: &["topic"],
};

/// `audit/approvals`: approvals of yearly reviews, append-only.
///
/// An approval fixes the table versions a review was computed from, so the approved review can
/// be computed again, byte for byte, at any later time (Delta time travel), while late events
/// and corrections for the year keep landing in the lake; a later approval supersedes it and
/// both stay here.
pub const APPROVALS: TableDef = TableDef {
    name: "approvals",
    path: "audit/approvals",
    role: Role::Audit,
    doc: "Approvals of yearly reviews: who, when, the table versions and a digest of the figures.",
    columns: &[
        col("year", Integer, "The year reviewed."),
        opt("scope", String, "Province or unit code of a scoped review; null: national."),
        col("approved_by", String, "Who approved it (owsu-jobs approve --by)."),
        col("approved_at", Timestamp, "When (UTC)."),
        col("table_versions", String, "The Delta version of each table the figures were computed from (JSON object: table name to version)."),
        col("digest", String, "sha256 of the review's review.json at approval (sha256:<hex>)."),
        opt("supersedes", String, "Digest of the approval of the same year and scope this one replaces; null: the first."),
    ],
    sort_by: &["year", "approved_at"],
    stats: &["year"],
};

/// The raw tables, in `RecordKind` order (service, complaint, unit-day).
pub const RAW: [&TableDef; 3] = [&RAW_SERVICE_EVENTS, &RAW_COMPLAINT_EVENTS, &RAW_UNIT_DAYS];

/// The summary tables.
pub const SUMMARIES: [&TableDef; 4] = [
    &SERVICES_DAILY,
    &COMPLAINTS_DAILY,
    &UNIT_DAYS,
    &PROCESSING_TIMES,
];

/// Every table: the raw ones, then the summaries.
pub const ALL: [&TableDef; 7] = [
    &RAW_SERVICE_EVENTS,
    &RAW_COMPLAINT_EVENTS,
    &RAW_UNIT_DAYS,
    &SERVICES_DAILY,
    &COMPLAINTS_DAILY,
    &UNIT_DAYS,
    &PROCESSING_TIMES,
];

/// A table by its short name ([`TableDef::name`]).
pub fn by_name(name: &str) -> Option<&'static TableDef> {
    ALL.into_iter()
        .chain([&OFFSET_GAPS, &APPROVALS])
        .find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_are_consistent() {
        for t in ALL {
            for c in t.sort_by.iter().chain(t.stats) {
                assert!(
                    t.column(c).is_some(),
                    "{}: sort/stats column {c} is not a column",
                    t.name
                );
            }
            let mut names: Vec<_> = t.column_names().collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), t.columns.len(), "{}: duplicate column", t.name);
            assert!(by_name(t.name).is_some());
        }
    }
}
