//! The `admin-users` Lambda function: `GET /api/admin/v1/users/`, `GET /api/admin/v1/users/{id}/` and `GET /api/admin/v1/users/{id}/operations/` of docs/api.md.

use lighttech::http::function;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lighttech::lambda::run(function::AdminUsers).await
}
