//! The `deposit` Lambda function: `POST /api/balance/v1/deposit/` of docs/api.md.

use lighttech::http::function;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lighttech::lambda::run(function::Deposit).await
}
