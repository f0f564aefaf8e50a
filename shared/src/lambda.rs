//! The Lambda entry point every function binary calls.

use std::convert::Infallible;
use std::sync::Arc;

use lambda_http::service_fn;

use crate::app::{App, StartOptions, start_store};
use crate::config::Config;
use crate::http::{Function, Needs, Scope, handle, handle_stateless, handle_store_only};

/// Builds the application state once (cold start) and serves this function's routes until the
/// runtime stops. A start-up failure prints one line naming the problem and exits non-zero.
pub async fn run(function: Function) -> Result<(), lambda_http::Error> {
    if function.needs() != Needs::App {
        fail(
            function,
            "this function needs less than the application state: start it with `run_store_only` or `run_stateless`",
        );
    }
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
        async move {
            let response = handle(&app, request, Scope::Function(function)).await;
            crate::metrics::after_invocation(function.name(), response.status());
            Ok::<_, Infallible>(response)
        }
    }))
    .await
}

/// The entry point of a function whose routes need the store alone (`health`): the whole
/// configuration is read and checked, the store opened, and no signing key is read or fetched,
/// so the function needs no permission on the secret.
pub async fn run_store_only(function: Function) -> Result<(), lambda_http::Error> {
    if function.needs() != Needs::Store {
        fail(
            function,
            "this function needs more than the store: start it with `run` or `run_stateless`",
        );
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => fail(function, &e.to_string()),
    };
    crate::telemetry::init(config.debug);
    let store = match start_store(
        &config,
        StartOptions {
            init: false,
            generate_key: false,
            check_store: false,
        },
    )
    .await
    {
        Ok(store) => store,
        Err(e) => fail(function, &e.to_string()),
    };
    lambda_http::run(service_fn(move |request| {
        let store = Arc::clone(&store);
        async move {
            let response = handle_store_only(store.as_ref(), request, function).await;
            crate::metrics::after_invocation(function.name(), response.status());
            Ok::<_, Infallible>(response)
        }
    }))
    .await
}

/// The entry point of a function whose routes need no application state (`docs`,
/// `admin-page`): no configuration beyond logging, no store, no signing key. It never
/// references the store, so none of it is linked into the binary.
pub async fn run_stateless(function: Function) -> Result<(), lambda_http::Error> {
    if !function.stateless() {
        fail(
            function,
            "this function needs the store: start it with `run` or `run_store_only`",
        );
    }
    let debug = match crate::config::debug_from_env() {
        Ok(debug) => debug,
        Err(e) => fail(function, &e.to_string()),
    };
    crate::telemetry::init(debug);
    lambda_http::run(service_fn(move |request| async move {
        let response = handle_stateless(request, function).await;
        crate::metrics::after_invocation(function.name(), response.status());
        Ok::<_, Infallible>(response)
    }))
    .await
}

fn fail(function: Function, message: &str) -> ! {
    let line = format!("{}: cannot start: {message}", function.name());
    eprintln!("{line}");
    report_init_error(&line);
    std::process::exit(1)
}

/// Tells the Lambda Runtime API why the start failed (`POST /runtime/init/error`), so the
/// invocation fails as `Runtime.InitError` carrying our one line instead of a bare exit status.
/// `lambda_runtime` reports init errors only for SnapStart hooks, and our start-up runs before
/// it, so this is done here. Best effort, blocking and bounded: the process is about to exit.
/// Outside Lambda (no `AWS_LAMBDA_RUNTIME_API`) it does nothing.
fn report_init_error(message: &str) {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::Duration;

    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        return;
    };
    let body = serde_json::json!({
        "errorType": "Runtime.InitError",
        "errorMessage": message,
        "stackTrace": [],
    })
    .to_string();
    let request = format!(
        "POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: {api}\r\n\
         Lambda-Runtime-Function-Error-Type: Runtime.InitError\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let timeout = Duration::from_secs(2);
    let sent = api
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| std::io::Error::other("cannot resolve AWS_LAMBDA_RUNTIME_API"))
        .and_then(|addr| TcpStream::connect_timeout(&addr, timeout))
        .and_then(|mut stream| {
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            stream.write_all(request.as_bytes())?;
            // Wait for the answer so the report is delivered before the process exits.
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).map(|_| ())
        });
    if let Err(e) = sent {
        eprintln!("could not report the start-up failure to the Lambda Runtime API: {e}");
    }
}
