//! Transfers into one recipient, applied together (`migrations/postgres/0009_transfer_batches.sql`;
//! since `0010_transfer_batch_one_credit.sql` a batch writes the recipient's account once).
//!
//! A transfer locks its recipient's account row until it commits, so transfers into one
//! account run one commit at a time. While transfers into a recipient are in flight, later ones
//! into the same recipient queue here; as soon as one is done, the whole queue (up to
//! `POSTGRES_TRANSFER_BATCH`, at most [`crate::store::MAX_TRANSFER_BATCH`]) goes to the
//! database as one call of `lighttech_transfer_batch`: one round trip and one commit for all
//! of them, each transfer still applied or refused on its own. Transfers into different
//! recipients never wait for each other here.
//!
//! Tasks of their own drain the queue ([`IN_FLIGHT`] at a time), so a client that goes away mid-request cannot
//! strand the transfers queued behind its own.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::*;

const TRANSFER_BATCH: &str = "SELECT outcome, balance_after, seq, recipient_id, \
     recipient_username, error_code, error_message, error_detail \
     FROM lighttech_transfer_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

type Reply = oneshot::Sender<Result<Applied, StoreError>>;

/// Transfers (or batches) into one recipient in flight at once: while one holds the
/// recipient's row, the next is already sent and waits for that row inside PostgreSQL, so the
/// row is never idle while transfers wait, and the batch after is formed meanwhile.
const IN_FLIGHT: usize = 2;

/// One recipient's waiting transfers, and how many of its slots in flight are taken.
#[derive(Debug, Default)]
struct Queue {
    waiting: Vec<(TransferCommand, Reply)>,
    in_flight: usize,
}

/// The queues, by recipient (username key). A recipient is present while one of its transfers
/// is in flight.
#[derive(Debug, Default)]
pub(super) struct Queues(Mutex<HashMap<String, Queue>>);

/// What a caller does with its transfer.
enum Turn {
    /// Apply it now, holding one of its recipient's slots.
    Now,
    /// Wait for the answer of the task that will apply it; `true`: start that task.
    Queued(oneshot::Receiver<Result<Applied, StoreError>>, bool),
}

impl Queues {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Queue>> {
        // A panic while the lock is held leaves the map consistent (every change is one call).
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A free slot for `t` if its recipient has one and nothing waits, else a place in line.
    fn enter(&self, t: &TransferCommand) -> Turn {
        let mut queues = self.lock();
        let queue = queues.entry(t.to_username_key.clone()).or_default();
        if queue.in_flight < IN_FLIGHT && queue.waiting.is_empty() {
            queue.in_flight += 1;
            return Turn::Now;
        }
        let (reply, answer) = oneshot::channel();
        queue.waiting.push((t.clone(), reply));
        let start = queue.in_flight < IN_FLIGHT;
        if start {
            queue.in_flight += 1;
        }
        Turn::Queued(answer, start)
    }

    /// The next batch for the holder of a slot of `recipient`, at most `size`; `None` when
    /// nothing waits, and the slot is given back.
    fn next_batch(&self, recipient: &str, size: usize) -> Option<Vec<(TransferCommand, Reply)>> {
        let mut queues = self.lock();
        let queue = queues.get_mut(recipient)?;
        if queue.waiting.is_empty() {
            queue.in_flight -= 1;
            if queue.in_flight == 0 {
                queues.remove(recipient);
            }
            return None;
        }
        let take = queue.waiting.len().min(size);
        Some(queue.waiting.drain(..take).collect())
    }

    /// Whether transfers wait for `recipient`; if none do, the caller's slot is given back.
    fn keep_slot(&self, recipient: &str) -> bool {
        let mut queues = self.lock();
        let Some(queue) = queues.get_mut(recipient) else {
            return false;
        };
        if !queue.waiting.is_empty() {
            return true;
        }
        queue.in_flight -= 1;
        if queue.in_flight == 0 {
            queues.remove(recipient);
        }
        false
    }

