-- Emails are unique by their folded key (`Email::key`), not by the lower-cased address. The
-- old `email UNIQUE` stays (SQLite drops a constraint only by rebuilding the table); equal
-- addresses have equal keys, so it never refuses what the key admits. Rows from before the key
-- get theirs from `backfill_email_keys` (schema.rs), in the same transaction.
ALTER TABLE users ADD COLUMN email_key TEXT;
CREATE UNIQUE INDEX users_by_email_key ON users(email_key);
