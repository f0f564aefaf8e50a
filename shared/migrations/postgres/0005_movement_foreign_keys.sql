-- LightTech schema, version 5: the money movements' own rows without foreign keys.
--
-- Three foreign keys were checked on every deposit, withdrawal and transfer, each by a query of
-- its own that also locks the referenced row (FOR KEY SHARE): an operation's account, an
-- idempotency key's user, and (at commit) the key's operation. They guarded facts the money
-- functions (migrations 3 and 4), the only writers of these two tables, establish by
-- construction in the same transaction:
--   * an operation row is inserted only after the UPDATE of its account returned that row
--     (the account exists, and it is locked until commit);
--   * a key row is inserted for the caller, whose account the same statement then updates or
--     refuses (LT003 undoes the key with everything else);
--   * a key row names the operation id that the same statement inserts before it returns
--     'done', or the statement fails and the key goes with it.
-- Nothing deletes users, accounts or operations. Measured on two cores: about 8–20 % more
-- deposits a second without them (BENCHMARKS.md, profile section). The keys of the other
-- tables (accounts, sessions, the audit trail), written outside the hot path, stay.
ALTER TABLE operations DROP CONSTRAINT operations_user_id_fkey;
ALTER TABLE idempotency_keys
    DROP CONSTRAINT idempotency_keys_user_id_fkey,
    DROP CONSTRAINT idempotency_keys_operation_id_fkey;
