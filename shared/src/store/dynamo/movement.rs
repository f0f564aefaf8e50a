//! The parts of a money movement: its idempotency record, its session check, its account
//! updates and the attempts it made.

use super::*;

impl DynamoStore {
    pub(super) async fn idempotency_item(
        &self,
        user: UserId,
        key_text: &str,
        now: Timestamp,
    ) -> Result<Option<IdempotentRecord>, StoreError> {
        let Some(item) = self
            .get(key(user_pk(user), &format!("IDEM#{key_text}")))
            .await?
        else {
            return Ok(None);
        };
        if get_n(&item, "expires_at")? <= now.millis() {
            return Ok(None);
        }
        let op = match item.get("op") {
            Some(AttributeValue::M(m)) => operation_from_item(m)?,
            _ => return Err(bad("op")),
        };
        Ok(Some(IdempotentRecord {
            fingerprint: RequestFingerprint::from_stored(get_s(&item, "fingerprint")?.to_owned()),
            operation: op,
        }))
    }

    /// A domain failure about to be returned — unless the key was recorded meanwhile, which
    /// takes precedence (a retry must replay, not fail).
    pub(super) async fn unless_recorded(
        &self,
        user: UserId,
        stamp: Option<&IdempotencyStamp>,
        now: Timestamp,
        err: StoreError,
    ) -> Result<Applied, StoreError> {
        if let Some(stamp) = stamp
            && let Some(record) = self.idempotency_item(user, stamp.key.as_str(), now).await?
        {
            return Ok(Applied::AlreadyRecorded(record));
        }
        Err(err)
    }

