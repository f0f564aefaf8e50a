//! The [`Store`] trait on PostgreSQL: one method a primitive.

use super::*;

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.client()
            .await?
            .simple_query("SELECT 1")
            .await
            .map_err(map_pg)?;
        Ok(())
    }

    async fn create_user(&self, user: &NewUser) -> Result<UserRecord, StoreError> {
        in_tx!(self, |tx| create_user_tx(&tx, user))?;
        Ok(UserRecord {
            id: user.id,
            username: user.username.clone(),
            email: user.email.clone(),
            password_hash: user.password_hash.clone(),
            is_staff: user.is_staff,
            is_active: true,
            created_at: user.now,
        })
    }

    async fn user_by_username(&self, username_key: &str) -> Result<Option<UserRecord>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username_key = $1");
        self.query_opt(&sql, &[&username_key], user_from_row).await
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        self.query_opt(&sql, &[&id.0], user_from_row).await
    }

    async fn create_session(&self, s: &SessionRecord) -> Result<bool, StoreError> {
        in_tx!(self, |tx| create_session_tx(&tx, s))
    }

    async fn session(
        &self,
        user: UserId,
        id: SessionId,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1 AND user_id = $2");
        self.query_opt(&sql, &[&id.0, &user.0], session_from_row)
            .await
    }

    async fn rotate_session(&self, r: &Rotation) -> Result<RotateOutcome, StoreError> {
        in_tx!(self, |tx| rotate_session_tx(&tx, r))
    }

    async fn touch_session(
        &self,
        user: UserId,
        id: SessionId,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.execute(
            "UPDATE sessions SET last_used_at = $1 \
             WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
            &[&now.millis(), &id.0, &user.0],
        )
        .await?;
        Ok(())
    }

    async fn revoke_session(
        &self,
        user: UserId,
        id: SessionId,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.execute(
            "UPDATE sessions SET revoked_at = $1 \
             WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL AND expires_at > $1",
            &[&now.millis(), &id.0, &user.0],
        )
        .await
        .map(|revoked| revoked == 1)
    }

    async fn active_sessions(
        &self,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let client = self.client().await?;
        client
            .query(
                &format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions \
                     WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
                     ORDER BY created_at DESC, id DESC"
                ),
                &[&user.0, &now.millis()],
            )
            .await
            .map_err(map_pg)?
            .iter()
            .map(session_from_row)
            .collect()
    }

    async fn take_login_attempt(
        &self,
        username_key: &str,
        policy: ThrottlePolicy,
        now: Timestamp,
    ) -> Result<Attempt, StoreError> {
        let floor = now.millis() - policy.window_seconds * 1000;
        let max = i32::try_from(policy.max_attempts).unwrap_or(i32::MAX);
        in_tx!(self, |tx| take_login_attempt_tx(
            &tx,
            username_key,
            policy,
            now,
            floor,
            max
        ))
    }

    async fn clear_login_attempts(&self, username_key: &str) -> Result<(), StoreError> {
        self.execute(
            "DELETE FROM login_attempts WHERE username_key = $1",
            &[&username_key],
        )
        .await?;
        Ok(())
    }

    async fn account(&self, user: UserId) -> Result<Option<Account>, StoreError> {
        self.query_opt(
            "SELECT balance, version, updated_at FROM accounts WHERE user_id = $1",
            &[&user.0],
            |r| {
                Ok(Account {
                    user,
                    balance: Money::from_minor(r.get(0)),
                    version: version_of(r.get(1))?,
                    updated_at: Timestamp::from_millis(r.get(2)),
                })
            },
        )
        .await
    }

    async fn apply_change(&self, c: &BalanceChange) -> Result<Applied, StoreError> {
        in_statement!(self, |client| money_once(&client, c))
    }

    async fn transfer(&self, t: &TransferCommand) -> Result<Applied, StoreError> {
        self.transfer_queued(t).await
    }

    async fn idempotent_record(
        &self,
        user: UserId,
        key: &IdempotencyKey,
        now: Timestamp,
    ) -> Result<Option<IdempotentRecord>, StoreError> {
        let client = self.client().await?;
        find_record(&client, user, key.as_str(), now).await
    }

    async fn history(&self, q: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        if q.below_everything() {
            return Ok(HistoryPage::from_fetched(vec![], q.limit));
        }
        let kinds: Vec<&str> = if q.kinds.is_empty() {
            OperationKind::ALL.iter().map(|k| k.as_str()).collect()
        } else {
            q.kinds.iter().map(|k| k.as_str()).collect()
        };
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {OPERATION_COLUMNS} FROM operations o \
                 WHERE o.user_id = $1 AND o.seq < $2 AND o.kind = ANY($3) \
                 AND o.created_at >= $4 AND o.created_at <= $5 \
                 ORDER BY o.seq DESC LIMIT $6"
            ))
            .await
            .map_err(map_pg)?;
        let rows = client
            .query(
                &stmt,
                &[
                    &q.user.0,
                    &q.before_seq
                        .map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX)),
                    &kinds,
                    &q.since.map_or(i64::MIN, Timestamp::millis),
                    &q.until.map_or(i64::MAX, Timestamp::millis),
                    &(i64::from(q.limit) + 1),
                ],
            )
            .await
            .map_err(map_pg)?;
        let ops = rows
            .iter()
            .map(operation_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HistoryPage::from_fetched(ops, q.limit))
    }

    async fn list_users(&self, q: &UserQuery) -> Result<UserPage, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT u.id, u.username, u.email, u.password_hash, u.is_staff, u.is_active, \
                 u.created_at, u.username_key, a.balance \
                 FROM users u JOIN accounts a ON a.user_id = u.id \
                 WHERE u.username_key COLLATE \"C\" > $1 \
                 AND ($2::text IS NULL OR strpos(u.username_key, $2) > 0 OR strpos(u.email, $2) > 0) \
                 ORDER BY u.username_key COLLATE \"C\" LIMIT $3",
                &[
                    &q.after.clone().unwrap_or_default(),
                    &q.search,
                    &(i64::from(q.limit) + 1),
                ],
            )
            .await
            .map_err(map_pg)?;
        let mut users = Vec::with_capacity(rows.len());
        for row in &rows {
            users.push((
                UserSummary {
                    user: user_from_row(row)?,
                    balance: Money::from_minor(row.try_get("balance").map_err(map_pg)?),
                },
                row.try_get::<_, String>("username_key").map_err(map_pg)?,
            ));
        }
        let (users, next_after) = page_of(users, q.limit, |(_, key)| key.clone());
        Ok(UserPage {
            users: users.into_iter().map(|(u, _)| u).collect(),
            next_after,
        })
    }

    async fn set_user_active(
        &self,
        change: &StatusChange,
    ) -> Result<Option<UserRecord>, StoreError> {
        in_tx!(self, |tx| set_user_active_tx(&tx, change))
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let client = self.client().await?;
        insert_audit(&**client, entry).await.map_err(map_pg)
    }

    async fn audit_log(&self, limit: u32, before: Option<&[u8]>) -> Result<AuditPage, StoreError> {
        let before = audit_seq_before(before)?;
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT seq, id, actor_id, actor_username, action, target_id, target_username, \
                 detail, at FROM audit_log WHERE seq < $1 ORDER BY seq DESC LIMIT $2",
                &[&before, &(i64::from(limit) + 1)],
            )
            .await
            .map_err(map_pg)?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            entries.push((
                audit_from_row(row)?,
                row.try_get::<_, i64>("seq").map_err(map_pg)?,
            ));
        }
        let (entries, next_before) = page_of(entries, limit, |(_, seq)| seq.to_be_bytes().to_vec());
        Ok(AuditPage {
            entries: entries.into_iter().map(|(e, _)| e).collect(),
            next_before,
        })
    }
}
