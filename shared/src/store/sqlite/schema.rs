//! The schema, as numbered migrations in `migrations/sqlite/` applied in order under
//! `PRAGMA user_version`, like PostgreSQL's.

use rusqlite::{Connection, TransactionBehavior, params};

/// The schema version this code reads and writes (`PRAGMA user_version`).
pub(super) const SCHEMA_VERSION: i64 = 4;

/// A schema change: its SQL, then, where it needs values SQL cannot compute, a step in Rust,
/// both in the transaction that sets the new version.
pub(super) type Migration = (
    &'static str,
    Option<fn(&Connection) -> rusqlite::Result<()>>,
);

/// Schema changes in order: version N is reached by applying `MIGRATIONS[N - 1]`.
pub(super) const MIGRATIONS: &[Migration] = &[
    (
        include_str!("../../../migrations/sqlite/0001_initial.sql"),
        None,
    ),
    (
        include_str!("../../../migrations/sqlite/0002_admin.sql"),
        None,
    ),
    (
        include_str!("../../../migrations/sqlite/0003_email_key.sql"),
        Some(backfill_email_keys),
    ),
    (
        include_str!("../../../migrations/sqlite/0004_login_attempts_by_window.sql"),
        None,
    ),
];

pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "database schema version {version} is newer than this build ({SCHEMA_VERSION})"
        )));
    }
    for (index, (sql, then)) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let txn = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        txn.execute_batch(sql)?;
        if let Some(step) = then {
            step(&txn)?;
        }
        txn.execute_batch(&format!("PRAGMA user_version={}", index + 1))?;
        txn.commit()?;
    }
    Ok(())
}

/// Gives every existing user the key of their address, computed in Rust
/// ([`crate::store::email_keys`] says who keeps none).
pub(super) fn backfill_email_keys(txn: &Connection) -> rusqlite::Result<()> {
    let users: Vec<(String, String)> = txn
        .prepare("SELECT id, email FROM users ORDER BY created_at, id")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut set = txn.prepare("UPDATE users SET email_key = ?2 WHERE id = ?1")?;
    for (id, key) in crate::store::email_keys::keys_to_backfill(users) {
        set.execute(params![id, key])?;
    }
    Ok(())
}
