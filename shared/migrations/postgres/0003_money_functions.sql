-- LightTech schema, version 3: each money movement as one server-side function, so that it is
-- one statement, one round trip and one (implicit) transaction instead of a BEGIN, three to
-- seven statements and a COMMIT sent one after the other. The rules are those the store applied
-- statement by statement before:
--   * the idempotency key is claimed first (a racing request with the same key waits on its
--     unique index until this one ends, then finds it recorded);
--   * a balance change is one conditional UPDATE (READ COMMITTED re-checks the condition
--     against the newest row version after waiting for a concurrent writer);
--   * a transfer locks both accounts in user-id order, so opposite transfers never deadlock.
-- A refusal raises an error with a LightTech SQLSTATE (class LT), which undoes everything the
-- statement did, the key claim included:
--   LT001 insufficient funds (DETAIL: the balance)   LT002 the balance ceiling would be passed
--   LT003 the caller's account does not exist        LT004 no active recipient of that name
--   LT005 a transfer to oneself
-- A key already recorded is not an error: the outcome is 'recorded' and nothing was written.

-- Whether the request may go on: it has no key, or it has claimed its key (new, or replacing an
-- expired record).
CREATE FUNCTION lighttech_claim_key(
    p_user uuid, p_key text, p_fingerprint text, p_operation uuid, p_expires bigint,
    p_now bigint
) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    claimed integer;
BEGIN
    IF p_key IS NULL THEN
        RETURN true;
    END IF;
    INSERT INTO idempotency_keys AS k (user_id, key, fingerprint, operation_id, expires_at)
    VALUES (p_user, p_key, p_fingerprint, p_operation, p_expires)
    ON CONFLICT (user_id, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
        operation_id = EXCLUDED.operation_id, expires_at = EXCLUDED.expires_at
    WHERE k.expires_at <= p_now;
    GET DIAGNOSTICS claimed = ROW_COUNT;
    RETURN claimed = 1;
END
$$;

CREATE FUNCTION lighttech_apply_change(
    p_user uuid, p_kind text, p_amount bigint, p_max_balance bigint, p_now bigint,
    p_operation uuid, p_description text,
    p_key text, p_fingerprint text, p_key_expires bigint,
    OUT outcome text, OUT balance_after bigint, OUT seq bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    current_balance bigint;
BEGIN
    IF NOT lighttech_claim_key(p_user, p_key, p_fingerprint, p_operation, p_key_expires, p_now)
    THEN
        outcome := 'recorded';
        RETURN;
    END IF;
    IF p_kind = 'deposit' THEN
        UPDATE accounts a SET balance = a.balance + p_amount, version = a.version + 1,
            updated_at = p_now
        WHERE a.user_id = p_user AND a.balance <= p_max_balance - p_amount
        RETURNING a.balance, a.version INTO balance_after, seq;
    ELSIF p_kind = 'withdrawal' THEN
        UPDATE accounts a SET balance = a.balance - p_amount, version = a.version + 1,
            updated_at = p_now
        WHERE a.user_id = p_user AND a.balance >= p_amount
        RETURNING a.balance, a.version INTO balance_after, seq;
    ELSE
        RAISE EXCEPTION '% is not a balance change', p_kind;
    END IF;
    IF NOT FOUND THEN
        SELECT a.balance INTO current_balance FROM accounts a WHERE a.user_id = p_user;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'account not found' USING ERRCODE = 'LT003';
        ELSIF p_kind = 'deposit' THEN
            RAISE EXCEPTION 'balance limit exceeded' USING ERRCODE = 'LT002';
        ELSE
            RAISE EXCEPTION 'insufficient funds'
                USING ERRCODE = 'LT001', DETAIL = current_balance::text;
        END IF;
    END IF;
    INSERT INTO operations (user_id, seq, id, kind, amount, balance_after, counterparty_id,
        counterparty_username, transfer_id, description, created_at)
    VALUES (p_user, seq, p_operation, p_kind, p_amount, balance_after, NULL, NULL, NULL,
        p_description, p_now);
    outcome := 'done';
END
$$;

CREATE FUNCTION lighttech_transfer(
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
    SELECT u.id, u.username, u.is_active INTO recipient_id, recipient_username, recipient_active
    FROM users u WHERE u.username_key = p_to_key;
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
