//! DynamoDB's failures, as the store sees them.

use super::*;

/// Maps an SDK failure: connectivity, throttling, conflicts and server errors are
/// `Unavailable` (the client may retry); anything else is internal. The full error context goes
/// into the source, because `SdkError`'s own `Display` says only "service error".
pub(super) fn sdk_error<E>(err: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let unavailable = match &err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            true
        }
        // A 5xx is the service's own failure whatever its code says (or when it names none).
        SdkError::ServiceError(e) => is_transient(err.code()) || e.raw().status().is_server_error(),
        _ => false,
    };
    let text = crate::aws::describe(&err);
    if unavailable {
        StoreError::unavailable(text)
    } else {
        StoreError::internal(text)
    }
}

/// DynamoDB refusing a whole call for capacity or request rate: nothing was evaluated.
pub(super) fn is_throttle(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
        )
    )
}

/// A plain write (`PutItem`, `UpdateItem`, `DeleteItem`) refused because its item is part of a
/// transaction in flight, or (a multi-Region global table) being written in another Region:
/// nothing was applied, and the same call may well pass a moment later. Reads never meet it:
/// DynamoDB orders them against transactions instead.
pub(super) fn is_write_conflict(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("TransactionConflictException" | "ReplicatedWriteConflictException")
    )
}

pub(super) fn is_transient(code: Option<&str>) -> bool {
    is_throttle(code)
        || is_write_conflict(code)
        || matches!(
            code,
            Some("InternalServerError" | "ServiceUnavailable" | "TransactionInProgressException")
        )
}

/// A write that ended without an answer (`Unavailable`: a timeout, a connection lost after
/// sending) may have been applied all the same: `Ok` when `applied` finds the call's own work
/// in the table, `err` otherwise (also when that check fails). Any other error stands as is,
/// and `applied` is never run for it.
pub(super) async fn applied_despite(
    err: StoreError,
    applied: impl std::future::Future<Output = Result<bool, StoreError>>,
) -> Result<(), StoreError> {
    if matches!(err, StoreError::Unavailable(_)) && matches!(applied.await, Ok(true)) {
        Ok(())
    } else {
        Err(err)
    }
}

/// Why a transaction was cancelled, per item, as DynamoDB reports it.
#[derive(Debug)]
pub(super) enum Cancelled {
    /// `CancellationReasons`, one code per item in order (`None` when that item was fine).
    Reasons(Vec<Option<String>>),
    /// A failure that is not a cancellation.
    Other(StoreError),
    /// The whole call was refused as throttled (only as a reason to back off; `transact`
    /// retries it itself).
    Throttled,
}

impl Cancelled {
    /// A conflict with another write, as a reason to back off.
    pub(super) fn conflict() -> Self {
        Cancelled::Reasons(vec![Some("TransactionConflict".into())])
    }

    pub(super) fn failed(&self, index: usize) -> bool {
        matches!(self, Cancelled::Reasons(r) if r.get(index).is_some_and(|c| c.as_deref() == Some("ConditionalCheckFailed")))
    }

    /// A conflict, throttling or condition on a version: re-read and try again.
    pub(super) fn retryable(&self) -> bool {
        match self {
            Cancelled::Reasons(r) => r.iter().any(|c| {
                matches!(
                    c.as_deref(),
                    Some(
                        "ConditionalCheckFailed"
                            | "TransactionConflict"
                            | "ThrottlingError"
                            | "ProvisionedThroughputExceeded"
                    )
                )
            }),
            Cancelled::Throttled => true,
            Cancelled::Other(_) => false,
        }
    }

    pub(super) fn throttled(&self) -> bool {
        match self {
            Cancelled::Reasons(r) => r.iter().any(|c| {
                matches!(
                    c.as_deref(),
                    Some("ThrottlingError" | "ProvisionedThroughputExceeded")
                )
            }),
            Cancelled::Throttled => true,
            Cancelled::Other(_) => false,
        }
    }
}
