//! owsu-aggregator
