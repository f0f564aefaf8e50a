//! The Lambda entry point every function binary calls.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use http::Response;
use lambda_http::{Body, service_fn};

use crate::app::App;
use crate::config::Config;
use crate::http::{
    Endpoint, Function, FunctionEndpoints, StatelessEndpoint, StoreEndpoint, handle_function,
    handle_stateless, handle_store_only,
};
use crate::startup::{StartOptions, start_store};

/// Builds the application state once (cold start) and serves this function's routes until the
/// runtime stops. A start-up failure prints one line naming the problem and exits non-zero.
/// `function` is the function's own endpoint table ([`crate::http::function`]): the binary links
/// those endpoints alone.
pub async fn run<F: FunctionEndpoints<Endpoint = Endpoint>>(
    function: F,
) -> Result<(), lambda_http::Error> {
    let name = F::FUNCTION;
    let config = configure(name);
    // A function prepares nothing and checks nothing at start: no extra round trip, no extra
    // permission.
    let app = Arc::new(ok_or_fail(
        name,
        App::start_with(config, StartOptions::default()).await,
    ));
    serve(name, move |request| {
        let app = Arc::clone(&app);
        async move { handle_function(&app, request, function).await }
    })
    .await
}

/// The entry point of a function whose routes need the store alone (`health`): the whole
/// configuration is read and checked, the store opened, and no signing key is read or fetched,
/// so the function needs no permission on the secret.
pub async fn run_store_only<F: FunctionEndpoints<Endpoint = StoreEndpoint>>(
    function: F,
) -> Result<(), lambda_http::Error> {
    let name = F::FUNCTION;
    let config = configure(name);
    let store = ok_or_fail(name, start_store(&config, StartOptions::default()).await);
    serve(name, move |request| {
        let store = Arc::clone(&store);
        async move { handle_store_only(store.as_ref(), request, function).await }
    })
    .await
}

/// The entry point of a function whose routes need no application state (`docs`,
/// `admin-page`): no configuration beyond logging, no store, no signing key. It never
/// references the store, so none of it is linked into the binary.
pub async fn run_stateless<F: FunctionEndpoints<Endpoint = StatelessEndpoint>>(
    function: F,
) -> Result<(), lambda_http::Error> {
    let name = F::FUNCTION;
    crate::telemetry::init(ok_or_fail(name, crate::config::debug_from_env()));
    serve(name, move |request| handle_stateless(request, function)).await
}

/// The entry point of the signing key's rotation function: Secrets Manager invokes it with
/// `{"SecretId", "ClientRequestToken", "Step"}` once per step ([`crate::aws_rotation`]). No
/// store and no HTTP: a failed step returns an error, which Secrets Manager retries.
pub async fn run_key_rotation() -> Result<(), lambda_http::Error> {
    use lambda_http::lambda_runtime::{self, LambdaEvent};

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct RotationEvent {
        secret_id: String,
        client_request_token: String,
        step: String,
    }

    crate::telemetry::init(ok_or_fail_named(
        crate::aws_rotation::FUNCTION,
        crate::config::debug_from_env(),
    ));
    let client = aws_sdk_secretsmanager::Client::new(&crate::aws::sdk_config().await);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: LambdaEvent<RotationEvent>| {
            let client = client.clone();
            async move {
                let RotationEvent {
                    secret_id,
                    client_request_token: token,
                    step: name,
                } = event.payload;
                let step = crate::aws_rotation::Step::parse(&name)
                    .ok_or_else(|| format!("unknown rotation step {name:?}"))?;
                let done =
                    crate::aws_rotation::rotate(&client, &secret_id, &token, step).await;
                match &done {
                    Ok(()) => tracing::info!(step = %name, version = %token, "rotation step done"),
                    Err(e) => tracing::error!(step = %name, version = %token, error = %e, "rotation step failed"),
                }
                done.map_err(lambda_http::Error::from)
            }
        },
    ))
    .await
}

/// Serves invocations with `handle` until the runtime stops, counting each into the metrics.
async fn serve<H, R>(name: Function, handle: H) -> Result<(), lambda_http::Error>
where
    H: Fn(lambda_http::Request) -> R,
    R: Future<Output = Response<Body>> + Send,
{
    lambda_http::run(service_fn(move |request| {
        let response = handle(request);
        async move {
            let response = response.await;
            crate::metrics::after_invocation(name.name(), response.status());
            Ok::<_, Infallible>(response)
        }
    }))
    .await
}

/// The whole configuration, read and checked, with logging set up as it says.
fn configure(name: Function) -> Config {
    let config = ok_or_fail(name, Config::from_env());
    crate::telemetry::init(config.debug);
    config
}

/// The value, or the one line saying why the function cannot start, and exit.
fn ok_or_fail<T, E: std::fmt::Display>(name: Function, result: Result<T, E>) -> T {
    ok_or_fail_named(name.name(), result)
}

fn ok_or_fail_named<T, E: std::fmt::Display>(name: &str, result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| fail(name, &e.to_string()))
}

fn fail(function: &str, message: &str) -> ! {
    let line = format!("{function}: cannot start: {message}");
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
