//! The `docs` Lambda function: `GET /api/schema/`, `GET /api/docs/` (Swagger UI and its assets)
//! and `GET /api/redoc/` (ReDoc and its bundle) of docs/api.md. Stateless: it reads no store and no
//! signing key, and links neither.

use lighttech::http::function;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    // Only this function carries the documentation pages' assets.
    lighttech::http::enable_docs_ui();
    lighttech::lambda::run_stateless(function::Docs).await
}
