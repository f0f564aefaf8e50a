//! The `token-refresh` Lambda function: `POST /api/auth/v1/token/refresh/` of docs/api.md.

use lighttech::http::function;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lighttech::lambda::run(function::TokenRefresh).await
}
