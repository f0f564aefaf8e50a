//! The `register` Lambda function: `POST /api/auth/v1/register/` of docs/api.md.

use lighttech::http::function;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lighttech::lambda::run(function::Register).await
}
