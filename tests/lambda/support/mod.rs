//! Helpers shared by the function tests and the cold-start benchmark.

pub mod recorder;
pub mod runtime_api;
pub mod scenario;
