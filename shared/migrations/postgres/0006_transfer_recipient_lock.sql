-- LightTech schema, version 6: a transfer reads its recipient's active flag under a lock that a
-- deactivation must wait for.
--
-- Version 3 read `users.is_active` of the recipient without a lock and then locked only the two
-- account rows, which a deactivation does not touch. A transfer that had read "active" and was
-- then waiting for an account lock could go on to credit the recipient after their
-- deactivation had committed. The recipient's user row is now share-locked (FOR SHARE) when it
-- is read, until the transfer commits. A deactivation (or reactivation) is an UPDATE of that
-- row, whose lock conflicts with FOR SHARE (FOR KEY SHARE would not conflict: `is_active` is
-- not a key column), so:
--   * a deactivation that committed first is seen: the transfer's read waits for it and reads
--     the row's newest version, inactive (LT004, nothing applied);
--   * a deactivation that comes later waits for the transfer in flight, and only then commits.
-- Either way no transfer commits a credit to a user after that user's deactivation committed,
-- as DynamoDB's condition on the recipient's active flag already guarantees.
--
-- Lock order. A deactivation locks the user's row, then that user's sessions; a movement with a
-- session locks that session first (migration 4). Had the transfer taken the recipient's row
-- after its session, two transfers in opposite directions racing the deactivations of both
-- parties could wait in a circle (deactivation of A → A's session held by A's transfer → B's
-- row held by the deactivation of B → B's session held by B's transfer → A's row). So the
-- transfer takes the recipient's row before anything else: every transaction then takes user
-- rows before sessions, sessions before the idempotency key, the key before the account rows
-- (those in user-id order), and none waits for more than one user row. Opposite transfers only
-- share user-row locks, which never conflict, and still queue on the account rows as before. The
-- refusals keep their order: session (LT006), recorded key, recipient (LT004), oneself (LT005).

-- Version 3's transfer (no session), its recipient read now under the lock. Unchanged apart
-- from that read.
CREATE OR REPLACE FUNCTION lighttech_transfer(
    p_from uuid, p_to_key text, p_amount bigint, p_max_balance bigint, p_now bigint,
    p_transfer uuid, p_out uuid, p_in uuid, p_description text,
    p_key text, p_fingerprint text, p_key_expires bigint,
    OUT outcome text, OUT balance_after bigint, OUT seq bigint,
    OUT recipient_id uuid, OUT recipient_username text
)
LANGUAGE plpgsql AS $$
DECLARE
    recipient_active boolean;
    sender_username text;
    sender_balance bigint;
    recipient_balance bigint;
    locked record;
    credit_balance bigint;
    credit_seq bigint;
BEGIN
    IF NOT lighttech_claim_key(p_from, p_key, p_fingerprint, p_out, p_key_expires, p_now) THEN
        outcome := 'recorded';
        RETURN;
    END IF;
    -- Share-locked until commit: a deactivation of the recipient waits for this transfer, and
    -- one that committed before is read here.
    SELECT u.id, u.username, u.is_active INTO recipient_id, recipient_username, recipient_active
    FROM users u WHERE u.username_key = p_to_key
    FOR SHARE;
    IF NOT FOUND OR NOT recipient_active THEN
        RAISE EXCEPTION 'recipient not found' USING ERRCODE = 'LT004';
    END IF;
    IF recipient_id = p_from THEN
        RAISE EXCEPTION 'transfer to oneself' USING ERRCODE = 'LT005';
    END IF;
    -- Both rows locked in one fixed order: opposite transfers cannot deadlock.
    FOR locked IN
        SELECT a.user_id, a.balance, u.username FROM accounts a
        JOIN users u ON u.id = a.user_id
        WHERE a.user_id IN (p_from, recipient_id) ORDER BY a.user_id FOR UPDATE OF a
    LOOP
        IF locked.user_id = p_from THEN
            sender_balance := locked.balance;
            sender_username := locked.username;
        ELSE
            recipient_balance := locked.balance;
        END IF;
    END LOOP;
    IF sender_balance IS NULL THEN
        RAISE EXCEPTION 'account not found' USING ERRCODE = 'LT003';
    END IF;
    IF recipient_balance IS NULL THEN
        RAISE EXCEPTION 'recipient not found' USING ERRCODE = 'LT004';
    END IF;
    IF sender_balance < p_amount THEN
        RAISE EXCEPTION 'insufficient funds'
            USING ERRCODE = 'LT001', DETAIL = sender_balance::text;
    END IF;
    IF recipient_balance > p_max_balance - p_amount THEN
        RAISE EXCEPTION 'balance limit exceeded' USING ERRCODE = 'LT002';
    END IF;
    UPDATE accounts a SET balance = a.balance - p_amount, version = a.version + 1,
        updated_at = p_now
    WHERE a.user_id = p_from
    RETURNING a.balance, a.version INTO balance_after, seq;
    UPDATE accounts a SET balance = a.balance + p_amount, version = a.version + 1,
        updated_at = p_now
    WHERE a.user_id = recipient_id
    RETURNING a.balance, a.version INTO credit_balance, credit_seq;
    INSERT INTO operations (user_id, seq, id, kind, amount, balance_after, counterparty_id,
        counterparty_username, transfer_id, description, created_at)
    VALUES
        (p_from, seq, p_out, 'transfer_out', p_amount, balance_after, recipient_id,
            recipient_username, p_transfer, p_description, p_now),
        (recipient_id, credit_seq, p_in, 'transfer_in', p_amount, credit_balance, p_from,
            sender_username, p_transfer, p_description, p_now);
    outcome := 'done';
END
$$;

-- Version 4's transfer (the one the store calls): the recipient's row is locked first, before
-- the caller's session, for the lock order above. The transfer of version 3 then reads the row
-- again under the lock this transaction already holds.
CREATE OR REPLACE FUNCTION lighttech_transfer(
    p_session uuid, p_touch_before bigint,
    p_from uuid, p_to_key text, p_amount bigint, p_max_balance bigint, p_now bigint,
    p_transfer uuid, p_out uuid, p_in uuid, p_description text,
    p_key text, p_fingerprint text, p_key_expires bigint,
    OUT outcome text, OUT balance_after bigint, OUT seq bigint,
    OUT recipient_id uuid, OUT recipient_username text
)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM users u WHERE u.username_key = p_to_key FOR SHARE;
    PERFORM lighttech_use_session(p_from, p_session, p_now, p_touch_before);
    SELECT t.outcome, t.balance_after, t.seq, t.recipient_id, t.recipient_username
    INTO outcome, balance_after, seq, recipient_id, recipient_username
    FROM lighttech_transfer(p_from, p_to_key, p_amount, p_max_balance, p_now, p_transfer,
        p_out, p_in, p_description, p_key, p_fingerprint, p_key_expires) t;
END
$$;
