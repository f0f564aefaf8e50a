//! The `login` Lambda function: `POST /api/auth/v1/login/` of API.md.

use lighttech::http::Function;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lighttech::lambda::run(Function::Login).await
}
