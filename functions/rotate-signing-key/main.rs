//! The signing key's rotation function, which Secrets Manager invokes on the schedule of
//! `template.yaml`'s `SigningKeyRotationSchedule`; it is no HTTP route.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lighttech::lambda::run_key_rotation().await
}
