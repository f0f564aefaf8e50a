-- LightTech schema, version 1. Applied by `lighttech-local --init`; checked at every start.
-- Money is bigint minor units; times are bigint milliseconds since the Unix epoch (UTC).

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    username      text NOT NULL,
    username_key  text NOT NULL CONSTRAINT users_username_key_unique UNIQUE,
    email         text NOT NULL CONSTRAINT users_email_unique UNIQUE,
    password_hash text NOT NULL,
    is_staff      boolean NOT NULL,
    is_active     boolean NOT NULL,
    created_at    bigint NOT NULL
);

CREATE TABLE accounts (
    user_id    uuid PRIMARY KEY REFERENCES users (id),
    balance    bigint NOT NULL CHECK (balance BETWEEN 0 AND 999999999999999),
    version    bigint NOT NULL,
    updated_at bigint NOT NULL
);

CREATE TABLE operations (
    user_id               uuid NOT NULL REFERENCES accounts (user_id),
    seq                   bigint NOT NULL,
    id                    uuid NOT NULL UNIQUE,
    kind                  text NOT NULL
        CHECK (kind IN ('deposit', 'withdrawal', 'transfer_in', 'transfer_out')),
    amount                bigint NOT NULL CHECK (amount > 0),
    balance_after         bigint NOT NULL,
    counterparty_id       uuid,
    counterparty_username text,
    transfer_id           uuid,
    description           text,
    created_at            bigint NOT NULL,
    PRIMARY KEY (user_id, seq)
);

-- The key row is written first in a money movement's transaction (it serialises racing
-- requests with the same key), before the operation it points to exists: check at commit.
CREATE TABLE idempotency_keys (
    user_id      uuid NOT NULL REFERENCES users (id),
    key          text NOT NULL,
    fingerprint  text NOT NULL,
    operation_id uuid NOT NULL REFERENCES operations (id) DEFERRABLE INITIALLY DEFERRED,
    expires_at   bigint NOT NULL,
    PRIMARY KEY (user_id, key)
);

CREATE TABLE sessions (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id),
    created_at   bigint NOT NULL,
    last_used_at bigint NOT NULL,
    expires_at   bigint NOT NULL,
    refresh_jti  uuid NOT NULL,
    user_agent   text,
    ip           text,
    revoked_at   bigint
);
CREATE INDEX sessions_by_user ON sessions (user_id, created_at DESC);

CREATE TABLE login_attempts (
    username_key text PRIMARY KEY,
    attempts     integer NOT NULL,
    window_start bigint NOT NULL
);
