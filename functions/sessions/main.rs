//! The `sessions` Lambda function: `GET /api/auth/v1/sessions/` and `DELETE /api/auth/v1/sessions/{id}/` of docs/api.md.

use lighttech::http::function;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lighttech::lambda::run(function::Sessions).await
}
