//! owsu-jobs
