//! Items: keys, attribute values and the records they hold.

use super::*;

pub(super) fn key(pk: String, sk: &str) -> Item {
    HashMap::from([("PK".into(), s(pk)), ("SK".into(), s(sk))])
}

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn user_pk(id: UserId) -> String {
    format!("USER#{id}")
}

pub(super) fn op_sk(seq: u64) -> String {
    format!("OP#{seq:020}")
}

/// The sort keys of operations `FIRST_SEQ..=top` (every operation when `None`) as the bounds of
/// a `BETWEEN`; `None` when the range is empty, which DynamoDB refuses as a
/// `ValidationException` rather than answering with nothing.
pub(super) fn op_range(top: Option<u64>) -> Option<(String, String)> {
    let top = top.unwrap_or(u64::MAX / 2);
    (top >= FIRST_SEQ).then(|| (op_sk(FIRST_SEQ), op_sk(top)))
}

pub(super) fn bad(what: &str) -> StoreError {
    StoreError::internal(format!("stored item has a malformed {what}"))
}

pub(super) fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(bad(name)),
    }
}

pub(super) fn opt_s<'a>(item: &'a Item, name: &str) -> Result<Option<&'a str>, StoreError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v)),
        _ => Err(bad(name)),
    }
}

pub(super) fn get_n(item: &Item, name: &str) -> Result<i64, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| bad(name)),
        _ => Err(bad(name)),
    }
}

pub(super) fn opt_n(item: &Item, name: &str) -> Result<Option<i64>, StoreError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::N(v)) => v.parse().map(Some).map_err(|_| bad(name)),
        _ => Err(bad(name)),
    }
}

pub(super) fn get_bool(item: &Item, name: &str) -> Result<bool, StoreError> {
    match item.get(name) {
        Some(AttributeValue::Bool(v)) => Ok(*v),
        _ => Err(bad(name)),
    }
}

pub(super) fn get_u64(item: &Item, name: &str) -> Result<u64, StoreError> {
    u64::try_from(get_n(item, name)?).map_err(|_| bad(name))
}

