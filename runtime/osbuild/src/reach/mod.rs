//! What a stage may reach on the build host, decided before it runs.
//!
//! The sandbox's capability decisions live here, as typed values that
//! planning checks and `audit` shows: which host paths the operator lets
//! stages bind ([`host_paths`]).

pub mod host_paths;