    pub(super) fn idempotency_put(
        &self,
        user: UserId,
        stamp: &IdempotencyStamp,
        op: &Operation,
        now: Timestamp,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut item = key(user_pk(user), &format!("IDEM#{}", stamp.key.as_str()));
        item.insert("fingerprint".into(), s(stamp.fingerprint.as_str()));
        item.insert("expires_at".into(), n(stamp.expires_at.millis()));
        item.insert(TTL_ATTRIBUTE.into(), n(stamp.expires_at.unix_seconds() + 1));
        item.insert("op".into(), AttributeValue::M(operation_item(op)));
        Ok(TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(PK) OR expires_at <= :now")
                    .expression_attribute_values(":now", n(now.millis()))
                    .build()
                    .map_err(StoreError::internal)?,
            )
            .build())
    }

    pub(super) fn operation_put(&self, op: &Operation) -> Result<TransactWriteItem, StoreError> {
        let mut item = operation_item(op);
        item.insert("PK".into(), s(user_pk(op.user)));
        item.insert("SK".into(), s(op_sk(op.seq)));
        put_item(&self.table, item, "attribute_not_exists(PK)")
    }

    /// Reads a movement's session (strongly consistent), to be judged by [`live_session`]
    /// against the mover's account; `None` for a movement without a session.
    pub(super) async fn read_session(
        &self,
        user: UserId,
        session: Option<&SessionUse>,
    ) -> Result<Option<SessionRead>, StoreError> {
        let Some(session) = session else {
            return Ok(None);
        };
        let item = self
            .get(key(user_pk(user), &format!("SESSION#{}", session.id)))
            .await?;
        Ok(Some(SessionRead {
            id: session.id,
            touch_before: session.touch_before,
            item,
        }))
    }

    /// Appends the session's part of a movement's transaction (when it has a session) and
    /// returns its position: the condition that the session is still live (a revocation
    /// committed after the read cancels the movement), as an `Update` recording its use when
    /// that is due (a condition check costs the same capacity as the update).
    pub(super) fn guard_session(
        &self,
        items: &mut Vec<TransactWriteItem>,
        user: UserId,
        session: Option<&LiveSession>,
        now: Timestamp,
    ) -> Result<Option<usize>, StoreError> {
        const LIVE: &str =
            "attribute_exists(PK) AND attribute_not_exists(revoked_at) AND expires_at > :now";
        let Some(session) = session else {
            return Ok(None);
        };
        let session_key = key(user_pk(user), &format!("SESSION#{}", session.id));
        let item = TransactWriteItem::builder();
        let item = if session.touch {
            item.update(
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(session_key))
                    .update_expression("SET last_used_at = :now")
                    .condition_expression(LIVE)
                    .expression_attribute_values(":now", n(now.millis()))
                    .build()
                    .map_err(StoreError::internal)?,
            )
        } else {
            item.condition_check(
                ConditionCheck::builder()
                    .table_name(&self.table)
                    .set_key(Some(session_key))
                    .condition_expression(LIVE)
                    .expression_attribute_values(":now", n(now.millis()))
                    .build()
                    .map_err(StoreError::internal)?,
            )
        };
        items.push(item.build());
        Ok(Some(items.len() - 1))
    }

    /// Commits a money movement's transaction: `items`, the account updates and operations with
    /// the mover's account update first, then the key's record and the session's guard, which
    /// this appends. `Some` ends the primitive (done, or the key was already recorded); `None`
    /// asks for another attempt after a conflict.
    ///
    /// A call that ended without an answer (a timeout, a connection lost after sending) may have
    /// been applied: the mover's account is read once more, and the movement is done if the
    /// operation is there, tried again if the version shows the attempt can no longer apply,
    /// and otherwise answered `Unavailable` — the attempt may still be in flight, and only a
    /// retry with the same `Idempotency-Key` can settle it.
    pub(super) async fn commit_movement(
        &self,
        m: &impl Movement,
        mut items: Vec<TransactWriteItem>,
        op: &Operation,
        session: Option<&LiveSession>,
        attempts: &mut Attempts,
        attempt: u32,
    ) -> Result<Option<Applied>, StoreError> {
        // The position of the key's `Put` among the items, to tell its failure from the others'.
        let key = match m.stamp() {
            Some(stamp) => {
                items.push(self.idempotency_put(op.user, stamp, op, m.now())?);
                Some((stamp, items.len() - 1))
            }
            None => None,
        };
        let session_item = self.guard_session(&mut items, op.user, session, m.now())?;
        attempts.tried(op.seq);
        let cancelled = match self.transact(items).await {
            Ok(()) => return Ok(Some(Applied::Done(op.clone()))),
            Err(Cancelled::Other(e @ StoreError::Unavailable(_))) => {
                let Ok(Some(account)) = self.account_item(op.user).await else {
                    return Err(e);
                };
                let version = account_state(&account)?.version;
                if version < op.seq {
                    return Err(e);
                }
                if let Some(done) = self.applied_before(attempts, version).await? {
                    return Ok(Some(Applied::Done(done)));
                }
                return Ok(None);
            }
            Err(Cancelled::Other(e)) => return Err(e),
            Err(cancelled) => cancelled,
        };
        if session_item.is_some_and(|i| cancelled.failed(i)) {
            return Err(StoreError::SessionNotLive);
        }
        if session_item.is_some() && cancelled.failed(0) {
            // The mover's account changed since the read — perhaps a deactivation, which ends
            // the session and must win over a recorded key: re-read before deciding anything.
            self.backoff(attempt, &cancelled).await;
            return Ok(None);
        }
        if let Some((stamp, key_item)) = key
            && cancelled.failed(key_item)
        {
            if let Some(record) = self
                .idempotency_item(op.user, stamp.key.as_str(), op.created_at)
                .await?
            {
                // This very movement, applied by an earlier sending of the call, is not a replay.
                if record.operation.id == op.id {
                    return Ok(Some(Applied::Done(record.operation)));
                }
                return Ok(Some(Applied::AlreadyRecorded(record)));
            }
            // The record expired in between: the next attempt may take the key.
        } else if !cancelled.retryable() {
            // Named for the log by the mover's operation.
            let what = match op.kind {
                OperationKind::TransferOut => "transfer",
                _ => "balance change",
            };
            return Err(StoreError::internal(format!(
                "{what} cancelled: {cancelled:?}"
            )));
        }
        self.backoff(attempt, &cancelled).await;
        Ok(None)
    }

    /// The operation an earlier attempt of this movement wrote, now that the mover's account is at
    /// `version` (see [`Attempts`]); the attempts this settles are forgotten.
    pub(super) async fn applied_before(
        &self,
        attempts: &mut Attempts,
        version: u64,
    ) -> Result<Option<Operation>, StoreError> {
        let (settled, open): (Vec<u64>, Vec<u64>) =
            attempts.seqs.iter().partition(|&&seq| seq <= version);
        attempts.seqs = open;
        for seq in settled {
            let Some(item) = self.get(key(user_pk(attempts.user), &op_sk(seq))).await? else {
                continue;
            };
            let op = operation_from_item(&item)?;
            if op.id == attempts.id {
                return Ok(Some(op));
            }
        }
        Ok(None)
    }

    /// The account update, conditioned on the version read and on the business rule, and for
    /// the mover of a movement made in a session on the session epoch read.
    pub(super) fn account_update(
        &self,
        update: AccountUpdate<'_>,
    ) -> Result<TransactWriteItem, StoreError> {
        let AccountUpdate {
            user,
            read,
            new_balance,
            rule,
            amount,
            at: now,
            session,
        } = update;
        let mut condition = format!("version = :version AND {rule}");
        if let Some(session) = session {
            condition = format!(
                "{condition} AND {}",
                epoch_is("session_epoch", session.epoch)
            );
        }
        let update = "SET balance = :balance, version = :next, updated_at = :now";
        // DynamoDB refuses values that no expression uses: only the rule's own go in.
        let mut values: Item = HashMap::from([
            (":balance".into(), n(new_balance.minor())),
            (":next".into(), n(read.version as i64 + 1)),
            (":version".into(), n(read.version as i64)),
            (":now".into(), n(now.millis())),
        ]);
        let optional = [
            (":amount", n(amount.minor())),
            (":ceiling", n(Money::MAX_BALANCE.minor() - amount.minor())),
            (":active", AttributeValue::Bool(true)),
            (":epoch", n(session.map_or(0, |s| s.epoch))),
        ];
        for (name, value) in optional {
            if condition.contains(name) {
                values.insert(name.into(), value);
            }
        }
        Ok(TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(user_pk(user), "ACCOUNT")))
                    .update_expression(update)
                    .condition_expression(condition)
                    .set_expression_attribute_values(Some(values))
                    .build()
                    .map_err(StoreError::internal)?,
            )
            .build())
    }
}

