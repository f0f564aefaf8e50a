//! LightTech: an accounts-and-money API served as AWS Lambda functions.
//!
//! Layout, top-down:
//!
//! - [`http`]: the route table and the one request path, `handle(&App, Request, Scope) ->
//!   Response` (a Lambda binary's `Scope` is its own function's routes, the local server's is
//!   all of them; `health`, `docs` and `admin-page`, which need less than the whole state,
//!   enter the same path through `handle_store_only` and `handle_stateless`). Parses requests
//!   at the edge into domain types and maps every failure onto the error table of docs/api.md.
//! - [`service`]: one function per use case (register, login, refresh, logout, me, sessions,
//!   balance, deposit, withdraw, transfer, history).
//! - [`store`]: the [`store::Store`] trait — one atomic primitive per method, shaped for
//!   DynamoDB's conditional writes and transactions — and its backends.
//! - [`domain`], [`auth`], [`config`]: newtypes, tokens and passwords, typed configuration;
//!   [`files`]: the private files the local server keeps (its database, its key).
//! - [`app`]: the state every use case takes, by trait; [`startup`]: the wiring that reads the
//!   configuration and opens the backends it names.
//!
//! The one idea: every money movement is a single conditional step in the store (balance
//! condition, history record and idempotency record together), so there is no read-modify-write
//! anywhere above the store and no way to lose an update or spend twice.

pub mod app;
pub mod auth;
pub mod aws;
pub mod aws_rotation;
pub mod cache;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod files;
pub mod http;
pub mod lambda;
pub mod metrics;
pub mod service;
pub mod startup;
pub mod store;
pub mod telemetry;

pub use app::App;
pub use config::Config;
pub use error::ApiError;
pub use startup::{StartOptions, StartupError};
