//! The `admin-user-status` Lambda function: `POST /api/admin/v1/users/{id}/deactivate/` and `POST /api/admin/v1/users/{id}/reactivate/` of docs/api.md.

use lighttech::http::function;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lighttech::lambda::run(function::AdminUserStatus).await
}