pub(super) fn parse_id<T>(
    text: &str,
    what: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<T, StoreError> {
    parse(text).ok_or_else(|| bad(what))
}

/// What a primitive read of an account before its conditional write.
#[derive(Debug, Clone)]
pub(super) struct AccountState {
    pub(super) balance: Money,
    pub(super) version: u64,
    pub(super) active: bool,
    pub(super) username: String,
    pub(super) updated_at: Timestamp,
    /// Sessions of other epochs are dead (see the module documentation).
    pub(super) session_epoch: i64,
    /// When the last deactivation ended the sessions of the epochs before.
    pub(super) sessions_revoked_at: Option<Timestamp>,
}

pub(super) fn account_state(item: &Item) -> Result<AccountState, StoreError> {
    Ok(AccountState {
        balance: Money::from_minor(get_n(item, "balance")?),
        version: get_u64(item, "version")?,
        active: get_bool(item, "active")?,
        username: get_s(item, "username")?.to_owned(),
        updated_at: Timestamp::from_millis(get_n(item, "updated_at")?),
        session_epoch: opt_n(item, "session_epoch")?.unwrap_or(0),
        sessions_revoked_at: opt_n(item, "sessions_revoked_at")?.map(Timestamp::from_millis),
    })
}

/// The condition that an item's epoch attribute (`session_epoch` on the account, `epoch` on a
/// session) equals `:epoch`. Items written before epochs existed lack the attribute, which
/// counts as epoch 0; a later epoch is always written explicitly.
pub(super) fn epoch_is(attribute: &str, epoch: i64) -> String {
    if epoch == 0 {
        format!("(attribute_not_exists({attribute}) OR {attribute} = :epoch)")
    } else {
        format!("{attribute} = :epoch")
    }
}

/// A session as its account sees it: one of an inactive user, or from before the user's last
/// deactivation (another epoch), is revoked as of that deactivation whatever its own item says.
pub(super) fn effective_session(
    item: &Item,
    account: Option<&AccountState>,
) -> Result<SessionRecord, StoreError> {
    let mut record = session_from_item(item)?;
    let epoch = opt_n(item, "epoch")?.unwrap_or(0);
    let current = account.is_some_and(|a| a.active && a.session_epoch == epoch);
    if !current && record.revoked_at.is_none() {
        record.revoked_at = Some(
            account
                .and_then(|a| a.sessions_revoked_at)
                .unwrap_or(record.last_used_at),
        );
    }
    Ok(record)
}

/// Both business rules, phrased for the condition expression (`:amount`, `:ceiling`).
pub(super) const DEBIT_RULE: &str = "balance >= :amount";
pub(super) const CREDIT_RULE: &str = "balance <= :ceiling AND active = :active";

pub(super) fn operation_item(op: &Operation) -> Item {
    let mut item = HashMap::from([
        ("user_id".into(), s(op.user.to_string())),
        ("seq".into(), n(op.seq as i64)),
        ("id".into(), s(op.id.to_string())),
        ("kind".into(), s(op.kind.as_str())),
        ("amount".into(), n(op.amount.minor())),
        ("balance_after".into(), n(op.balance_after.minor())),
        ("created_at".into(), n(op.created_at.millis())),
    ]);
    if let Some(c) = &op.counterparty {
        item.insert("counterparty_id".into(), s(c.id.to_string()));
        item.insert("counterparty_username".into(), s(c.username.clone()));
    }
    if let Some(t) = op.transfer_id {
        item.insert("transfer_id".into(), s(t.to_string()));
    }
    if let Some(d) = &op.description {
        item.insert("description".into(), s(d.clone()));
    }
    item
}

/// The user an optional pair of attributes names (a counterparty, an audit target), if any.
fn named_user(
    item: &Item,
    id: &str,
    username: &str,
) -> Result<Option<(UserId, String)>, StoreError> {
    match opt_s(item, id)? {
        Some(text) => Ok(Some((
            parse_id(text, id, UserId::parse)?,
            get_s(item, username)?.to_owned(),
        ))),
        None => Ok(None),
    }
}

pub(super) fn operation_from_item(item: &Item) -> Result<Operation, StoreError> {
    let counterparty = named_user(item, "counterparty_id", "counterparty_username")?
        .map(|(id, username)| Counterparty { id, username });
    Ok(Operation {
        id: parse_id(get_s(item, "id")?, "id", OperationId::parse)?,
        user: parse_id(get_s(item, "user_id")?, "user_id", UserId::parse)?,
        seq: get_u64(item, "seq")?,
        kind: OperationKind::parse(get_s(item, "kind")?).ok_or_else(|| bad("kind"))?,
        amount: Money::from_minor(get_n(item, "amount")?),
        balance_after: Money::from_minor(get_n(item, "balance_after")?),
        counterparty,
        transfer_id: opt_s(item, "transfer_id")?
            .map(|t| parse_id(t, "transfer_id", TransferId::parse))
            .transpose()?,
        description: opt_s(item, "description")?.map(str::to_owned),
        created_at: Timestamp::from_millis(get_n(item, "created_at")?),
    })
}

pub(super) fn user_from_item(item: &Item) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        password_hash: get_s(item, "password_hash")?.to_owned(),
        ..user_from_index_item(item)?
    })
}

/// A profile as `GSI1` projects it ([`GSI1_PROJECTED`]): everything but the password hash,
/// which stays empty (the admin list, its only reader, never needs it).
pub(super) fn user_from_index_item(item: &Item) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: parse_id(get_s(item, "user_id")?, "user_id", UserId::parse)?,
        username: Username::parse(get_s(item, "username")?).map_err(|_| bad("username"))?,
        email: Email::from_stored(get_s(item, "email")?).map_err(|_| bad("email"))?,
        password_hash: String::new(),
        is_staff: get_bool(item, "is_staff")?,
        is_active: get_bool(item, "is_active")?,
        created_at: Timestamp::from_millis(get_n(item, "created_at")?),
    })
}

