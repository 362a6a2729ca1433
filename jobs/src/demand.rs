//! Sector demand for researchers: month × province × unit × sector × service, as Parquet
//! (Hive-partitioned by year) and CSV, with a data dictionary. DuckDB, pandas and polars read
//! it directly:
//! `duckdb -c "select * from read_parquet('DIR/sector_demand/**/*.parquet', hive_partitioning=true)"`.
//!
//! Every file is replaced whole (`crate::output`), and `year=` directories an earlier run
//! wrote that this run does not are removed, so the directory holds one export only. Sums that
//! do not fit are an error (`crate::sum`), never a wrapped figure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate};
use owsu_lake::Store;
use owsu_schemas::reference::Reference;
use polars::prelude::*;

use crate::data::{self, median_p90, Ix, Want};
use crate::sum::add;

/// Parses `YYYY-MM` into (year, month). Fails without a `-`, on a part that is not a number,
/// or on a month outside 1 to 12.
pub(crate) fn parse_month(s: &str) -> anyhow::Result<(i32, u32)> {
    let (y, m) = s
        .split_once('-')
        .ok_or_else(|| anyhow::anyhow!("{s:?} is not YYYY-MM"))?;
    let (y, m): (i32, u32) = (y.parse()?, m.parse()?);
    anyhow::ensure!((1..=12).contains(&m), "{s:?}: month must be 01 to 12");
    Ok((y, m))
}

#[derive(Default)]
struct Cell {
    received: i64,
    delivered: i64,
    rejected: i64,
    cancelled: i64,
    fee_payments: i64,
    refunds: i64,
    revenue: i64,
    days: Vec<f64>,
}

/// What was written.
pub struct DemandOutput {
    /// Rows of the dataset: one per month, unit and service with any figure.
    pub rows: usize,
    /// The lake table versions the rows were computed from.
    pub lake_versions: owsu_lake::snapshot::Versions,
    /// The latest day with figures.
    pub latest_day: Option<NaiveDate>,
    /// `OUT/sector_demand`, holding `year=YYYY/part-0.parquet` for each year with rows.
    pub parquet_dir: PathBuf,
    /// `OUT/sector_demand.csv`: the same rows, without the `year` column.
    pub csv: PathBuf,
    /// `OUT/DATA_DICTIONARY.md`: the columns, the period, the scope and the table versions.
    pub dictionary: PathBuf,
}

