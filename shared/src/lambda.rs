//! The Lambda entry point every function binary calls.

use std::convert::Infallible;
use std::sync::Arc;

use lambda_http::service_fn;

use crate::app::{App, StartOptions};
use crate::config::Config;
use crate::http::{Function, Scope, handle};

/// Builds the application state once (cold start) and serves this function's routes until the
/// runtime stops. A start-up failure prints one line naming the problem and exits non-zero.
pub async fn run(function: Function) -> Result<(), lambda_http::Error> {
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => fail(function, &e.to_string()),
    };
    crate::telemetry::init(config.debug);
    let app = match App::start_with(
        config,
        StartOptions {
            init: false,
            generate_key: false,
            check_store: false,
        },
    )
    .await
    {
        Ok(app) => Arc::new(app),
        Err(e) => fail(function, &e.to_string()),
    };
    lambda_http::run(service_fn(move |request| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Infallible>(handle(&app, request, Scope::Function(function)).await) }
    }))
    .await
}

fn fail(function: Function, message: &str) -> ! {
    eprintln!("{}: cannot start: {message}", function.name());
    std::process::exit(1)
}
