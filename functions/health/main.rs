//! The `health` Lambda function: `GET /api/health/` of API.md.

use lighttech::http::Function;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lighttech::lambda::run(Function::Health).await
}
