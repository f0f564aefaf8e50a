//! Every integration suite of the workspace library in one test binary (one link instead of
//! one per file): the store conformance and API suites per backend, the Redis cache, the
//! OpenAPI document, the documentation (its reference tables, the API reference against the
//! router, its prose), the compose stack and the SAM template checks.
//!
//! Filter by module: `tests/run sqlite::`, `tests/run postgres::api::`, `tests/run openapi`.

mod api_reference;
mod compose;
mod docs;
mod dynamodb;
mod harness;
mod openapi;
mod postgres;
mod prose;
mod redis;
mod sqlite;
mod template;
