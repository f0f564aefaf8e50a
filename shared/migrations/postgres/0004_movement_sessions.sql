-- LightTech schema, version 4: a money movement checks the caller's session itself, as the
-- first step of its own transaction, instead of trusting a read made before it. A session
-- revoked (logout, refresh-token reuse, deactivation) before the movement locks it can no
-- longer move money, and the request saves the round trip of that earlier read.
--   LT006 the session is revoked, expired, gone or another user's
-- The movement functions of version 3 stay as they are; the versions below (two leading
-- parameters more) check the session and then call them.

-- Checks that the session is live and locks it until the movement commits, so a concurrent
-- revocation waits for the movement instead of passing it; records its use when the last one
-- is older than p_touch_before. A NULL session means a caller acting without one.
CREATE FUNCTION lighttech_use_session(
    p_user uuid, p_session uuid, p_now bigint, p_touch_before bigint
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    used bigint;
BEGIN
    IF p_session IS NULL THEN
        RETURN;
    END IF;
    -- FOR NO KEY UPDATE rather than FOR SHARE: the use may be recorded below, and a shared
    -- lock upgraded by two movements at once would deadlock. Movements of one session already
    -- wait for each other on the account row, so the stronger lock costs no concurrency.
    SELECT s.last_used_at INTO used FROM sessions s
    WHERE s.id = p_session AND s.user_id = p_user AND s.revoked_at IS NULL
        AND s.expires_at > p_now
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'session not live' USING ERRCODE = 'LT006';
    END IF;
    IF used < p_touch_before THEN
        UPDATE sessions SET last_used_at = p_now WHERE id = p_session;
    END IF;
END
$$;

CREATE FUNCTION lighttech_apply_change(
    p_session uuid, p_touch_before bigint,
    p_user uuid, p_kind text, p_amount bigint, p_max_balance bigint, p_now bigint,
    p_operation uuid, p_description text,
    p_key text, p_fingerprint text, p_key_expires bigint,
    OUT outcome text, OUT balance_after bigint, OUT seq bigint
)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM lighttech_use_session(p_user, p_session, p_now, p_touch_before);
    SELECT c.outcome, c.balance_after, c.seq INTO outcome, balance_after, seq
    FROM lighttech_apply_change(p_user, p_kind, p_amount, p_max_balance, p_now, p_operation,
        p_description, p_key, p_fingerprint, p_key_expires) c;
END
$$;

CREATE FUNCTION lighttech_transfer(
    p_session uuid, p_touch_before bigint,
    p_from uuid, p_to_key text, p_amount bigint, p_max_balance bigint, p_now bigint,
    p_transfer uuid, p_out uuid, p_in uuid, p_description text,
    p_key text, p_fingerprint text, p_key_expires bigint,
    OUT outcome text, OUT balance_after bigint, OUT seq bigint,
    OUT recipient_id uuid, OUT recipient_username text
)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM lighttech_use_session(p_from, p_session, p_now, p_touch_before);
    SELECT t.outcome, t.balance_after, t.seq, t.recipient_id, t.recipient_username
    INTO outcome, balance_after, seq, recipient_id, recipient_username
    FROM lighttech_transfer(p_from, p_to_key, p_amount, p_max_balance, p_now, p_transfer,
        p_out, p_in, p_description, p_key, p_fingerprint, p_key_expires) t;
END
$$;