/// Computes and writes the dataset for the months `from` to `to` (inclusive, as (year, month))
/// of the units in `scope` (a province or unit code; all when `None`) into `out`.
///
/// Reads `services_daily` and `processing_times` at their latest versions. Fails when `from`
/// is after `to`, when there are no service figures in the range, when a sum does not fit,
/// or when a read or write fails.
pub async fn run(
    store: &Store,
    reference: &Reference,
    from: (i32, u32),
    to: (i32, u32),
    scope: Option<&str>,
    out: &Path,
) -> anyhow::Result<DemandOutput> {
    anyhow::ensure!(from <= to, "--from must not be after --to");
    let mut ix = Ix::new(reference);
    let start = NaiveDate::from_ymd_opt(from.0, from.1, 1).expect("month");
    let end = NaiveDate::from_ymd_opt(
        to.0 + i32::from(to.1 == 12),
        if to.1 == 12 { 1 } else { to.1 + 1 },
        1,
    )
    .expect("month")
    .pred_opt()
    .expect("day");
    let s = data::load(
        store,
        &mut ix,
        Want {
            services: true,
            processing: true,
            ..Default::default()
        },
        start,
        end,
        scope,
        None,
    )
    .await?;
    anyhow::ensure!(
        !s.services.is_empty(),
        "no service figures from {start} to {end}{} in the lake (tables {}): \
         check --from/--to and --scope",
        scope.map(|x| format!(" for {x}")).unwrap_or_default(),
        s.versions,
    );
    let mut cells: BTreeMap<((i32, u32), u16, u16), Cell> = BTreeMap::new();
    for r in &s.services {
        let c = cells
            .entry(((r.date.year(), r.date.month()), r.unit, r.service))
            .or_default();
        let (unit, service) = (&ix.unit(r.unit).code, ix.service_code(r.service));
        let (y, m) = (r.date.year(), r.date.month());
        let at = format_args!("{unit}, {service}, {y}-{m:02}");
        add(&mut c.received, r.received, "requests_received", &at)?;
        add(&mut c.delivered, r.delivered, "services_delivered", &at)?;
        add(&mut c.rejected, r.rejected, "requests_rejected", &at)?;
        add(&mut c.cancelled, r.cancelled, "requests_cancelled", &at)?;
        add(&mut c.fee_payments, r.fee_payments, "fee_payments", &at)?;
        add(&mut c.refunds, r.refunds, "refunds", &at)?;
        add(&mut c.revenue, r.revenue_riel, "revenue_riel", &at)?;
    }
    for p in &s.processing {
        cells
            .entry(((p.date.year(), p.date.month()), p.unit, p.service))
            .or_default()
            .days
            .push(p.days);
    }
    let n = cells.len();
    let (mut year, mut month, mut province, mut unit, mut level, mut sector, mut service) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut province_name, mut unit_name) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut rec, mut del, mut rej, mut can, mut pay, mut refu, mut rev, mut med, mut p90) = (
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
    );
    for (((y, m), u, sv), mut c) in cells {
        let unit_ref = ix.unit(u);
        year.push(y);
        month.push(format!("{y}-{m:02}"));
        province.push(unit_ref.province_code.clone());
        province_name.push(unit_ref.province_name.clone());
        unit.push(unit_ref.code.clone());
        unit_name.push(unit_ref.name.clone());
        level.push(unit_ref.level.as_str());
        sector.push(ix.sector(ix.service_sector[sv as usize]).code.clone());
        service.push(ix.service_code(sv).to_owned());
        rec.push(c.received);
        del.push(c.delivered);
        rej.push(c.rejected);
        can.push(c.cancelled);
        pay.push(c.fee_payments);
        refu.push(c.refunds);
        rev.push(c.revenue);
        let (md, p) = median_p90(&mut c.days);
        med.push(md);
        p90.push(p);
    }
    let col = |name: &str, s: Series| Column::from(s.with_name(name.into()));
    let mut df = DataFrame::new_infer_height(vec![
        col("month", Series::new("".into(), month)),
        col("province_code", Series::new("".into(), province)),
        col("province_name", Series::new("".into(), province_name)),
        col("unit_code", Series::new("".into(), unit)),
        col("unit_name", Series::new("".into(), unit_name)),
        col("level", Series::new("".into(), level)),
        col("sector_code", Series::new("".into(), sector)),
        col("service_code", Series::new("".into(), service)),
        col("requests_received", Series::new("".into(), rec)),
        col("services_delivered", Series::new("".into(), del)),
        col("requests_rejected", Series::new("".into(), rej)),
        col("requests_cancelled", Series::new("".into(), can)),
        col("fee_payments", Series::new("".into(), pay)),
        col("refunds", Series::new("".into(), refu)),
        col("revenue_riel", Series::new("".into(), rev)),
        col("median_processing_days", Series::new("".into(), med)),
        col("p90_processing_days", Series::new("".into(), p90)),
    ])?;
    std::fs::create_dir_all(out)?;
    let parquet_dir = out.join("sector_demand");
    let mut written = std::collections::BTreeSet::new();
    // Hive partitioning by year: the year lives in the directory name, not in the file.
    for y in from.0..=to.0 {
        let mask = Series::new("".into(), year.iter().map(|v| *v == y).collect::<Vec<_>>());
        let mut part = df.filter(mask.bool()?)?;
        if part.height() == 0 {
            continue;
        }
        let dir = parquet_dir.join(format!("year={y}"));
        std::fs::create_dir_all(&dir)?;
        written.insert(format!("year={y}"));
        crate::output::atomically(&dir.join("part-0.parquet"), |tmp| {
            ParquetWriter::new(std::fs::File::create(tmp)?)
                .with_compression(ParquetCompression::Zstd(None))
                .with_statistics(StatisticsOptions::full())
                .finish(&mut part)?;
            Ok(())
        })?;
    }
    // Years an earlier run of this export wrote and this one does not: a reader of the directory
    // must not mix them in (each part file itself was replaced whole).
    let existing = match std::fs::read_dir(&parquet_dir) {
        Ok(d) => d.flatten().collect::<Vec<_>>(),
        Err(_) => Vec::new(),
    };
    for e in existing {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("year=") && !written.contains(&name) {
            std::fs::remove_dir_all(e.path())?;
        }
    }
    let csv = out.join("sector_demand.csv");
    crate::output::atomically(&csv, |tmp| {
        CsvWriter::new(std::fs::File::create(tmp)?)
            .include_header(true)
            .finish(&mut df)?;
        Ok(())
    })?;
    let dictionary = out.join("DATA_DICTIONARY.md");
    let provenance = format!(
        "Computed from the lake's tables {}; latest day with figures: {}.",
        s.versions,
        s.latest_day()
            .map_or_else(|| "none".to_owned(), |d| d.to_string())
    );
    crate::output::write(
        &dictionary,
        dictionary_text(from, to, scope, df.height(), &provenance),
    )?;
    Ok(DemandOutput {
        rows: df.height(),
        lake_versions: s.versions.clone(),
        latest_day: s.latest_day(),
        parquet_dir,
        csv,
        dictionary,
    })
}

