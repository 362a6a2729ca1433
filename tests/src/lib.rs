//! owsu-tests
