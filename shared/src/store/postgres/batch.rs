//! Transfers into one recipient, applied together (`migrations/postgres/0009_transfer_batches.sql`).
//!
//! A transfer locks its recipient's account row until it commits, so transfers into one
//! account run one commit at a time. While a transfer into a recipient is in flight, later ones
//! into the same recipient queue here; when it is done, the whole queue (up to
//! `POSTGRES_TRANSFER_BATCH`, at most [`crate::store::MAX_TRANSFER_BATCH`]) goes to the database as one call of `lighttech_transfer_batch`: one round
//! trip and one commit for all of them, each transfer still applied or refused on its own.
//! Transfers into different recipients never wait for each other here.
//!
//! The queue is drained by a task of its own, so a client that goes away mid-request cannot
//! strand the transfers queued behind its own.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::*;

const TRANSFER_BATCH: &str = "SELECT outcome, balance_after, seq, recipient_id, \
     recipient_username, error_code, error_message, error_detail \
     FROM lighttech_transfer_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

type Reply = oneshot::Sender<Result<Applied, StoreError>>;

/// The transfers waiting for their recipient's batch in flight, by recipient (username key).
/// A recipient is present while a task drains its queue.
#[derive(Debug, Default)]
pub(super) struct Queues(Mutex<HashMap<String, Vec<(TransferCommand, Reply)>>>);

impl Queues {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(TransferCommand, Reply)>>> {
        // A panic while the lock is held leaves the map consistent (every change is one call).
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Removes the recipient when its draining task ends, even by a panic: the replies still
/// queued are dropped, and their callers get an error instead of waiting for ever.
struct Draining<'a> {
    queues: &'a Queues,
    recipient: &'a str,
}

impl Drop for Draining<'_> {
    fn drop(&mut self) {
        self.queues.lock().remove(self.recipient);
    }
}

impl PgStore {
    /// Sets the most transfers applied together (1: each alone, as no queue at all).
    pub fn with_transfer_batch(mut self, size: usize) -> Self {
        self.transfer_batch = size.clamp(1, crate::store::MAX_TRANSFER_BATCH);
        self
    }

