//! The [`Store`] trait on SQLite: one method a primitive.

use super::*;

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.read_bounded(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(map_err))
            .await
    }

    async fn create_user(&self, user: &NewUser) -> Result<UserRecord, StoreError> {
        let user = user.clone();
        self.write(move |txn| {
            let taken = |sql: &str, value: &str| -> Result<bool, StoreError> {
                txn.prepare_cached(sql)
                    .and_then(|mut s| s.exists([value]))
                    .map_err(map_err)
            };
            // The IMMEDIATE transaction holds the write lock, so these checks cannot race; the
            // UNIQUE constraints stay as the last line of defence.
            if taken(
                "SELECT 1 FROM users WHERE username_key = ?1",
                &user.username.key(),
            )? {
                return Err(StoreError::UsernameTaken);
            }
            let email_key = user.email.key();
            if taken("SELECT 1 FROM users WHERE email_key = ?1", &email_key)? {
                return Err(StoreError::EmailTaken);
            }
            txn.execute(
                "INSERT INTO users (id, username, username_key, email, email_key, password_hash, is_staff, is_active, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8)",
                params![
                    user.id.to_string(),
                    user.username.as_str(),
                    user.username.key(),
                    user.email.as_str(),
                    email_key,
                    user.password_hash,
                    user.is_staff,
                    user.now.millis(),
                ],
            )
            .map_err(map_err)?;
            txn.execute(
                "INSERT INTO accounts (user_id, balance, version, updated_at) VALUES (?1, 0, 0, ?2)",
                params![user.id.to_string(), user.now.millis()],
            )
            .map_err(map_err)?;
            Ok(UserRecord {
                id: user.id,
                username: user.username,
                email: user.email,
                password_hash: user.password_hash,
                is_staff: user.is_staff,
                is_active: true,
                created_at: user.now,
            })
        })
        .await
    }

    async fn user_by_username(&self, username_key: &str) -> Result<Option<UserRecord>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username_key = ?1");
        self.query_opt(&sql, [username_key], user_from_row).await
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1");
        self.query_opt(&sql, [id.to_string()], user_from_row).await
    }

    async fn create_session(&self, session: &SessionRecord) -> Result<bool, StoreError> {
        let s = session.clone();
        self.write(move |txn| {
            let inserted = txn
                .execute(
                    &format!(
                        "INSERT INTO sessions ({SESSION_COLUMNS}) \
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 \
                     WHERE EXISTS (SELECT 1 FROM users WHERE id = ?2 AND is_active)"
                    ),
                    params![
                        s.id.to_string(),
                        s.user.to_string(),
                        s.created_at.millis(),
                        s.last_used_at.millis(),
                        s.expires_at.millis(),
                        s.refresh_jti.to_string(),
                        s.user_agent,
                        s.ip,
                        s.revoked_at.map(Timestamp::millis),
                    ],
                )
                .map_err(map_err)?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn session(
        &self,
        user: UserId,
        id: SessionId,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1 AND user_id = ?2");
        self.query_opt(&sql, [id.to_string(), user.to_string()], session_from_row)
            .await
    }

    async fn rotate_session(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
        let r = rotation.clone();
        self.write(move |txn| {
            // The session ends at the new token's expiry or its maximum lifetime, whichever
            // comes first (`Rotation::session_end`, computed here from the stored login time).
            let rotated: Option<i64> = txn
                .query_row(
                    "UPDATE sessions SET refresh_jti = :next, last_used_at = :now, \
                     expires_at = MIN(:expires, created_at + :max_lifetime) \
                     WHERE id = :session AND user_id = :user AND refresh_jti = :presented \
                     AND revoked_at IS NULL AND expires_at > :now AND created_at > :created_after \
                     RETURNING created_at",
                    named_params! {
                        ":next": r.next.to_string(),
                        ":now": r.now.millis(),
                        ":expires": r.expires_at.millis(),
                        ":session": r.session.to_string(),
                        ":presented": r.presented.to_string(),
                        ":user": r.user.to_string(),
                        ":max_lifetime": r.max_lifetime_seconds.saturating_mul(1000),
                        ":created_after": r.created_after().millis(),
                    },
                    |row| row.get(0),
                )
                .optional()
                .map_err(map_err)?;
            if let Some(created_at) = rotated {
                return Ok(RotateOutcome::Rotated {
                    created_at: Timestamp::from_millis(created_at),
                });
            }
            let current = txn
                .query_row(
                    &format!(
                        "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1 AND user_id = ?2"
                    ),
                    [r.session.to_string(), r.user.to_string()],
                    session_from_row,
                )
                .optional()
                .map_err(map_err)?;
            match current {
                // This very rotation already applied (a resend): its fresh token id is current.
                Some(s) if r.admits(&s) && s.refresh_jti == r.next => Ok(RotateOutcome::Rotated {
                    created_at: s.created_at,
                }),
                Some(s) if r.admits(&s) => {
                    // A validly signed token for this session that is not the current one was
                    // spent before: whoever holds it may have stolen it. End the session.
                    txn.execute(
                        "UPDATE sessions SET revoked_at = ?1 WHERE id = ?2",
                        params![r.now.millis(), r.session.to_string()],
                    )
                    .map_err(map_err)?;
                    Ok(RotateOutcome::Reused)
                }
                _ => Ok(RotateOutcome::Inactive),
            }
        })
        .await
    }

    async fn touch_session(
        &self,
        user: UserId,
        id: SessionId,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.execute(
            "UPDATE sessions SET last_used_at = ?1 \
             WHERE id = ?2 AND user_id = ?3 AND revoked_at IS NULL",
            (now.millis(), id.to_string(), user.to_string()),
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
            "UPDATE sessions SET revoked_at = ?1 \
             WHERE id = ?2 AND user_id = ?3 AND revoked_at IS NULL AND expires_at > ?1",
            (now.millis(), id.to_string(), user.to_string()),
        )
        .await
        .map(|revoked| revoked == 1)
    }

    async fn active_sessions(
        &self,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions \
                 WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2 \
                 ORDER BY created_at DESC, id DESC"
            ))
            .and_then(|mut s| {
                s.query_map(params![user.to_string(), now.millis()], session_from_row)?
                    .collect()
            })
            .map_err(map_err)
        })
        .await
    }

    async fn take_login_attempt(
        &self,
        username_key: &str,
        policy: ThrottlePolicy,
        now: Timestamp,
    ) -> Result<Attempt, StoreError> {
        let key = username_key.to_owned();
        self.write(move |txn| {
            let window_ms = policy.window_seconds * 1000;
            // A bounded batch of rows whose window has passed leaves with each attempt, so
            // made-up usernames cannot grow the table for ever (one index probe when none has).
            txn.prepare_cached(
                "DELETE FROM login_attempts WHERE username_key IN (\
                 SELECT username_key FROM login_attempts WHERE window_start <= ?1 LIMIT ?2)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    now.millis() - window_ms,
                    EXPIRED_ATTEMPTS_PRUNED as i64
                ])
            })
            .map_err(map_err)?;
            let current: Option<(i64, i64)> = txn
                .query_row(
                    "SELECT attempts, window_start FROM login_attempts WHERE username_key = ?1",
                    [&key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(map_err)?;
            let (attempts, start) = match current {
                Some((attempts, start)) if start + window_ms > now.millis() => (attempts, start),
                _ => (0, now.millis()),
            };
            if attempts >= i64::from(policy.max_attempts) {
                let remaining_ms = (start + window_ms - now.millis()).max(0);
                return Ok(Attempt::Limited {
                    retry_after: u64::try_from((remaining_ms + 999) / 1000).unwrap_or(1).max(1),
                });
            }
            txn.execute(
                "INSERT INTO login_attempts (username_key, attempts, window_start) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (username_key) DO UPDATE SET attempts = excluded.attempts, window_start = excluded.window_start",
                params![key, attempts + 1, start],
            )
            .map_err(map_err)?;
            Ok(Attempt::Allowed)
        })
        .await
    }

    async fn clear_login_attempts(&self, username_key: &str) -> Result<(), StoreError> {
        let key = username_key.to_owned();
        self.execute("DELETE FROM login_attempts WHERE username_key = ?1", [key])
            .await?;
        Ok(())
    }

    async fn account(&self, user: UserId) -> Result<Option<Account>, StoreError> {
        self.query_opt(
            "SELECT balance, version, updated_at FROM accounts WHERE user_id = ?1",
            [user.to_string()],
            |r| {
                Ok(Account {
                    user,
                    balance: Money::from_minor(r.get(0)?),
                    version: version_of(r.get(1)?)?,
                    updated_at: Timestamp::from_millis(r.get(2)?),
                })
            },
        )
        .await
    }

    async fn apply_change(&self, change: &BalanceChange) -> Result<Applied, StoreError> {
        let c = change.clone();
        self.write(move |txn| {
            movement(txn, &c, || {
                let (balance_after, version) = move_balance(txn, c.user, c.kind, c.amount, c.now)?;
                Ok((c.operation(version, balance_after, c.now), None))
            })
        })
        .await
    }

    async fn transfer(&self, transfer: &TransferCommand) -> Result<Applied, StoreError> {
        let t = transfer.clone();
        self.write(move |txn| {
            movement(txn, &t, || {
                let recipient: Option<(String, String, bool)> = txn
                    .prepare_cached(
                        "SELECT id, username, is_active FROM users WHERE username_key = ?1",
                    )
                    .and_then(|mut s| {
                        s.query_row([&t.to_username_key], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        })
                        .optional()
                    })
                    .map_err(map_err)?;
                let (recipient_id, recipient_name) = match recipient {
                    Some((id, name, true)) => (
                        UserId::parse(&id).ok_or_else(|| StoreError::internal(bad_row("id")))?,
                        name,
                    ),
                    _ => return Err(StoreError::RecipientNotFound),
                };
                if recipient_id == t.from {
                    return Err(StoreError::SelfTransfer);
                }
                let sender_name: String = txn
                    .prepare_cached("SELECT username FROM users WHERE id = ?1")
                    .and_then(|mut s| s.query_row([t.from.to_string()], |r| r.get(0)).optional())
                    .map_err(map_err)?
                    .ok_or(StoreError::AccountNotFound)?;
                let debited = move_balance(txn, t.from, ChangeKind::Withdrawal, t.amount, t.now)?;
                let credited =
                    move_balance(txn, recipient_id, ChangeKind::Deposit, t.amount, t.now)?;
                let recipient = Counterparty {
                    id: recipient_id,
                    username: recipient_name,
                };
                let sender = Counterparty {
                    id: t.from,
                    username: sender_name,
                };
                let out = t.side(
                    OperationKind::TransferOut,
                    t.from,
                    debited,
                    recipient,
                    t.now,
                );
                let incoming = t.side(
                    OperationKind::TransferIn,
                    recipient_id,
                    credited,
                    sender,
                    t.now,
                );
                Ok((out, Some(incoming)))
            })
        })
        .await
    }

    async fn idempotent_record(
        &self,
        user: UserId,
        key: &IdempotencyKey,
        now: Timestamp,
    ) -> Result<Option<IdempotentRecord>, StoreError> {
        let key = key.as_str().to_owned();
        self.read_bounded(move |c| find_idempotent(c, user, &key, now))
            .await
    }

    async fn history(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        self.read_bounded(|c| history_page(c, query)).await
    }

    async fn list_users(&self, q: &UserQuery) -> Result<UserPage, StoreError> {
        let q = q.clone();
        self.read(move |c| {
            let rows: Vec<(UserSummary, String)> = c
                .prepare_cached(
                    "SELECT u.id, u.username, u.email, u.password_hash, u.is_staff, u.is_active, \
                     u.created_at, u.username_key, a.balance \
                     FROM users u JOIN accounts a ON a.user_id = u.id \
                     WHERE u.username_key > ?1 \
                     AND (?2 IS NULL OR instr(u.username_key, ?2) > 0 OR instr(u.email, ?2) > 0) \
                     ORDER BY u.username_key LIMIT ?3",
                )
                .and_then(|mut s| {
                    s.query_map(
                        params![
                            q.after.clone().unwrap_or_default(),
                            q.search,
                            i64::from(q.limit) + 1
                        ],
                        |row| {
                            Ok((
                                UserSummary {
                                    user: user_from_row(row)?,
                                    balance: Money::from_minor(row.get("balance")?),
                                },
                                row.get::<_, String>("username_key")?,
                            ))
                        },
                    )?
                    .collect()
                })
                .map_err(map_err)?;
            let (rows, next_after) = page_of(rows, q.limit, |(_, key)| key.clone());
            Ok(UserPage {
                users: rows.into_iter().map(|(u, _)| u).collect(),
                next_after,
            })
        })
        .await
    }

    async fn set_user_active(
        &self,
        change: &StatusChange,
    ) -> Result<Option<UserRecord>, StoreError> {
        let change = change.clone();
        self.write(move |txn| {
            let updated = txn
                .execute(
                    "UPDATE users SET is_active = ?1 WHERE id = ?2",
                    params![change.active, change.user.to_string()],
                )
                .map_err(map_err)?;
            if updated == 0 {
                return Ok(None);
            }
            if !change.active {
                txn.execute(
                    "UPDATE sessions SET revoked_at = ?1 WHERE user_id = ?2 AND revoked_at IS NULL",
                    params![change.now.millis(), change.user.to_string()],
                )
                .map_err(map_err)?;
            }
            insert_audit(txn, &change.audit)?;
            load_user(txn, change.user)
        })
        .await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let entry = entry.clone();
        self.write(move |txn| insert_audit(txn, &entry)).await
    }

    async fn audit_log(&self, limit: u32, before: Option<&[u8]>) -> Result<AuditPage, StoreError> {
        let before = audit_seq_before(before)?;
        self.read(move |c| {
            let rows: Vec<(AuditEntry, i64)> = c
                .prepare_cached(
                    "SELECT seq, id, actor_id, actor_username, action, target_id, target_username, detail, at \
                     FROM audit_log WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2",
                )
                .and_then(|mut s| {
                    s.query_map(params![before, i64::from(limit) + 1], |row| {
                        Ok((audit_from_row(row)?, row.get("seq")?))
                    })?
                    .collect()
                })
                .map_err(map_err)?;
            let (rows, next_before) = page_of(rows, limit, |(_, seq): &(_, i64)| seq.to_be_bytes().to_vec());
            Ok(AuditPage {
                entries: rows.into_iter().map(|(e, _)| e).collect(),
                next_before,
            })
        })
        .await
    }
}
