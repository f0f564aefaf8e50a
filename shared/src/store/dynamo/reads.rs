//! The store's own calls: point reads, transactions with their retries, and the reads the
//! primitives make before their conditional writes.

use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;

use super::*;

impl DynamoStore {
    pub(super) async fn get(&self, key: Item) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(out.item().cloned())
    }

    /// A conditional update of one item of the table, to finish and send.
    pub(super) fn update_request(&self, key: Item) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
    }

    /// A conditional put of one item into the table, to finish and send.
    pub(super) fn put_request(&self, item: Item) -> PutItemFluentBuilder {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
    }

    /// Sends one transaction. A whole call refused as throttled (not one cancelled item, which
    /// the callers' loops handle) was rejected before any condition was evaluated, so the same
    /// items are sent again ([`Self::resend_refused`]) before it ends as `Unavailable`.
    pub(super) async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<(), Cancelled> {
        if self.fault.as_ref().is_some_and(InjectedConflicts::next) {
            return Err(Cancelled::Reasons(vec![
                Some("TransactionConflict".into());
                items.len()
            ]));
        }
        let request = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items));
        let err = match self.resend_refused(|| request.clone().send()).await {
            Ok(_) => return Ok(()),
            Err(err) => err,
        };
        if let Some(TransactWriteItemsError::TransactionCanceledException(e)) =
            err.as_service_error()
        {
            return Err(Cancelled::Reasons(
                e.cancellation_reasons()
                    .iter()
                    .map(|r| r.code().map(str::to_owned))
                    .collect(),
            ));
        }
        Err(Cancelled::Other(sdk_error(err)))
    }

    /// Sends a call, and sends it again while DynamoDB refuses it whole, which applies nothing
    /// of it: throttled (up to [`MAX_THROTTLED_CALLS`] more times, the SDK having retried it
    /// with its own backoff already), or a plain write in conflict with another write of its
    /// item ([`is_write_conflict`], which the SDK does not retry: up to [`MAX_ATTEMPTS`] times,
    /// as the store retries a transaction's conflicts). Each resend waits the usual backoff and
    /// is counted; the last refusal stands, and [`sdk_error`] makes it `Unavailable`.
    pub(super) async fn resend_refused<T, E, F>(
        &self,
        send: impl Fn() -> F,
    ) -> Result<T, SdkError<E>>
    where
        F: std::future::Future<Output = Result<T, SdkError<E>>>,
        E: ProvideErrorMetadata,
    {
        let (mut throttled, mut conflicts) = (0, 0);
        loop {
            let err = match send().await {
                Ok(out) => return Ok(out),
                Err(err) => err,
            };
            let (why, attempt) = if is_throttle(err.code()) && throttled < MAX_THROTTLED_CALLS {
                throttled += 1;
                (Cancelled::Throttled, throttled)
            } else if is_write_conflict(err.code()) && conflicts < MAX_ATTEMPTS {
                conflicts += 1;
                (Cancelled::conflict(), conflicts)
            } else {
                return Err(err);
            };
            self.backoff(attempt - 1, &why).await;
        }
    }

    /// The newest sequence number at or below `top` (the whole history when `None`) whose
    /// operation was created at or before `until`; `None` when there is none. One read when
    /// `top` is already old enough (a later page), about log2(n) strongly consistent reads of
    /// one attribute otherwise — far fewer than filtering out every newer operation.
    pub(super) async fn last_seq_until(
        &self,
        user: UserId,
        until: Timestamp,
        top: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        let version = match top {
            Some(top) => top,
            None => match self.account(user).await? {
                Some(account) => account.version,
                None => return Ok(None),
            },
        };
        // Invariant: `low` is 0 or at/before `until`; every sequence above `high` is after it.
        let (mut low, mut high) = (0, version);
        if high == 0 {
            return Ok(None);
        }
        match self.operation_time(user, high).await? {
            Some(at) if at <= until => return Ok(Some(high)),
            Some(_) => high -= 1,
            // Beyond the newest operation (a stale position): bisect the rest.
            None => high -= 1,
        }
        while low < high {
            let mid = low + (high - low).div_ceil(2);
            match self.operation_time(user, mid).await? {
                Some(at) if at <= until => low = mid,
                _ => high = mid - 1,
            }
        }
        Ok((low > 0).then_some(low))
    }

    /// When operation `seq` of `user` was created; `None` if there is no such operation.
    pub(super) async fn operation_time(
        &self,
        user: UserId,
        seq: u64,
    ) -> Result<Option<Timestamp>, StoreError> {
        use std::sync::atomic::Ordering;
        self.stats.history_reads.fetch_add(1, Ordering::Relaxed);
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user), &op_sk(seq))))
            .projection_expression("created_at")
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        out.item()
            .map(|item| get_n(item, "created_at").map(Timestamp::from_millis))
            .transpose()
    }

    /// Sleeps before retry `attempt` (full jitter, capped) and counts why.
    pub(super) async fn backoff(&self, attempt: u32, why: &Cancelled) {
        use std::sync::atomic::Ordering;
        crate::metrics::retried(why.throttled());
        if why.throttled() {
            self.stats.throttle_retries.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.conflict_retries.fetch_add(1, Ordering::Relaxed);
        }
        let cap_ms = (2u64 << attempt.min(6)).min(100);
        let ms = rand::rng().random_range(0..=cap_ms);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    pub(super) async fn account_item(&self, user: UserId) -> Result<Option<Item>, StoreError> {
        self.get(key(user_pk(user), "ACCOUNT")).await
    }

    pub(super) async fn session_exists(&self, session: &SessionRecord) -> Result<bool, StoreError> {
        let sk = format!("SESSION#{}", session.id);
        Ok(self.get(key(user_pk(session.user), &sk)).await?.is_some())
    }

    /// Whether session `id` was revoked by the call marked `call`.
    pub(super) async fn revoked_by(
        &self,
        user: UserId,
        id: SessionId,
        call: uuid::Uuid,
    ) -> Result<bool, StoreError> {
        let item = self
            .get(key(user_pk(user), &format!("SESSION#{id}")))
            .await?;
        Ok(item.is_some_and(|i| {
            opt_s(&i, "revoked_by").ok().flatten() == Some(call.to_string().as_str())
        }))
    }

    pub(super) async fn audit_exists(&self, entry: &AuditEntry) -> Result<bool, StoreError> {
        let item = audit_item(entry);
        let (Some(AttributeValue::S(pk)), Some(AttributeValue::S(sk))) =
            (item.get("PK"), item.get("SK"))
        else {
            return Err(StoreError::internal("an audit entry without a key"));
        };
        Ok(self.get(key(pk.clone(), sk)).await?.is_some())
    }

    /// A session item and its user's account, in one strongly consistent `BatchGetItem`.
    pub(super) async fn session_and_account(
        &self,
        user: UserId,
        id: SessionId,
    ) -> Result<(Option<Item>, Option<AccountState>), StoreError> {
        let session_sk = format!("SESSION#{id}");
        let mut wanted = vec![
            key(user_pk(user), &session_sk),
            key(user_pk(user), "ACCOUNT"),
        ];
        let (mut session, mut account) = (None, None);
        for attempt in 0..MAX_ATTEMPTS {
            let keys = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut wanted)))
                .consistent_read(true)
                .build()
                .map_err(StoreError::internal)?;
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, keys)
                .send()
                .await
                .map_err(sdk_error)?;
            for item in out
                .responses()
                .and_then(|r| r.get(&self.table))
                .into_iter()
                .flatten()
            {
                if get_s(item, "SK")? == "ACCOUNT" {
                    account = Some(account_state(item)?);
                } else {
                    session = Some(item.clone());
                }
            }
            // Keys DynamoDB left unprocessed (throttling) are asked for again.
            wanted = out
                .unprocessed_keys()
                .and_then(|u| u.get(&self.table))
                .map(|k| k.keys().to_vec())
                .unwrap_or_default();
            if wanted.is_empty() {
                return Ok((session, account));
            }
            self.backoff(attempt, &Cancelled::Throttled).await;
        }
        Err(StoreError::unavailable("session read kept being throttled"))
    }
}
