//! The `withdraw` Lambda function: `POST /api/balance/v1/withdraw/` of docs/api.md.

use lighttech::http::function;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lighttech::lambda::run(function::Withdraw).await
}
