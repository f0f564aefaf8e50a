CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL,
    username_key  TEXT NOT NULL UNIQUE,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_staff      INTEGER NOT NULL,
    is_active     INTEGER NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE accounts (
    user_id    TEXT PRIMARY KEY REFERENCES users(id),
    balance    INTEGER NOT NULL CHECK (balance BETWEEN 0 AND 999999999999999),
    version    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE operations (
    user_id               TEXT NOT NULL REFERENCES accounts(user_id),
    seq                   INTEGER NOT NULL,
    id                    TEXT NOT NULL UNIQUE,
    kind                  TEXT NOT NULL,
    amount                INTEGER NOT NULL CHECK (amount > 0),
    balance_after         INTEGER NOT NULL,
    counterparty_id       TEXT,
    counterparty_username TEXT,
    transfer_id           TEXT,
    description           TEXT,
    created_at            INTEGER NOT NULL,
    PRIMARY KEY (user_id, seq)
) WITHOUT ROWID;
CREATE TABLE idempotency_keys (
    user_id      TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    operation_id TEXT NOT NULL REFERENCES operations(id),
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
) WITHOUT ROWID;
CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id),
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    refresh_jti  TEXT NOT NULL,
    user_agent   TEXT,
    ip           TEXT,
    revoked_at   INTEGER
);
CREATE INDEX sessions_by_user ON sessions(user_id, created_at);
CREATE TABLE login_attempts (
    username_key TEXT PRIMARY KEY,
    attempts     INTEGER NOT NULL,
    window_start INTEGER NOT NULL
) WITHOUT ROWID;
