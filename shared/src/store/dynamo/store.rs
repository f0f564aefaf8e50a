//! The [`Store`] trait on DynamoDB: one method a primitive; the money movements and the
//! history read are in `money.rs` and `history.rs`.

use super::*;

#[async_trait]
impl Store for DynamoStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.get(key("HEALTH".into(), "HEALTH")).await.map(|_| ())
    }

    async fn create_user(&self, user: &NewUser) -> Result<UserRecord, StoreError> {
        let pk = user_pk(user.id);
        let mut profile = key(pk.clone(), "PROFILE");
        profile.insert("user_id".into(), s(user.id.to_string()));
        profile.insert("username".into(), s(user.username.as_str()));
        profile.insert("username_key".into(), s(user.username.key()));
        profile.insert("email".into(), s(user.email.as_str()));
        profile.insert("password_hash".into(), s(user.password_hash.clone()));
        profile.insert("is_staff".into(), AttributeValue::Bool(user.is_staff));
        profile.insert("is_active".into(), AttributeValue::Bool(true));
        profile.insert("created_at".into(), n(user.now.millis()));
        profile.insert("GSI1PK".into(), s("USERS"));
        profile.insert("GSI1SK".into(), s(user.username.key()));
        let mut account = key(pk, "ACCOUNT");
        account.insert("balance".into(), n(0));
        account.insert("version".into(), n(0));
        account.insert("updated_at".into(), n(user.now.millis()));
        account.insert("active".into(), AttributeValue::Bool(true));
        account.insert("username".into(), s(user.username.as_str()));
        account.insert("session_epoch".into(), n(0));
        let mut username_guard = key(format!("USERNAME#{}", user.username.key()), "USERNAME");
        username_guard.insert("user_id".into(), s(user.id.to_string()));
        let email_key = user.email.key();
        let mut email_guard = key(format!("EMAIL#{email_key}"), "EMAIL");
        email_guard.insert("user_id".into(), s(user.id.to_string()));
        let fresh = "attribute_not_exists(PK)";
        let mut items = vec![
            put_item(&self.table, profile, fresh)?,
            put_item(&self.table, account, fresh)?,
            put_item(&self.table, username_guard, fresh)?,
            put_item(&self.table, email_guard, fresh)?,
        ];
        // An earlier build's guard of this very address (see "Email guards written before the
        // key" above).
        if user.email.as_str() != email_key {
            items.push(
                TransactWriteItem::builder()
                    .condition_check(
                        ConditionCheck::builder()
                            .table_name(&self.table)
                            .set_key(Some(key(format!("EMAIL#{}", user.email), "EMAIL")))
                            .condition_expression(fresh)
                            .build()
                            .map_err(StoreError::internal)?,
                    )
                    .build(),
            );
        }
        let record = UserRecord {
            id: user.id,
            username: user.username.clone(),
            email: user.email.clone(),
            password_hash: user.password_hash.clone(),
            is_staff: user.is_staff,
            is_active: true,
            created_at: user.now,
        };
        // The id is new and random: a profile already under it was written by an earlier
        // sending of this same call (whose answer was lost), unless it belongs to someone else.
        let written_before = || async {
            let profile = self.get(key(user_pk(user.id), "PROFILE")).await?;
            Ok::<_, StoreError>(profile.is_some_and(|p| {
                get_s(&p, "username_key").is_ok_and(|k| k == user.username.key())
                    && get_s(&p, "password_hash").is_ok_and(|h| h == user.password_hash)
            }))
        };
        for attempt in 0..MAX_ATTEMPTS {
            match self.transact(items.clone()).await {
                Ok(()) => return Ok(record),
                Err(c) if c.failed(0) => {
                    return if written_before().await? {
                        Ok(record)
                    } else {
                        Err(StoreError::internal("user id collision"))
                    };
                }
                Err(c) if c.failed(2) => return Err(StoreError::UsernameTaken),
                Err(c) if c.failed(3) || c.failed(4) => return Err(StoreError::EmailTaken),
                Err(c) if c.failed(1) => {
                    return Err(StoreError::internal("user id collision"));
                }
                Err(Cancelled::Other(e)) => {
                    return applied_despite(e, written_before()).await.map(|()| record);
                }
                Err(c) if c.retryable() => self.backoff(attempt, &c).await,
                Err(c) => {
                    return Err(StoreError::internal(format!(
                        "registration cancelled: {c:?}"
                    )));
                }
            }
        }
        Err(StoreError::unavailable("registration kept conflicting"))
    }

    async fn user_by_username(&self, username_key: &str) -> Result<Option<UserRecord>, StoreError> {
        let Some(guard) = self
            .get(key(format!("USERNAME#{username_key}"), "USERNAME"))
            .await?
        else {
            return Ok(None);
        };
        let id = parse_id(get_s(&guard, "user_id")?, "user_id", UserId::parse)?;
        self.user_by_id(id).await
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        self.get(key(user_pk(id), "PROFILE"))
            .await?
            .map(|item| user_from_item(&item))
            .transpose()
    }

    async fn create_session(&self, session: &SessionRecord) -> Result<bool, StoreError> {
        // The session takes the account's current epoch, and is put only next to a check that
        // the account is still active at that epoch: a deactivation committed in between (even
        // one followed by a reactivation) cancels it.
        for attempt in 0..MAX_ATTEMPTS {
            let Some(account) = self.account_item(session.user).await? else {
                return Ok(false);
            };
            let account = account_state(&account)?;
            if !account.active {
                return Ok(false);
            }
            let check = TransactWriteItem::builder()
                .condition_check(
                    ConditionCheck::builder()
                        .table_name(&self.table)
                        .set_key(Some(key(user_pk(session.user), "ACCOUNT")))
                        .condition_expression(format!(
                            "active = :yes AND {}",
                            epoch_is("session_epoch", account.session_epoch)
                        ))
                        .expression_attribute_values(":yes", AttributeValue::Bool(true))
                        .expression_attribute_values(":epoch", n(account.session_epoch))
                        .build()
                        .map_err(StoreError::internal)?,
                )
                .build();
            let put = put_item(
                &self.table,
                session_item(session, account.session_epoch),
                "attribute_not_exists(PK)",
            )?;
            match self.transact(vec![check, put]).await {
                Ok(()) => return Ok(true),
                // The session's id is new and random: an item under it was put by an earlier
                // sending of this same call, whose answer was lost.
                Err(c) if c.failed(1) => return Ok(true),
                Err(Cancelled::Other(e)) => {
                    return applied_despite(e, self.session_exists(session))
                        .await
                        .map(|()| true);
                }
                // The status changed since the read: read it again.
                Err(c) if c.failed(0) || c.retryable() => self.backoff(attempt, &c).await,
                Err(c) => {
                    return Err(StoreError::internal(format!("session not created: {c:?}")));
                }
            }
        }
        Err(StoreError::unavailable("session creation kept conflicting"))
    }

    async fn session(
        &self,
        user: UserId,
        id: SessionId,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let (session, account) = self.session_and_account(user, id).await?;
        session
            .map(|item| effective_session(&item, account.as_ref()))
            .transpose()
    }

    async fn session_with_account(
        &self,
        user: UserId,
        id: SessionId,
    ) -> Result<(Option<SessionRecord>, Option<Account>), StoreError> {
        // The one BatchGetItem `session` makes already holds the account.
        let (session, account) = self.session_and_account(user, id).await?;
        let session = session
            .map(|item| effective_session(&item, account.as_ref()))
            .transpose()?;
        let account = account.map(|a| Account {
            user,
            balance: a.balance,
            version: a.version,
            updated_at: a.updated_at,
        });
        Ok((session, account))
    }

    async fn rotate_session(&self, r: &Rotation) -> Result<RotateOutcome, StoreError> {
        // The account and the session first, in one round trip: the rotation is conditioned on
        // the session being of the epoch read, so a deactivation committing after this read
        // orders after the rotation, and the new tokens die with the session (see the module
        // documentation). The session's login time, which never changes, gives its new end
        // (`Rotation::session_end`); the condition checks its maximum lifetime again.
        let (session, account) = self.session_and_account(r.user, r.session).await?;
        let (Some(session), Some(account)) = (session, account) else {
            return Ok(RotateOutcome::Inactive);
        };
        if !account.active {
            return Ok(RotateOutcome::Inactive);
        }
        let created_at = Timestamp::from_millis(get_n(&session, "created_at")?);
        let ends = r.session_end(created_at);
        let session_key = key(user_pk(r.user), &format!("SESSION#{}", r.session));
        let request = self
            .update_request(session_key.clone())
            .update_expression(
                "SET refresh_jti = :next, last_used_at = :now, expires_at = :expires, #ttl = :ttl",
            )
            .condition_expression(format!(
                "refresh_jti = :presented AND attribute_not_exists(revoked_at) AND expires_at > :now \
                 AND created_at > :created_after AND {}",
                epoch_is("epoch", account.session_epoch)
            ))
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":next", s(r.next.to_string()))
            .expression_attribute_values(":presented", s(r.presented.to_string()))
            .expression_attribute_values(":now", n(r.now.millis()))
            .expression_attribute_values(":created_after", n(r.created_after().millis()))
            .expression_attribute_values(":expires", n(ends.millis()))
            .expression_attribute_values(":ttl", n(ends.unix_seconds() + TTL_GRACE_SECONDS))
            .expression_attribute_values(":epoch", n(account.session_epoch));
        let rotated = self.resend_refused(|| request.clone().send()).await;
        match rotated {
            Ok(_) => return Ok(RotateOutcome::Rotated { created_at }),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {}
            Err(e) => {
                // Rotated all the same if the session now holds this rotation's fresh token id.
                let rotated = async {
                    let (current, _) = self.session_and_account(r.user, r.session).await?;
                    Ok(current.is_some_and(|c| {
                        get_s(&c, "refresh_jti").is_ok_and(|j| j == r.next.to_string())
                    }))
                };
                applied_despite(sdk_error(e), rotated).await?;
                return Ok(RotateOutcome::Rotated { created_at });
            }
        }
        let (current, account) = self.session_and_account(r.user, r.session).await?;
        let Some(current) = current else {
            return Ok(RotateOutcome::Inactive);
        };
        let current = effective_session(&current, account.as_ref())?;
        if !r.admits(&current) {
            return Ok(RotateOutcome::Inactive);
        }
        // The SDK resends a call whose answer it lost; if the first sending rotated the
        // session, the resend fails its condition. The token id it set is this rotation's own
        // fresh one, which nothing else can have written: that is this rotation, not a reuse.
        if current.refresh_jti == r.next {
            return Ok(RotateOutcome::Rotated {
                created_at: current.created_at,
            });
        }
        // A validly signed token of this session that is no longer current was spent before:
        // revoke the session. Losing this race to another revocation changes nothing.
        let request = self
            .update_request(session_key)
            .update_expression("SET revoked_at = :now")
            .condition_expression("attribute_exists(PK) AND attribute_not_exists(revoked_at)")
            .expression_attribute_values(":now", n(r.now.millis()));
        let revoked = self.resend_refused(|| request.clone().send()).await;
        match revoked {
            Ok(_) => Ok(RotateOutcome::Reused),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                Ok(RotateOutcome::Reused)
            }
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn touch_session(
        &self,
        user: UserId,
        id: SessionId,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let request = self
            .update_request(key(user_pk(user), &format!("SESSION#{id}")))
            .update_expression("SET last_used_at = :now")
            .condition_expression("attribute_exists(PK) AND attribute_not_exists(revoked_at)")
            .expression_attribute_values(":now", n(now.millis()));
        let touched = self.resend_refused(|| request.clone().send()).await;
        match touched {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn revoke_session(
        &self,
        user: UserId,
        id: SessionId,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        // A session of an older epoch is already inactive: it is not revoked again.
        let Some(account) = self.account_item(user).await? else {
            return Ok(false);
        };
        let account = account_state(&account)?;
        if !account.active {
            return Ok(false);
        }
        // Marks this call's revocation, to recognise it should the answer be lost.
        let call = uuid::Uuid::new_v4();
        let request = self
            .update_request(key(user_pk(user), &format!("SESSION#{id}")))
            .update_expression("SET revoked_at = :now, revoked_by = :call")
            .condition_expression(format!(
                "attribute_exists(PK) AND attribute_not_exists(revoked_at) AND expires_at > :now AND {}",
                epoch_is("epoch", account.session_epoch)
            ))
            .expression_attribute_values(":now", n(now.millis()))
            .expression_attribute_values(":call", s(call.to_string()))
            .expression_attribute_values(":epoch", n(account.session_epoch));
        let revoked = self.resend_refused(|| request.clone().send()).await;
        match revoked {
            Ok(_) => Ok(true),
            // Perhaps revoked by an earlier sending of this same call, whose answer was lost.
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                self.revoked_by(user, id, call).await
            }
            Err(e) => applied_despite(sdk_error(e), self.revoked_by(user, id, call))
                .await
                .map(|()| true),
        }
    }

    async fn active_sessions(
        &self,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let account = self
            .account_item(user)
            .await?
            .as_ref()
            .map(account_state)
            .transpose()?;
        let mut sessions = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
                .expression_attribute_values(":pk", s(user_pk(user)))
                .expression_attribute_values(":prefix", s("SESSION#"))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk_error)?;
            for item in out.items() {
                let sess = effective_session(item, account.as_ref())?;
                if sess.is_active(now) {
                    sessions.push(sess);
                }
            }
            match out.last_evaluated_key() {
                Some(k) => start = Some(k.clone()),
                None => break,
            }
        }
        sessions.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        Ok(sessions)
    }

    async fn take_login_attempt(
        &self,
        username_key: &str,
        policy: ThrottlePolicy,
        now: Timestamp,
    ) -> Result<Attempt, StoreError> {
        let item_key = key(format!("LOGIN#{username_key}"), "LOGIN");
        let window_ms = policy.window_seconds * 1000;
        let floor = now.millis() - window_ms;
        for attempt in 0..MAX_ATTEMPTS {
            // Count the attempt inside a live window that still has room.
            let request = self
                .update_request(item_key.clone())
                .update_expression("SET attempts = attempts + :one")
                .condition_expression(
                    "attribute_exists(PK) AND window_start > :floor AND attempts < :max",
                )
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":floor", n(floor))
                .expression_attribute_values(":max", n(i64::from(policy.max_attempts)));
            let counted = self.resend_refused(|| request.clone().send()).await;
            match counted {
                Ok(_) => return Ok(Attempt::Allowed),
                Err(e) if e.code() == Some("ConditionalCheckFailedException") => {}
                Err(e) => return Err(sdk_error(e)),
            }
            let current = self.get(item_key.clone()).await?;
            let live = match &current {
                Some(item) => {
                    let start = get_n(item, "window_start")?;
                    (start > floor).then_some((start, get_n(item, "attempts")?))
                }
                None => None,
            };
            match live {
                Some((start, attempts)) if attempts >= i64::from(policy.max_attempts) => {
                    let remaining_ms = (start + window_ms - now.millis()).max(0);
                    return Ok(Attempt::Limited {
                        retry_after: u64::try_from((remaining_ms + 999) / 1000)
                            .unwrap_or(1)
                            .max(1),
                    });
                }
                // Room appeared (a clear raced us): count again.
                Some(_) => continue,
                None => {
                    // No live window: open one, unless someone else just did.
                    let mut item = item_key.clone();
                    item.insert("attempts".into(), n(1));
                    item.insert("window_start".into(), n(now.millis()));
                    item.insert(
                        TTL_ATTRIBUTE.into(),
                        n(now.unix_seconds() + policy.window_seconds + TTL_GRACE_SECONDS),
                    );
                    let request = self
                        .put_request(item)
                        .condition_expression("attribute_not_exists(PK) OR window_start <= :floor")
                        .expression_attribute_values(":floor", n(floor));
                    let opened = self.resend_refused(|| request.clone().send()).await;
                    match opened {
                        Ok(_) => return Ok(Attempt::Allowed),
                        Err(e) if e.code() == Some("ConditionalCheckFailedException") => {
                            self.backoff(attempt, &Cancelled::conflict()).await;
                        }
                        Err(e) => return Err(sdk_error(e)),
                    }
                }
            }
        }
        Err(StoreError::unavailable("login throttle kept conflicting"))
    }

    async fn clear_login_attempts(&self, username_key: &str) -> Result<(), StoreError> {
        let request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("LOGIN#{username_key}"), "LOGIN")));
        self.resend_refused(|| request.clone().send())
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    async fn account(&self, user: UserId) -> Result<Option<Account>, StoreError> {
        let Some(item) = self.account_item(user).await? else {
            return Ok(None);
        };
        Ok(Some(Account {
            user,
            balance: Money::from_minor(get_n(&item, "balance")?),
            version: get_u64(&item, "version")?,
            updated_at: Timestamp::from_millis(get_n(&item, "updated_at")?),
        }))
    }

    async fn apply_change(&self, c: &BalanceChange) -> Result<Applied, StoreError> {
        self.apply_change_now(c).await
    }

    async fn transfer(&self, t: &TransferCommand) -> Result<Applied, StoreError> {
        self.transfer_now(t).await
    }

    async fn idempotent_record(
        &self,
        user: UserId,
        key: &IdempotencyKey,
        now: Timestamp,
    ) -> Result<Option<IdempotentRecord>, StoreError> {
        self.idempotency_item(user, key.as_str(), now).await
    }

    async fn history(&self, q: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        self.history_page(q).await
    }

    async fn list_users(&self, q: &UserQuery) -> Result<UserPage, StoreError> {
        // The index is eventually consistent: a list may lag a just-made change by a moment;
        // balances come from the accounts themselves, read strongly.
        let wanted = q.limit as usize + 1;
        let mut values: Item = HashMap::from([(":users".into(), s("USERS"))]);
        // DynamoDB refuses an empty string in a key condition: no cursor, no lower bound.
        let key_condition = match &q.after {
            Some(after) => {
                values.insert(":after".into(), s(after.clone()));
                "GSI1PK = :users AND GSI1SK > :after"
            }
            None => "GSI1PK = :users",
        };
        let filter = q.search.as_ref().map(|text| {
            values.insert(":q".into(), s(text.clone()));
            "contains(username_key, :q) OR contains(email, :q)"
        });
        let mut profiles: Vec<Item> = Vec::with_capacity(wanted);
        let mut start: Option<Item> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(GSI1)
                .key_condition_expression(key_condition)
                .set_expression_attribute_values(Some(values.clone()))
                .limit(if filter.is_some() { 100 } else { wanted as i32 })
                .set_exclusive_start_key(start.take());
            if let Some(f) = filter {
                query = query.filter_expression(f);
            }
            let out = query.send().await.map_err(sdk_error)?;
            for item in out.items() {
                profiles.push(item.clone());
                if profiles.len() == wanted {
                    break;
                }
            }
            match out.last_evaluated_key() {
                Some(k) if profiles.len() < wanted => start = Some(k.clone()),
                _ => break,
            }
        }
        let (profiles, next_after) = page_of(profiles, q.limit, |p| {
            get_s(p, "username_key").map(str::to_owned)
        });
        let next_after = next_after.transpose()?;
        let mut users = Vec::with_capacity(profiles.len());
        for profile in &profiles {
            let user = user_from_index_item(profile)?;
            let account = self
                .account(user.id)
                .await?
                .ok_or(StoreError::AccountNotFound)?;
            users.push(UserSummary {
                balance: account.balance,
                user,
            });
        }
        Ok(UserPage { users, next_after })
    }

    async fn set_user_active(
        &self,
        change: &StatusChange,
    ) -> Result<Option<UserRecord>, StoreError> {
        let Some(profile) = self.get(key(user_pk(change.user), "PROFILE")).await? else {
            return Ok(None);
        };
        let flag = AttributeValue::Bool(change.active);
        let profile_update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(change.user), "PROFILE")))
            .update_expression("SET is_active = :flag")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":flag", flag.clone())
            .build()
            .map_err(StoreError::internal)?;
        // Deactivation also starts a new session epoch: every session of the user, however
        // many, is dead from this transaction on, and stays dead after a reactivation.
        let mut account_update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(change.user), "ACCOUNT")))
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":flag", flag);
        account_update = if change.active {
            account_update.update_expression("SET active = :flag")
        } else {
            account_update
                .update_expression(
                    "SET active = :flag, session_epoch = if_not_exists(session_epoch, :zero) + :one, \
                     sessions_revoked_at = :now",
                )
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":now", n(change.now.millis()))
        };
        let items = vec![
            TransactWriteItem::builder().update(profile_update).build(),
            TransactWriteItem::builder()
                .update(account_update.build().map_err(StoreError::internal)?)
                .build(),
            put_item(
                &self.table,
                audit_item(&change.audit),
                "attribute_not_exists(PK)",
            )?,
        ];
        for attempt in 0..MAX_ATTEMPTS {
            let changed = || {
                let mut user = user_from_item(&profile)?;
                user.is_active = change.active;
                Ok(Some(user))
            };
            match self.transact(items.clone()).await {
                Ok(()) => return changed(),
                // The audit entry's id is new and random: it was put, with the rest, by an
                // earlier sending of this same call, whose answer was lost.
                Err(c) if c.failed(2) => return changed(),
                Err(Cancelled::Other(e)) => {
                    applied_despite(e, self.audit_exists(&change.audit)).await?;
                    return changed();
                }
                Err(c) if c.failed(0) || c.failed(1) => return Ok(None),
                Err(c) if c.retryable() => self.backoff(attempt, &c).await,
                Err(c) => {
                    return Err(StoreError::internal(format!(
                        "status change cancelled: {c:?}"
                    )));
                }
            }
        }
        Err(StoreError::unavailable(
            "the status change kept conflicting",
        ))
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let request = self
            .put_request(audit_item(entry))
            .condition_expression("attribute_not_exists(PK)");
        let put = self.resend_refused(|| request.clone().send()).await;
        match put {
            Ok(_) => Ok(()),
            // The entry's id is new and random: an earlier sending of this call put it.
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => applied_despite(sdk_error(e), self.audit_exists(entry)).await,
        }
    }

    async fn audit_log(&self, limit: u32, before: Option<&[u8]>) -> Result<AuditPage, StoreError> {
        let upper = match before {
            Some(bytes) => String::from_utf8(bytes.to_vec())
                .map_err(|_| StoreError::internal("malformed audit position"))?,
            // Sorts after every "<15 digits>#…" key.
            None => "9".repeat(16),
        };
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("PK = :audit AND SK < :upper")
            .expression_attribute_values(":audit", s("AUDIT"))
            .expression_attribute_values(":upper", s(upper))
            .scan_index_forward(false)
            .consistent_read(true)
            .limit(limit as i32 + 1)
            .send()
            .await
            .map_err(sdk_error)?;
        let items: Vec<&Item> = out.items().iter().collect();
        let (items, next_before) = page_of(items, limit, |i| {
            get_s(i, "SK").map(|sk| sk.as_bytes().to_vec())
        });
        let next_before = next_before.transpose()?;
        Ok(AuditPage {
            entries: items
                .into_iter()
                .map(audit_from_item)
                .collect::<Result<_, _>>()?,
            next_before,
        })
    }
}
