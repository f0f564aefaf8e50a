//! The `admin-page` Lambda function: `GET /admin/` of docs/api.md. Stateless: the page is
//! static and talks to the API from the browser, so this function reads no store and no
//! signing key.

use lighttech::http::function;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lighttech::lambda::run_stateless(function::AdminPage).await
}
