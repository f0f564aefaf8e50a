//! AWS clients, configured once per process from the standard AWS environment
//! (`AWS_REGION`, `AWS_ENDPOINT_URL`, the credentials chain).

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

use crate::config::{KeySet, SecretKey};

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

/// Fetches the signing keys from Secrets Manager: the secret's `AWSCURRENT` version signs and
/// its `AWSPREVIOUS` version (when there is one: not before the first rotation) still verifies.
/// Both are asked for at once, so this costs one round trip. Each value is the secret's string
/// (or binary) value, at least 32 bytes.
pub async fn fetch_key_set(sdk: &SdkConfig, secret_id: &str) -> Result<KeySet, String> {
    SecretsManagerKeys::new(sdk, secret_id).read_set().await
}

/// The signing keys held in a Secrets Manager secret, read again after a rotation.
#[derive(Debug)]
pub struct SecretsManagerKeys {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
}

impl SecretsManagerKeys {
    /// The keys of the secret `secret_id` (ARN or name).
    pub fn new(sdk: &SdkConfig, secret_id: &str) -> Self {
        Self {
            client: aws_sdk_secretsmanager::Client::new(sdk),
            secret_id: secret_id.to_owned(),
        }
    }

    async fn read_set(&self) -> Result<KeySet, String> {
        let (current, previous) =
            tokio::join!(self.version("AWSCURRENT"), self.version("AWSPREVIOUS"));
        let current = current?
            .ok_or_else(|| format!("secret {:?} has no AWSCURRENT version", self.secret_id))?;
        Ok(KeySet::new(current, previous?))
    }

    /// The key of one staging label; `None` when no version carries it.
    async fn version(&self, stage: &str) -> Result<Option<SecretKey>, String> {
        let secret_id = &self.secret_id;
        let out = match self
            .client
            .get_secret_value()
            .secret_id(secret_id)
            .version_stage(stage)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e)
                if stage != "AWSCURRENT"
                    && e.as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                return Ok(None);
            }
            Err(e) => {
                return Err(format!(
                    "cannot read secret {secret_id:?} ({stage}) from Secrets Manager: {}",
                    describe(&e)
                ));
            }
        };
        let bytes = match (out.secret_string(), out.secret_binary()) {
            (Some(text), _) => text.trim().as_bytes().to_vec(),
            (None, Some(blob)) => blob.as_ref().to_vec(),
            (None, None) => return Err(format!("secret {secret_id:?} ({stage}) has no value")),
        };
        SecretKey::new(bytes)
            .map(Some)
            .map_err(|m| format!("secret {secret_id:?} ({stage}): {m}"))
    }
}

#[async_trait::async_trait]
impl crate::auth::KeySource for SecretsManagerKeys {
    async fn read(&self) -> Result<KeySet, String> {
        self.read_set().await
    }
}
