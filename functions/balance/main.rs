//! The `balance` Lambda function: `GET /api/balance/v1/` of docs/api.md.

use lighttech::http::function;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lighttech::lambda::run(function::Balance).await
}