/// One account's conditional update within a movement.
pub(super) struct AccountUpdate<'a> {
    pub user: UserId,
    /// The state the update is conditioned on (its version).
    pub read: &'a AccountState,
    pub new_balance: Money,
    /// The business rule, a condition expression (`DEBIT_RULE`, `CREDIT_RULE`, ...).
    pub rule: &'static str,
    pub amount: Money,
    pub at: Timestamp,
    /// The mover's live session, when the movement is made in one.
    pub session: Option<&'a LiveSession>,
}

/// The attempts of one money movement: where each tried to write the mover's operation. An
/// attempt that wrote `OP#<seq>` was conditioned on the account's version being `seq - 1`; once
/// the version reaches `seq`, that item is either this movement's — the attempt was applied
/// though its answer was lost, for instance when the SDK sent the call again after losing the
/// answer and the resend failed on the version the first sending had bumped — or another
/// movement's, and then the attempt can never be applied.
#[derive(Debug)]
pub(super) struct Attempts {
    pub(super) user: UserId,
    pub(super) id: OperationId,
    pub(super) seqs: Vec<u64>,
}

impl Attempts {
    pub(super) fn new(user: UserId, id: OperationId) -> Self {
        Self {
            user,
            id,
            seqs: Vec::new(),
        }
    }

    pub(super) fn tried(&mut self, seq: u64) {
        if !self.seqs.contains(&seq) {
            self.seqs.push(seq);
        }
    }
}

/// A movement's session as read before its transaction: live, whether its use is due to be
/// recorded, and the account epoch it belongs to (the mover's account update is conditioned on
/// it, so a deactivation committed after the read cancels the movement).
#[derive(Debug, Clone, Copy)]
pub(super) struct LiveSession {
    pub(super) id: SessionId,
    pub(super) touch: bool,
    pub(super) epoch: i64,
}

/// A movement's session item as read, not yet judged.
#[derive(Debug)]
pub(super) struct SessionRead {
    pub(super) id: SessionId,
    pub(super) touch_before: Timestamp,
    pub(super) item: Option<Item>,
}

/// `SessionNotLive` unless the movement's session is the mover's own, not revoked, not expired
/// and of the current epoch of the mover's account, which is active; `None` for a movement
/// without a session.
pub(super) fn live_session(
    user: UserId,
    read: Option<SessionRead>,
    account: Option<&AccountState>,
    now: Timestamp,
) -> Result<Option<LiveSession>, StoreError> {
    let Some(read) = read else {
        return Ok(None);
    };
    let (Some(item), Some(account)) = (read.item.as_ref(), account) else {
        return Err(StoreError::SessionNotLive);
    };
    let record = effective_session(item, Some(account))?;
    if record.user != user || !record.is_active(now) {
        return Err(StoreError::SessionNotLive);
    }
    Ok(Some(LiveSession {
        id: read.id,
        touch: record.last_used_at < read.touch_before,
        epoch: account.session_epoch,
    }))
}
