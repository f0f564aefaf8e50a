CREATE TABLE audit_log (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    actor_id        TEXT NOT NULL,
    actor_username  TEXT NOT NULL,
    action          TEXT NOT NULL,
    target_id       TEXT,
    target_username TEXT,
    detail          TEXT,
    at              INTEGER NOT NULL
);
