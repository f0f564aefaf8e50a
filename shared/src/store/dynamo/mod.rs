//! The DynamoDB store: one table, conditional writes and `TransactWriteItems`.
//!
//! The design — items and keys, the session epoch that lets one deactivation end any number of
//! sessions, how a movement is made atomic and how a call whose answer was lost is recognised —
//! is docs/dynamodb.md. The module's parts: `table` creates and checks the table, `codec` maps
//! items to records, `errors` classifies DynamoDB's failures, `reads` and `movement` are the
//! calls and the steps the primitives are built from, `money` and `history` the two largest
//! primitives, and `store` the [`Store`] trait over all of them.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, KeysAndAttributes, Projection, ProjectionType, Put,
    ScalarAttributeType, SseSpecification, TimeToLiveSpecification, TransactWriteItem, Update,
};
use rand::RngExt;

use super::backend::*;

type Item = HashMap<String, AttributeValue>;

/// Name of the TTL attribute.
pub const TTL_ATTRIBUTE: &str = "ttl";
/// Name of the user-listing index.
pub const GSI1: &str = "GSI1";

/// What `GSI1` holds besides the keys: the profile attributes the admin user list reads (and
/// searches), nothing else — never the password hash, which would otherwise be copied into
/// the index for every user.
pub const GSI1_PROJECTED: [&str; 7] = [
    "user_id",
    "username",
    "username_key",
    "email",
    "is_staff",
    "is_active",
    "created_at",
];
/// Attempts at a conditional write before giving up with `Unavailable` (safe to retry). Each
/// attempt re-reads and re-checks; with the jittered backoff below this rides out heavy
/// contention on one account for about two seconds.
const MAX_ATTEMPTS: u32 = 40;
/// Query round trips a filtered history page may take before returning what it has.
const MAX_HISTORY_QUERIES: usize = 10;
/// Times one call is sent again after DynamoDB refused it whole as throttled (the SDK has
/// already retried it with its own backoff by then).
const MAX_THROTTLED_CALLS: u32 = 5;
/// Sessions and login counters linger this long past expiry before TTL may delete them.
const TTL_GRACE_SECONDS: i64 = 86_400;

/// Counters of what the store had to absorb, for tests and logs.
#[derive(Debug, Default)]
pub struct DynamoStats {
    /// Writes retried after a version conflict, a `TransactionConflict` in a transaction, or a
    /// plain write's conflict (`TransactionConflictException`).
    pub conflict_retries: std::sync::atomic::AtomicU64,
    /// Retries after throttling: of one item in a cancelled transaction, or of a whole call.
    pub throttle_retries: std::sync::atomic::AtomicU64,
    /// DynamoDB round trips made by history reads (queries and bisection probes).
    pub history_reads: std::sync::atomic::AtomicU64,
}

/// The DynamoDB-backed [`Store`].
#[derive(Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    /// What the store retried so far.
    pub stats: DynamoStats,
    fault: Option<InjectedConflicts>,
    /// How long `create_table` waits for the table to become `ACTIVE`.
    table_wait: Duration,
}

/// Test hook: makes a fraction of transactions fail with `TransactionConflict` before they
/// reach DynamoDB (emulators never produce it), so the retry path is exercised for real.
#[derive(Debug, Clone, Copy)]
pub struct FaultInjector {
    /// Probability in `0.0..=1.0` that a transaction attempt is cancelled as conflicting.
    pub conflict_rate: f64,
    /// Seeds the draws: a test that prints it can replay the same sequence of draws.
    pub seed: u64,
}

/// A [`FaultInjector`] at work: its rate and its generator, shared by the store's clones.
#[derive(Debug, Clone)]
struct InjectedConflicts {
    rate: f64,
    draws: std::sync::Arc<std::sync::Mutex<rand::rngs::StdRng>>,
}

impl InjectedConflicts {
    /// Whether the next transaction attempt is cancelled as conflicting.
    fn next(&self) -> bool {
        let mut draws = self
            .draws
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        draws.random_bool(self.rate.clamp(0.0, 1.0))
    }
}

mod codec;
mod errors;
mod history;
mod money;
mod movement;
mod reads;
mod store;
mod table;

use self::codec::*;
use self::errors::*;
use self::movement::*;

impl DynamoStore {
    /// A store over an existing client and table name.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            stats: DynamoStats::default(),
            fault: None,
            table_wait: Duration::from_secs(60),
        }
    }

    /// How long `create_table` waits for the table to become `ACTIVE` before failing.
    pub fn with_table_wait(mut self, wait: Duration) -> Self {
        self.table_wait = wait;
        self
    }

    /// Enables injected transaction conflicts (tests).
    pub fn with_fault_injector(mut self, fault: FaultInjector) -> Self {
        use rand::SeedableRng;
        self.fault = Some(InjectedConflicts {
            rate: fault.conflict_rate,
            draws: std::sync::Arc::new(std::sync::Mutex::new(rand::rngs::StdRng::seed_from_u64(
                fault.seed,
            ))),
        });
        self
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }
}