pub(super) fn session_item(sess: &SessionRecord, epoch: i64) -> Item {
    let mut item = key(user_pk(sess.user), &format!("SESSION#{}", sess.id));
    item.insert("id".into(), s(sess.id.to_string()));
    item.insert("epoch".into(), n(epoch));
    item.insert("user_id".into(), s(sess.user.to_string()));
    item.insert("created_at".into(), n(sess.created_at.millis()));
    item.insert("last_used_at".into(), n(sess.last_used_at.millis()));
    item.insert("expires_at".into(), n(sess.expires_at.millis()));
    item.insert(
        TTL_ATTRIBUTE.into(),
        n(sess.expires_at.unix_seconds() + TTL_GRACE_SECONDS),
    );
    item.insert("refresh_jti".into(), s(sess.refresh_jti.to_string()));
    if let Some(ua) = &sess.user_agent {
        item.insert("user_agent".into(), s(ua.clone()));
    }
    if let Some(ip) = &sess.ip {
        item.insert("ip".into(), s(ip.clone()));
    }
    if let Some(r) = sess.revoked_at {
        item.insert("revoked_at".into(), n(r.millis()));
    }
    item
}

pub(super) fn session_from_item(item: &Item) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id: parse_id(get_s(item, "id")?, "id", SessionId::parse)?,
        user: parse_id(get_s(item, "user_id")?, "user_id", UserId::parse)?,
        created_at: Timestamp::from_millis(get_n(item, "created_at")?),
        last_used_at: Timestamp::from_millis(get_n(item, "last_used_at")?),
        expires_at: Timestamp::from_millis(get_n(item, "expires_at")?),
        refresh_jti: parse_id(get_s(item, "refresh_jti")?, "refresh_jti", TokenId::parse)?,
        user_agent: opt_s(item, "user_agent")?.map(str::to_owned),
        ip: opt_s(item, "ip")?.map(str::to_owned),
        revoked_at: opt_n(item, "revoked_at")?.map(Timestamp::from_millis),
    })
}

pub(super) fn audit_item(e: &AuditEntry) -> Item {
    let mut item = key("AUDIT".into(), &format!("{:015}#{}", e.at.millis(), e.id));
    item.insert("id".into(), s(e.id.to_string()));
    item.insert("actor_id".into(), s(e.actor.id.to_string()));
    item.insert("actor_username".into(), s(e.actor.username.clone()));
    item.insert("action".into(), s(e.action.as_str()));
    if let Some(t) = &e.target {
        item.insert("target_id".into(), s(t.id.to_string()));
        item.insert("target_username".into(), s(t.username.clone()));
    }
    if let Some(d) = &e.detail {
        item.insert("detail".into(), s(d.clone()));
    }
    item.insert("at".into(), n(e.at.millis()));
    item
}

pub(super) fn audit_from_item(item: &Item) -> Result<AuditEntry, StoreError> {
    let target = named_user(item, "target_id", "target_username")?
        .map(|(id, username)| AuditParty { id, username });
    Ok(AuditEntry {
        id: uuid::Uuid::try_parse(get_s(item, "id")?).map_err(|_| bad("id"))?,
        actor: AuditParty {
            id: parse_id(get_s(item, "actor_id")?, "actor_id", UserId::parse)?,
            username: get_s(item, "actor_username")?.to_owned(),
        },
        action: AuditAction::parse(get_s(item, "action")?).ok_or_else(|| bad("action"))?,
        target,
        detail: opt_s(item, "detail")?.map(str::to_owned),
        at: Timestamp::from_millis(get_n(item, "at")?),
    })
}

pub(super) fn put_item(
    table: &str,
    item: Item,
    condition: &str,
) -> Result<TransactWriteItem, StoreError> {
    Ok(TransactWriteItem::builder()
        .put(
            Put::builder()
                .table_name(table)
                .set_item(Some(item))
                .condition_expression(condition)
                .build()
                .map_err(StoreError::internal)?,
        )
        .build())
}
