//! The `admin-page` Lambda function: `GET /admin/` of API.md.

use lighttech::http::Function;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lighttech::lambda::run(Function::AdminPage).await
}
