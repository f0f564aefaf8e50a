//! The `operations` Lambda function: `GET /api/balance/v1/operations/` of docs/api.md.

use lighttech::http::function;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lighttech::lambda::run(function::Operations).await
}