    /// Applies `t`, in a batch with the other transfers into its recipient that are waiting.
    pub(super) async fn transfer_queued(&self, t: &TransferCommand) -> Result<Applied, StoreError> {
        if self.transfer_batch == 1 {
            return self.transfer_alone(t).await;
        }
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queues = self.queues.lock();
            match queues.get_mut(&t.to_username_key) {
                Some(queue) => {
                    queue.push((t.clone(), reply));
                    false
                }
                None => {
                    queues.insert(t.to_username_key.clone(), vec![(t.clone(), reply)]);
                    true
                }
            }
        };
        if start {
            let store = self.clone();
            let recipient = t.to_username_key.clone();
            tokio::spawn(async move { store.drain(&recipient).await });
        }
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::internal("the transfer batch was abandoned")))
    }

    /// Applies the recipient's queue, batch after batch, until it is empty.
    async fn drain(&self, recipient: &str) {
        let _draining = Draining {
            queues: &self.queues,
            recipient,
        };
        loop {
            let batch: Vec<(TransferCommand, Reply)> = {
                let mut queues = self.queues.lock();
                let Some(queue) = queues.get_mut(recipient) else {
                    return;
                };
                if queue.is_empty() {
                    return;
                }
                let take = queue.len().min(self.transfer_batch);
                queue.drain(..take).collect()
            };
            if batch.len() == 1 {
                for (t, reply) in batch {
                    let _ = reply.send(self.transfer_alone(&t).await);
                }
                continue;
            }
            self.batched
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            let (transfers, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let results = self.transfer_batch(recipient, &transfers).await;
            for ((t, reply), result) in transfers.iter().zip(replies).zip(results) {
                let result = match result {
                    Some(result) => result,
                    // Not settled by the batch: on its own, with the usual retries.
                    None => self.transfer_alone(t).await,
                };
                let _ = reply.send(result);
            }
        }
    }

    /// One transfer in a statement of its own, retried on serialization failure or deadlock.
    pub(super) async fn transfer_alone(&self, t: &TransferCommand) -> Result<Applied, StoreError> {
        in_statement!(self, |client| transfer_once(&client, t))
    }

    /// One call of `lighttech_transfer_batch`: each transfer's result, or `None` for one to
    /// try again on its own (the batch as a whole failed, or that transfer met a
    /// serialization failure or deadlock).
    async fn transfer_batch(
        &self,
        recipient: &str,
        transfers: &[TransferCommand],
    ) -> Vec<Option<Result<Applied, StoreError>>> {
        let unsettled = || transfers.iter().map(|_| None).collect();
        let Ok(client) = self.client().await else {
            return unsettled();
        };
        let sessions: Vec<(Option<Uuid>, Option<i64>)> = transfers
            .iter()
            .map(|t| session_params(t.session.as_ref()))
            .collect();
        let stamps: Vec<_> = transfers
            .iter()
            .map(|t| stamp_params(t.idempotency.as_ref()))
            .collect();
        let column = |f: fn(&TransferCommand) -> Uuid| transfers.iter().map(f).collect::<Vec<_>>();
        let session: Vec<Option<Uuid>> = sessions.iter().map(|s| s.0).collect();
        let touch_before: Vec<Option<i64>> = sessions.iter().map(|s| s.1).collect();
        let from = column(|t| t.from.0);
        let amount: Vec<i64> = transfers.iter().map(|t| t.amount.minor()).collect();
        let now: Vec<i64> = transfers.iter().map(|t| t.now.millis()).collect();
        let transfer = column(|t| t.transfer_id.0);
        let out = column(|t| t.out_operation_id.0);
        let incoming = column(|t| t.in_operation_id.0);
        let description: Vec<Option<&str>> =
            transfers.iter().map(|t| t.description.as_deref()).collect();
        let key: Vec<Option<&str>> = stamps.iter().map(|s| s.0).collect();
        let fingerprint: Vec<Option<&str>> = stamps.iter().map(|s| s.1).collect();
        let key_expires: Vec<Option<i64>> = stamps.iter().map(|s| s.2).collect();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 14] = [
            &recipient,
            &Money::MAX_BALANCE.minor(),
            &session,
            &touch_before,
            &from,
            &amount,
            &now,
            &transfer,
            &out,
            &incoming,
            &description,
            &key,
            &fingerprint,
            &key_expires,
        ];
        let rows = match client.prepare_cached(TRANSFER_BATCH).await {
            Ok(stmt) => client.query(&stmt, &params).await,
            Err(e) => Err(e),
        };
        let rows = match rows {
            Ok(rows) if rows.len() == transfers.len() => rows,
            Ok(rows) => {
                tracing::error!(
                    sent = transfers.len(),
                    got = rows.len(),
                    "a transfer batch answered for another number of transfers"
                );
                return unsettled();
            }
            Err(e) => {
                tracing::warn!(error = %e, size = transfers.len(), "a transfer batch failed; applying its transfers one by one");
                return unsettled();
            }
        };
        let mut results = Vec::with_capacity(rows.len());
        for (t, row) in transfers.iter().zip(&rows) {
            results.push(self.settle(&client, t, row).await);
        }
        results
    }

    /// What one row of a batch came to (`None`: retry the transfer on its own).
    async fn settle(
        &self,
        client: &deadpool_postgres::Object,
        t: &TransferCommand,
        row: &Row,
    ) -> Option<Result<Applied, StoreError>> {
        let field = |name| row.try_get::<_, Option<String>>(name).ok().flatten();
        if let Some(code) = field("error_code") {
            if let Some(refused) = refused(&code, field("error_detail").as_deref()) {
                return Some(Err(refused));
            }
            if code == "40001" || code == "40P01" {
                self.retried.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            return Some(Err(StoreError::internal(format!(
                "transfer failed in its batch: {code} {}",
                field("error_message").unwrap_or_default()
            ))));
        }
        let settled = async {
            let outcome: String = row.try_get("outcome")?;
            match (outcome.as_str(), t.idempotency.as_ref()) {
                ("done", _) => {
                    let balance_after = Money::from_minor(row.try_get("balance_after")?);
                    let seq = version_of(row.try_get("seq")?)?;
                    Ok(Applied::Done(sent(t, row, balance_after, seq)?))
                }
                ("recorded", Some(stamp)) => find_record(client, t.from, stamp.key.as_str(), t.now)
                    .await?
                    .map(Applied::AlreadyRecorded)
                    .ok_or_else(|| StoreError::internal("claimed key vanished").into()),
                (other, _) => Err(Failure::Fail(StoreError::internal(format!(
                    "unexpected transfer outcome {other:?}"
                )))),
            }
        };
        Some(settled.await.map_err(|f| match f {
            Failure::Fail(e) => e,
            Failure::Retry(e) => map_pg(e),
        }))
    }
}
