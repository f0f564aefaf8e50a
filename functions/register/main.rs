//! The `register` Lambda function: `POST /api/auth/v1/register/` of API.md.

use lighttech::http::Function;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lighttech::lambda::run(Function::Register).await
}
