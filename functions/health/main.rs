//! The `health` Lambda function: `GET /api/health/` of docs/api.md. It needs the store alone: it
//! reads no signing key, so its policy grants nothing on the secret.

use lighttech::http::function;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lighttech::lambda::run_store_only(function::Health).await
}
