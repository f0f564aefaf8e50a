//! Secrets Manager's four rotation steps for the signing-key secret: what a rotation function
//! does when Secrets Manager invokes it with `{"SecretId", "ClientRequestToken", "Step"}`.
//!
//! - `createSecret`: a fresh random key (64 hex digits) is put as the version named by the
//!   token, staged `AWSPENDING` (done once: a retried step finds it there);
//! - `setSecret`: nothing — no other service holds the key; LightTech reads it from the secret;
//! - `testSecret`: the pending key is usable (at least 32 bytes) and differs from the current;
//! - `finishSecret`: `AWSCURRENT` moves to the pending version; Secrets Manager itself moves
//!   `AWSPREVIOUS` to the version that was current, which LightTech keeps verifying with.

use std::collections::HashMap;

use aws_sdk_secretsmanager::Client;

use crate::aws::describe;
use crate::config::SecretKey;

/// The rotation function's binary (`functions/rotate-signing-key`), which is no HTTP route.
pub const FUNCTION: &str = "rotate-signing-key";

const CURRENT: &str = "AWSCURRENT";
const PENDING: &str = "AWSPENDING";

/// One step of a rotation, as Secrets Manager names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `createSecret`.
    Create,
    /// `setSecret`.
    Set,
    /// `testSecret`.
    Test,
    /// `finishSecret`.
    Finish,
}

impl Step {
    /// From the event's `Step`.
    pub fn parse(name: &str) -> Option<Step> {
        match name {
            "createSecret" => Some(Step::Create),
            "setSecret" => Some(Step::Set),
            "testSecret" => Some(Step::Test),
            "finishSecret" => Some(Step::Finish),
            _ => None,
        }
    }
}

/// Runs `step` of the rotation `token` of the secret `secret_id`.
pub async fn rotate(
    client: &Client,
    secret_id: &str,
    token: &str,
    step: Step,
) -> Result<(), String> {
    let stages = version_stages(client, secret_id).await?;
    let of_token = stages.get(token).map(Vec::as_slice).unwrap_or_default();
    if of_token.iter().any(|s| s == CURRENT) {
        // This version is already current: the rotation is done, a retried step changes nothing.
        return Ok(());
    }
    let pending = of_token.iter().any(|s| s == PENDING);
    match step {
        Step::Create => {
            if pending && value(client, secret_id, token).await.is_ok() {
                return Ok(());
            }
            client
                .put_secret_value()
                .secret_id(secret_id)
                .client_request_token(token)
                .secret_string(crate::auth::key_file::generate())
                .version_stages(PENDING)
                .send()
                .await
                .map_err(|e| format!("createSecret: {}", describe(&e)))?;
            Ok(())
        }
        _ if !pending => Err(format!(
            "version {token} of secret {secret_id:?} is not staged {PENDING}"
        )),
        Step::Set => Ok(()),
        Step::Test => {
            let new = value(client, secret_id, token).await?;
            let current = current_version(&stages).map(|v| value(client, secret_id, v));
            if let Some(current) = current
                && current.await? == new
            {
                return Err("testSecret: the pending key is the current one".into());
            }
            Ok(())
        }
        Step::Finish => {
            let mut call = client
                .update_secret_version_stage()
                .secret_id(secret_id)
                .version_stage(CURRENT)
                .move_to_version_id(token);
            if let Some(current) = current_version(&stages) {
                call = call.remove_from_version_id(current);
            }
            call.send()
                .await
                .map_err(|e| format!("finishSecret: {}", describe(&e)))?;
            Ok(())
        }
    }
}

async fn version_stages(
    client: &Client,
    secret_id: &str,
) -> Result<HashMap<String, Vec<String>>, String> {
    let meta = client
        .describe_secret()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| format!("cannot describe secret {secret_id:?}: {}", describe(&e)))?;
    Ok(meta.version_ids_to_stages().cloned().unwrap_or_default())
}

fn current_version(stages: &HashMap<String, Vec<String>>) -> Option<&str> {
    stages
        .iter()
        .find(|(_, labels)| labels.iter().any(|l| l == CURRENT))
        .map(|(id, _)| id.as_str())
}

/// The key a version holds, checked as a signing key.
async fn value(client: &Client, secret_id: &str, version: &str) -> Result<SecretKey, String> {
    let out = client
        .get_secret_value()
        .secret_id(secret_id)
        .version_id(version)
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot read version {version} of {secret_id:?}: {}",
                describe(&e)
            )
        })?;
    let text = out
        .secret_string()
        .ok_or_else(|| format!("version {version} of {secret_id:?} has no string value"))?;
    SecretKey::new(text.trim().as_bytes().to_vec()).map_err(|m| format!("version {version}: {m}"))
}
