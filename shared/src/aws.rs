//! AWS clients, configured once per process from the standard AWS environment
//! (`AWS_REGION`, `AWS_ENDPOINT_URL`, the credentials chain).

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

use crate::config::SecretKey;

/// Loads the shared SDK configuration with bounded timeouts, so an unreachable endpoint is a
/// prompt `503` rather than a hung request.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(15))
                .build(),
        )
        .load()
        .await
}

/// An AWS SDK failure on one line: the service's code and message when it answered, the chain
/// of causes when it could not be reached (`SdkError`'s own `Display` says only "service
/// error").
pub fn describe<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    match err {
        SdkError::ServiceError(_) => format!(
            "{}: {}",
            err.code().unwrap_or("service error"),
            err.message().unwrap_or("no message")
        ),
        other => crate::telemetry::error_chain(other),
    }
}

/// Fetches the signing key from Secrets Manager: the secret's string value (or binary value),
/// at least 32 bytes.
pub async fn fetch_secret_key(sdk: &SdkConfig, secret_id: &str) -> Result<SecretKey, String> {
    let client = aws_sdk_secretsmanager::Client::new(sdk);
    let out = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot read secret {secret_id:?} from Secrets Manager: {}",
                describe(&e)
            )
        })?;
    let bytes = match (out.secret_string(), out.secret_binary()) {
        (Some(text), _) => text.trim().as_bytes().to_vec(),
        (None, Some(blob)) => blob.as_ref().to_vec(),
        (None, None) => return Err(format!("secret {secret_id:?} has no value")),
    };
    SecretKey::new(bytes).map_err(|m| format!("secret {secret_id:?}: {m}"))
}
