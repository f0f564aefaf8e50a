//! Deposits, withdrawals and transfers: one conditional transaction each, retried on a changed
//! account.

use super::*;

impl DynamoStore {
    pub(super) async fn apply_change_now(&self, c: &BalanceChange) -> Result<Applied, StoreError> {
        let stamp = c.idempotency.as_ref();
        let mut attempts = Attempts::new(c.user, c.operation_id);
        for attempt in 0..MAX_ATTEMPTS {
            let (session, item) = tokio::try_join!(
                self.read_session(c.user, c.session.as_ref()),
                self.account_item(c.user)
            )?;
            let read = item.as_ref().map(account_state).transpose()?;
            if let Some(read) = &read
                && let Some(done) = self.applied_before(&mut attempts, read.version).await?
            {
                return Ok(Applied::Done(done));
            }
            let session = live_session(c.user, session, read.as_ref(), c.now)?;
            let Some(read) = read else {
                return Err(StoreError::AccountNotFound);
            };
            let (after, rule) = match c.kind {
                ChangeKind::Deposit => match read.balance.checked_credit(c.amount) {
                    Some(after) => (after, "balance <= :ceiling"),
                    None => {
                        return self
                            .unless_recorded(c.user, stamp, c.now, StoreError::BalanceLimitExceeded)
                            .await;
                    }
                },
                ChangeKind::Withdrawal => match read.balance.checked_debit(c.amount) {
                    Some(after) => (after, DEBIT_RULE),
                    None => {
                        let err = StoreError::InsufficientFunds {
                            balance: read.balance,
                        };
                        return self.unless_recorded(c.user, stamp, c.now, err).await;
                    }
                },
            };
            // Never before the account's previous operation (see the module documentation).
            let op = c.operation(read.version + 1, after, c.now.max(read.updated_at));
            let mut items = vec![
                self.account_update(AccountUpdate {
                    user: c.user,
                    read: &read,
                    new_balance: after,
                    rule,
                    amount: c.amount,
                    at: op.created_at,
                    session: session.as_ref(),
                })?,
                self.operation_put(&op)?,
            ];
            if let Some(stamp) = stamp {
                items.push(self.idempotency_put(c.user, stamp, &op, c.now)?);
            }
            let session_item = self.guard_session(&mut items, c.user, session.as_ref(), c.now)?;
            if let Some(applied) = self
                .commit_movement(
                    Movement {
                        items,
                        op: &op,
                        key: stamp.map(|s| (s, 2)),
                        session_item,
                        what: "balance change",
                    },
                    &mut attempts,
                    attempt,
                )
                .await?
            {
                return Ok(applied);
            }
        }
        Err(StoreError::unavailable(
            "the account kept changing; nothing was applied",
        ))
    }

