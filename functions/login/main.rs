//! The `login` Lambda function: `POST /api/auth/v1/login/` of docs/api.md.

use lighttech::http::function;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lighttech::lambda::run(function::Login).await
}
