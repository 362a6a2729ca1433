//! owsu-producer
