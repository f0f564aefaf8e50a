//! The embedded migrations (`migrations/postgres/`) and the one step SQL cannot do.

use super::*;

/// Embedded migrations, applied in order; the schema version is the count applied.
pub(super) const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        include_str!("../../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        include_str!("../../../migrations/postgres/0002_admin.sql"),
    ),
    (
        3,
        include_str!("../../../migrations/postgres/0003_money_functions.sql"),
    ),
    (
        4,
        include_str!("../../../migrations/postgres/0004_movement_sessions.sql"),
    ),
    (
        5,
        include_str!("../../../migrations/postgres/0005_movement_foreign_keys.sql"),
    ),
    (
        6,
        include_str!("../../../migrations/postgres/0006_transfer_recipient_lock.sql"),
    ),
    (
        7,
        include_str!("../../../migrations/postgres/0007_email_key.sql"),
    ),
    (
        8,
        include_str!("../../../migrations/postgres/0008_login_attempts_by_window.sql"),
    ),
    (
        9,
        include_str!("../../../migrations/postgres/0009_transfer_batches.sql"),
    ),
    (
        10,
        include_str!("../../../migrations/postgres/0010_transfer_batch_one_credit.sql"),
    ),
];

/// The migration after which [`backfill_email_keys`] runs.
pub(super) const EMAIL_KEY_VERSION: i32 = 7;

/// Gives every existing user the key of their address, computed in Rust
/// ([`crate::store::email_keys`] says who keeps none), in one statement.
pub(super) async fn backfill_email_keys(tx: &Tx<'_>) -> Result<(), StoreError> {
    let users = tx
        .query("SELECT id, email FROM users ORDER BY created_at, id", &[])
        .await
        .map_err(map_pg)?
        .iter()
        .map(|row| Ok((row.try_get::<_, Uuid>(0)?, row.try_get(1)?)))
        .collect::<Result<Vec<(Uuid, String)>, tokio_postgres::Error>>()
        .map_err(map_pg)?;
    let (ids, keys): (Vec<Uuid>, Vec<String>) = crate::store::email_keys::keys_to_backfill(users)
        .into_iter()
        .unzip();
    tx.execute(
        "UPDATE users SET email_key = k.key \
         FROM unnest($1::uuid[], $2::text[]) AS k(id, key) WHERE users.id = k.id",
        &[&ids, &keys],
    )
    .await
    .map_err(map_pg)?;
    Ok(())
}