fn dictionary_text(
    from: (i32, u32),
    to: (i32, u32),
    scope: Option<&str>,
    rows: usize,
    provenance: &str,
) -> String {
    format!(
        r#"# Sector demand dataset — data dictionary

Months {f} to {t}{scope}; {rows} rows. One row per month × reporting unit × service that had any
activity. Produced by `owsu-jobs demand` from the OWSU pipeline's summaries, which are computed
exactly from every accepted event (each event counted once; corrections replace what they
correct). Periods are calendar months in Cambodia time (UTC+07:00). Money is integer riel.
{provenance}

Files:
- `sector_demand/year=YYYY/part-0.parquet`: Parquet, Hive-partitioned by `year` (the column comes
  from the directory name).
- `sector_demand.csv`: the same rows, with a header, without the `year` column (it is in `month`).

Reading it:
- DuckDB: `select * from read_parquet('sector_demand/**/*.parquet', hive_partitioning=true)`
- pandas: `pd.read_parquet("sector_demand")`
- polars: `pl.read_parquet("sector_demand/**/*.parquet", hive_partitioning=True)`

| column | type | meaning |
| --- | --- | --- |
| `year` | integer (partition) | Calendar year of `month`. |
| `month` | text `YYYY-MM` | Calendar month (Cambodia time). |
| `province_code` | text | `KH-PP`, the capital or province the unit belongs to. |
| `province_name` | text | Its name. |
| `unit_code` | text | Reporting unit: `KH-PP` for a capital/provincial administration, `KH-PPDD` for a municipality, district or khan. |
| `unit_name` | text | Its name. |
| `level` | text | `provincial` (25 capital/provincial administrations) or `district` (203 municipal/district/khan administrations). |
| `sector_code` | text | Sector of the service (catalogue: `schemas/reference/catalogue.json`). |
| `service_code` | text | Service type (same catalogue). |
| `requests_received` | integer | Requests whose first RECEIVED event falls in the month. |
| `services_delivered` | integer | Requests whose first DELIVERED event falls in the month: "services provided". |
| `requests_rejected` | integer | Requests whose first REJECTED event falls in the month. |
| `requests_cancelled` | integer | Requests whose first CANCELLED event falls in the month. |
| `fee_payments` | integer | FEE_PAID events with a positive fee in the month. |
| `refunds` | integer | FEE_PAID events with a negative fee (refunds) in the month. |
| `revenue_riel` | integer | Sum of `fee_riel` of the month's FEE_PAID events, refunds deducted. US$ = riel ÷ 4,100 in the ministry's reports. |
| `median_processing_days` | decimal or empty | Median of (DELIVERED time − RECEIVED time) in days, over the requests delivered in the month; the mean of the two middle values when their number is even. Calendar days, fractions included. Empty when nothing was delivered. |
| `p90_processing_days` | decimal or empty | 90th percentile of the same (nearest rank). |

Notes:
- A month with no activity for a unit and service has no row (read it as zero).
- Requests received in one month and delivered in another count in both, each in its own column.
- Units that did not report (silent units) have no rows for the months they were silent; see the
  oversight list (`owsu-jobs inactive`) and the review's reporting completeness before reading a
  missing row as no demand.
- Identifiers of citizens never reach this dataset: request ids are keyed hashes made at the office.
"#,
        f = format_args!("{}-{:02}", from.0, from.1),
        t = format_args!("{}-{:02}", to.0, to.1),
        scope = scope
            .map(|s| format!(", units of {s} only"))
            .unwrap_or_default(),
    )
}