    pub(super) async fn transfer_now(&self, t: &TransferCommand) -> Result<Applied, StoreError> {
        let stamp = t.idempotency.as_ref();
        // The sender's account is read with the session: the session is judged against it,
        // before anything about the recipient.
        let (session_read, guard, mut sender_item) = tokio::try_join!(
            self.read_session(t.from, t.session.as_ref()),
            self.get(key(format!("USERNAME#{}", t.to_username_key), "USERNAME")),
            self.account_item(t.from)
        )?;
        let sender_read = sender_item.as_ref().map(account_state).transpose()?;
        let mut session = live_session(t.from, session_read, sender_read.as_ref(), t.now)?;
        let recipient = match guard {
            Some(guard) => parse_id(get_s(&guard, "user_id")?, "user_id", UserId::parse)?,
            None => {
                return self
                    .unless_recorded(t.from, stamp, t.now, StoreError::RecipientNotFound)
                    .await;
            }
        };
        if recipient == t.from {
            return self
                .unless_recorded(t.from, stamp, t.now, StoreError::SelfTransfer)
                .await;
        }
        let mut recipient_item = self.account_item(recipient).await?;
        let mut attempts = Attempts::new(t.from, t.out_operation_id);
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                // Another attempt: the session may have been revoked (or the sender
                // deactivated) meanwhile.
                let (reread, sender_now, recipient_now) = tokio::try_join!(
                    self.read_session(t.from, t.session.as_ref()),
                    self.account_item(t.from),
                    self.account_item(recipient)
                )?;
                let sender_read = sender_now.as_ref().map(account_state).transpose()?;
                if let Some(read) = &sender_read
                    && let Some(done) = self.applied_before(&mut attempts, read.version).await?
                {
                    return Ok(Applied::Done(done));
                }
                session = live_session(t.from, reread, sender_read.as_ref(), t.now)?;
                (sender_item, recipient_item) = (sender_now, recipient_now);
            }
            let Some(sender_item) = sender_item.as_ref() else {
                return Err(StoreError::AccountNotFound);
            };
            let sender = account_state(sender_item)?;
            let recipient_state = match recipient_item.as_ref() {
                Some(item) => account_state(item)?,
                None => {
                    return self
                        .unless_recorded(t.from, stamp, t.now, StoreError::RecipientNotFound)
                        .await;
                }
            };
            if !recipient_state.active {
                return self
                    .unless_recorded(t.from, stamp, t.now, StoreError::RecipientNotFound)
                    .await;
            }
            let Some(sender_after) = sender.balance.checked_debit(t.amount) else {
                let err = StoreError::InsufficientFunds {
                    balance: sender.balance,
                };
                return self.unless_recorded(t.from, stamp, t.now, err).await;
            };
            let Some(recipient_after) = recipient_state.balance.checked_credit(t.amount) else {
                return self
                    .unless_recorded(t.from, stamp, t.now, StoreError::BalanceLimitExceeded)
                    .await;
            };
            // Never before either account's previous operation (see the module documentation).
            let at = t.now.max(sender.updated_at).max(recipient_state.updated_at);
            let out = Operation {
                id: t.out_operation_id,
                user: t.from,
                seq: sender.version + 1,
                kind: OperationKind::TransferOut,
                amount: t.amount,
                balance_after: sender_after,
                counterparty: Some(Counterparty {
                    id: recipient,
                    username: recipient_state.username.clone(),
                }),
                transfer_id: Some(t.transfer_id),
                description: t.description.clone(),
                created_at: at,
            };
            let incoming = Operation {
                id: t.in_operation_id,
                user: recipient,
                seq: recipient_state.version + 1,
                kind: OperationKind::TransferIn,
                amount: t.amount,
                balance_after: recipient_after,
                counterparty: Some(Counterparty {
                    id: t.from,
                    username: sender.username.clone(),
                }),
                transfer_id: Some(t.transfer_id),
                description: t.description.clone(),
                created_at: at,
            };
            let mut items = vec![
                self.account_update(AccountUpdate {
                    user: t.from,
                    read: &sender,
                    new_balance: sender_after,
                    rule: DEBIT_RULE,
                    amount: t.amount,
                    at,
                    session: session.as_ref(),
                })?,
                self.account_update(AccountUpdate {
                    user: recipient,
                    read: &recipient_state,
                    new_balance: recipient_after,
                    rule: CREDIT_RULE,
                    amount: t.amount,
                    at,
                    session: None,
                })?,
                self.operation_put(&out)?,
                self.operation_put(&incoming)?,
            ];
            if let Some(stamp) = stamp {
                items.push(self.idempotency_put(t.from, stamp, &out, t.now)?);
            }
            let session_item = self.guard_session(&mut items, t.from, session.as_ref(), t.now)?;
            if let Some(applied) = self
                .commit_movement(
                    Movement {
                        items,
                        op: &out,
                        key: stamp.map(|s| (s, 4)),
                        session_item,
                        what: "transfer",
                    },
                    &mut attempts,
                    attempt,
                )
                .await?
            {
                return Ok(applied);
            }
        }
        Err(StoreError::unavailable(
            "the accounts kept changing; nothing was applied",
        ))
    }
}
