//! The table: created as `template.yaml` declares it, checked at start.

use aws_sdk_dynamodb::operation::describe_table::{DescribeTableError, DescribeTableOutput};

use super::*;

impl DynamoStore {
    /// Creates the table exactly as `template.yaml` declares it, if it does not exist yet,
    /// waits until it is `ACTIVE` and makes sure TTL is on (for an existing table too). Point-in-time recovery is an account-level setting the template owns.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(StoreError::internal)
        };
        let key_el = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(StoreError::internal)
        };
        let gsi = GlobalSecondaryIndex::builder()
            .index_name(GSI1)
            .key_schema(key_el("GSI1PK", KeyType::Hash)?)
            .key_schema(key_el("GSI1SK", KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::Include)
                    .set_non_key_attributes(Some(
                        GSI1_PROJECTED.iter().map(|a| (*a).to_owned()).collect(),
                    ))
                    .build(),
            )
            .build()
            .map_err(StoreError::internal)?;
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("PK")?)
            .attribute_definitions(attr("SK")?)
            .attribute_definitions(attr("GSI1PK")?)
            .attribute_definitions(attr("GSI1SK")?)
            .key_schema(key_el("PK", KeyType::Hash)?)
            .key_schema(key_el("SK", KeyType::Range)?)
            .global_secondary_indexes(gsi)
            .sse_specification(SseSpecification::builder().enabled(true).build())
            .send()
            .await;
        match created {
            Ok(_) => {}
            // Already there, or being created by another start right now: either way it must
            // become ACTIVE and have TTL on before this start may serve.
            Err(e) if e.code() == Some("ResourceInUseException") => {}
            Err(e) => return Err(sdk_error(e)),
        }
        self.wait_until_active().await?;
        self.ensure_ttl().await
    }

    /// Waits until the table is `ACTIVE`, failing clearly after [`Self::with_table_wait`]'s
    /// limit (60 s unless set).
    async fn wait_until_active(&self) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + self.table_wait;
        loop {
            let described = self.describe().await.map_err(sdk_error)?;
            let status = described
                .table()
                .and_then(|t| t.table_status())
                .map(|s| s.as_str().to_owned())
                .unwrap_or_else(|| "of unknown status".into());
            if status == "ACTIVE" {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::unavailable(format!(
                    "DynamoDB table {:?} is still {status} after {} s; it must be ACTIVE",
                    self.table,
                    self.table_wait.as_secs_f64()
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Turns TTL on (attribute [`TTL_ATTRIBUTE`]) unless it is already on or being turned on;
    /// TTL on another attribute, or being turned off, is an error to resolve by hand.
    async fn ensure_ttl(&self) -> Result<(), StoreError> {
        let described = self
            .client
            .describe_time_to_live()
            .table_name(&self.table)
            .send()
            .await
            .map_err(sdk_error)?;
        let description = described.time_to_live_description();
        let status = description
            .and_then(|d| d.time_to_live_status())
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|| "DISABLED".into());
        let attribute = description.and_then(|d| d.attribute_name());
        match status.as_str() {
            "ENABLED" | "ENABLING" if attribute == Some(TTL_ATTRIBUTE) => return Ok(()),
            "DISABLED" => {}
            _ => {
                return Err(StoreError::internal(format!(
                    "DynamoDB table {:?} has TTL {status} on attribute {:?}; it must be enabled on {TTL_ATTRIBUTE:?}",
                    self.table,
                    attribute.unwrap_or("")
                )));
            }
        }
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(TTL_ATTRIBUTE)
                    .build()
                    .map_err(StoreError::internal)?,
            )
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    /// The table as DynamoDB describes it (`ResourceNotFoundException` when there is none).
    async fn describe(&self) -> Result<DescribeTableOutput, SdkError<DescribeTableError>> {
        self.client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
    }

    /// Fails with a clear message when the table does not exist.
    pub async fn check_table(&self) -> Result<(), StoreError> {
        match self.describe().await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ResourceNotFoundException") => {
                Err(StoreError::unavailable(format!(
                    "DynamoDB table {:?} does not exist (create it with `lighttech-local --init` or deploy template.yaml)",
                    self.table
                )))
            }
            Err(e) => Err(sdk_error(e)),
        }
    }
}