    /// Gives a slot back after a panic; the last one out drops the replies still queued, so
    /// their callers get an error instead of waiting for ever.
    fn abandon_slot(&self, recipient: &str) {
        let mut queues = self.lock();
        if let Some(queue) = queues.get_mut(recipient) {
            queue.in_flight -= 1;
            if queue.in_flight == 0 {
                queues.remove(recipient);
            }
        }
    }
}

/// A slot held by a caller applying its own transfer. When it is given up — the transfer done,
/// or the caller gone mid-request — transfers queued meanwhile get a task of their own.
struct Slot<'a> {
    store: &'a PgStore,
    recipient: &'a str,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.store.queues.keep_slot(self.recipient) {
            self.store.spawn_drainer(self.recipient.to_owned());
        }
    }
}

/// Gives a drainer's slot back if it ends by a panic.
struct Draining<'a> {
    queues: &'a Queues,
    recipient: &'a str,
    finished: bool,
}

impl Drop for Draining<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.queues.abandon_slot(self.recipient);
        }
    }
}

impl PgStore {
    /// Sets the most transfers applied together (1: each alone, as no queue at all).
    pub fn with_transfer_batch(mut self, size: usize) -> Self {
        self.transfer_batch = size.clamp(1, crate::store::MAX_TRANSFER_BATCH);
        self
    }

    /// Applies `t`: at once if its recipient has a free slot and no queue (the usual case),
    /// else in a batch with the other transfers into its recipient that are waiting.
    pub(super) async fn transfer_queued(&self, t: &TransferCommand) -> Result<Applied, StoreError> {
        if self.transfer_batch == 1 {
            return self.transfer_alone(t).await;
        }
        match self.queues.enter(t) {
            Turn::Now => {
                let _slot = Slot {
                    store: self,
                    recipient: &t.to_username_key,
                };
                self.transfer_alone(t).await
            }
            Turn::Queued(answer, start) => {
                if start {
                    self.spawn_drainer(t.to_username_key.clone());
                }
                answer.await.unwrap_or_else(|_| {
                    Err(StoreError::internal("the transfer batch was abandoned"))
                })
            }
        }
    }

    /// Starts a task that applies `recipient`'s queue in the slot the caller holds (outside a
    /// runtime, as when one shuts down, the slot is given back and the queue dropped).
    fn spawn_drainer(&self, recipient: String) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let store = self.clone();
                runtime.spawn(async move { store.drain(&recipient).await });
            }
            Err(_) => self.queues.abandon_slot(&recipient),
        }
    }

    /// Applies the recipient's queue, batch after batch, until it is empty.
    async fn drain(&self, recipient: &str) {
        let mut draining = Draining {
            queues: &self.queues,
            recipient,
            finished: false,
        };
        loop {
            let Some(batch) = self.queues.next_batch(recipient, self.transfer_batch) else {
                draining.finished = true;
                return;
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
        in_statement!(self, |client| money_once(&client, t))
    }

    /// One call of `lighttech_transfer_batch`: each transfer's result, or `None` for one to
    /// try again on its own (nothing of the batch was applied: it was not sent, or it was rolled
    /// back by a serialization failure or deadlock, or that transfer's own subtransaction was).
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
        let stmt = match client.prepare_cached(TRANSFER_BATCH).await {
            Ok(stmt) => stmt,
            // Nothing was run: each transfer on its own.
            Err(_) => return unsettled(),
        };
        let rows = match client.query(&stmt, &params).await {
            Ok(rows) if rows.len() == transfers.len() => rows,
            Ok(rows) => {
                let text = format!(
                    "a batch of {} transfers answered {} rows",
                    transfers.len(),
                    rows.len()
                );
                return transfers
                    .iter()
                    .map(|_| Some(Err(StoreError::internal(text.clone()))))
                    .collect();
            }
            // Rolled back as a whole (serialization failure, deadlock): each on its own.
            Err(e) if is_retryable(&e) => {
                self.retried.fetch_add(1, Ordering::Relaxed);
                return unsettled();
            }
            // The batch may or may not have committed (a connection lost mid-call): sending
            // its transfers again could apply them twice, so each gets the error, as a single
            // transfer would (503; a retry with its Idempotency-Key finds it if it was applied).
            Err(e) => {
                tracing::warn!(error = %e, size = transfers.len(), "a transfer batch failed");
                let text = format!("a batch of transfers failed: {e}");
                let transient = matches!(map_pg(e), StoreError::Unavailable(_));
                return transfers
                    .iter()
                    .map(|_| {
                        Some(Err(if transient {
                            StoreError::unavailable(text.clone())
                        } else {
                            StoreError::internal(text.clone())
                        }))
                    })
                    .collect();
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
