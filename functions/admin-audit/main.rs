//! The `admin-audit` Lambda function: `GET /api/admin/v1/audit/` of docs/api.md.

use lighttech::http::function;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lighttech::lambda::run(function::AdminAudit).await
}
