-- LightTech schema, version 10: a batch of transfers into one recipient writes its account once.
--
-- Migration 9 ran each transfer of a batch as the function of migration 6, which locks the
-- recipient's user row, the session and both account rows again (the batch already holds them
-- all) and updates the recipient's account: one new version of that one row per transfer, each
-- found by following the chain of the ones before. Here the batch reads the recipient once,
-- keeps its balance and version as it goes, and writes the account once, after the last
-- transfer. Each transfer still runs in a block of its own (a subtransaction): a refused one
-- leaves no trace, and the running balance moves only once its writes have all succeeded.
-- Checks, their order and their errors are migration 6's; nothing a client can observe changes.
--
-- Locks, in migration 6's order: the recipient's user row (shared, so a deactivation committed
-- before is read here and one after waits for the batch), the sessions, then the account rows
-- in id order.
CREATE OR REPLACE FUNCTION lighttech_transfer_batch(
    p_to_key text, p_max_balance bigint,
    p_session uuid[], p_touch_before bigint[], p_from uuid[], p_amount bigint[], p_now bigint[],
    p_transfer uuid[], p_out uuid[], p_in uuid[], p_description text[],
    p_key text[], p_fingerprint text[], p_key_expires bigint[]
) RETURNS TABLE (
    outcome text, balance_after bigint, seq bigint, recipient_id uuid,
    recipient_username text, error_code text, error_message text, error_detail text
)
LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    recipient uuid;
    recipient_name text;
    recipient_active boolean;
    credit_balance bigint;
    credit_version bigint;
    credited_at bigint;
    sender_balance bigint;
    sender_name text;
    used bigint;
BEGIN
    SELECT u.id, u.username, u.is_active INTO recipient, recipient_name, recipient_active
    FROM users u WHERE u.username_key = p_to_key FOR SHARE;
    PERFORM 1 FROM sessions s WHERE s.id = ANY (p_session) ORDER BY s.id FOR NO KEY UPDATE;
    PERFORM 1 FROM accounts a WHERE a.user_id = ANY (array_append(p_from, recipient))
    ORDER BY a.user_id FOR UPDATE;
    SELECT a.balance, a.version INTO credit_balance, credit_version
    FROM accounts a WHERE a.user_id = recipient;
    FOR i IN 1 .. cardinality(p_from) LOOP
        outcome := NULL;
        balance_after := NULL;
        seq := NULL;
        recipient_id := NULL;
        recipient_username := NULL;
        error_code := NULL;
        error_message := NULL;
        error_detail := NULL;
        BEGIN
            -- The session: lighttech_use_session (migration 4), its row locked above.
            IF p_session[i] IS NOT NULL THEN
                SELECT s.last_used_at INTO used FROM sessions s
                WHERE s.id = p_session[i] AND s.user_id = p_from[i] AND s.revoked_at IS NULL
                    AND s.expires_at > p_now[i];
                IF NOT FOUND THEN
                    RAISE EXCEPTION 'session not live' USING ERRCODE = 'LT006';
                END IF;
                IF used < p_touch_before[i] THEN
                    UPDATE sessions SET last_used_at = p_now[i] WHERE id = p_session[i];
                END IF;
            END IF;
            IF NOT lighttech_claim_key(p_from[i], p_key[i], p_fingerprint[i], p_out[i],
                p_key_expires[i], p_now[i]) THEN
                outcome := 'recorded';
            ELSE
                IF recipient IS NULL OR NOT recipient_active THEN
                    RAISE EXCEPTION 'recipient not found' USING ERRCODE = 'LT004';
                END IF;
                IF recipient = p_from[i] THEN
                    RAISE EXCEPTION 'transfer to oneself' USING ERRCODE = 'LT005';
                END IF;
                SELECT a.balance, u.username INTO sender_balance, sender_name
                FROM accounts a JOIN users u ON u.id = a.user_id WHERE a.user_id = p_from[i];
                IF NOT FOUND THEN
                    RAISE EXCEPTION 'account not found' USING ERRCODE = 'LT003';
                END IF;
                IF credit_balance IS NULL THEN
                    RAISE EXCEPTION 'recipient not found' USING ERRCODE = 'LT004';
                END IF;
                IF sender_balance < p_amount[i] THEN
                    RAISE EXCEPTION 'insufficient funds'
                        USING ERRCODE = 'LT001', DETAIL = sender_balance::text;
                END IF;
                IF credit_balance > p_max_balance - p_amount[i] THEN
                    RAISE EXCEPTION 'balance limit exceeded' USING ERRCODE = 'LT002';
                END IF;
                UPDATE accounts a SET balance = a.balance - p_amount[i], version = a.version + 1,
                    updated_at = p_now[i]
                WHERE a.user_id = p_from[i]
                RETURNING a.balance, a.version INTO balance_after, seq;
                INSERT INTO operations (user_id, seq, id, kind, amount, balance_after,
                    counterparty_id, counterparty_username, transfer_id, description, created_at)
                VALUES
                    (p_from[i], seq, p_out[i], 'transfer_out', p_amount[i], balance_after,
                        recipient, recipient_name, p_transfer[i], p_description[i], p_now[i]),
                    (recipient, credit_version + 1, p_in[i], 'transfer_in', p_amount[i],
                        credit_balance + p_amount[i], p_from[i], sender_name, p_transfer[i],
                        p_description[i], p_now[i]);
                -- Last, so a transfer refused above leaves the running balance as it was.
                credit_balance := credit_balance + p_amount[i];
                credit_version := credit_version + 1;
                credited_at := p_now[i];
                outcome := 'done';
                recipient_id := recipient;
                recipient_username := recipient_name;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS error_code = RETURNED_SQLSTATE,
                error_message = MESSAGE_TEXT, error_detail = PG_EXCEPTION_DETAIL;
            outcome := NULL;
            balance_after := NULL;
            seq := NULL;
            recipient_id := NULL;
            recipient_username := NULL;
        END;
        RETURN NEXT;
    END LOOP;
    IF credited_at IS NOT NULL THEN
        UPDATE accounts SET balance = credit_balance, version = credit_version,
            updated_at = credited_at
        WHERE user_id = recipient;
    END IF;
END
$$;
