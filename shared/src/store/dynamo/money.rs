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
            let update = self.account_update(AccountUpdate {
                user: c.user,
                read: &read,
                new_balance: after,
                rule,
                amount: c.amount,
                at: op.created_at,
                session: session.as_ref(),
            })?;
            let items = vec![update, self.operation_put(&op)?];
            if let Some(applied) = self
                .commit_movement(c, items, &op, session.as_ref(), &mut attempts, attempt)
                .await?
            {
                return Ok(applied);
            }
        }
        Err(kept_changing("the account"))
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
            let to = Counterparty {
                id: recipient,
                username: recipient_state.username.clone(),
            };
            let from = Counterparty {
                id: t.from,
                username: sender.username.clone(),
            };
            let sent = (sender_after, sender.version + 1);
            let received = (recipient_after, recipient_state.version + 1);
            let out = t.side(OperationKind::TransferOut, t.from, sent, to, at);
            let incoming = t.side(OperationKind::TransferIn, recipient, received, from, at);
            let items = vec![
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
            if let Some(applied) = self
                .commit_movement(t, items, &out, session.as_ref(), &mut attempts, attempt)
                .await?
            {
                return Ok(applied);
            }
        }
        Err(kept_changing("the accounts"))
    }
}

/// Every attempt found the account(s) changed since its read: nothing was applied, and the
/// client may retry.
fn kept_changing(what: &str) -> StoreError {
    StoreError::unavailable(format!("{what} kept changing; nothing was applied"))
}
