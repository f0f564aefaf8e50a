//! The `me` Lambda function: `GET /api/auth/v1/me/` of docs/api.md.

use lighttech::http::function;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lighttech::lambda::run(function::Me).await
}
