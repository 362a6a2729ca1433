//! Jobs for the three users, over the aggregator's summaries:
//! - [`review`] (+ [`html`]): the yearly review for the secretary-general;
//! - [`approval`]: approved reviews that stay put (Delta time travel) and the restatements
//!   waiting against them;
//! - [`demand`]: the sector-demand dataset for researchers;
//! - [`inactive`]: the oversight list of inactive and anomalous units;
//! - [`quality`]: the data-quality report (business-rule anomalies, possible overcharging);
//! - `sum`: sums that never wrap (an overflow is an error naming the figure, not a wrong number);
//! - [`cli`]: the `owsu-jobs` command line; `data`: reading the summaries back from the lake;
//!   `output`: report files replaced whole, never left half-written.
//!
//! Jobs read the lake through `owsu_lake` (every table at one version, columns from its table
//! definitions): the summary tables are the aggregator's published contract. They depend on no
//! other role's crate; `owsu demo` and `owsu bench` live in the umbrella crate `owsu/`.

pub mod approval;
pub mod cli;
pub mod completeness;
pub mod dashboard;
mod data;
pub mod demand;
pub mod html;
pub mod inactive;
mod output;
pub mod quality;
pub mod review;
pub mod serve;
pub mod standards;
mod sum;
