//! Jobs for the three users, over the aggregator's summaries:
//! - [`review`] (+ [`html`]): the yearly review for the secretary-general;
//! - [`demand`]: the sector-demand dataset for researchers;
//! - [`inactive`]: the oversight list of inactive and anomalous units;
//! - [`demo`]: `owsu demo`, the whole pipeline end to end on one machine;
//! - [`bench`]: `owsu bench`, speed and memory figures.
//!
//! Jobs read the store through `owsu_aggregator::store` and the summary layout the aggregator
//! defines: the summaries are the aggregator's published contract.

pub mod bench;
pub mod cli;
pub mod data;
pub mod demand;
pub mod demo;
pub mod html;
pub mod inactive;
pub mod review;
