-- LightTech schema, version 9: transfers into one recipient, applied together.
--
-- Every transfer locks its recipient's account row until it commits. When many senders pay one
-- account, each transfer waits for the one before to commit: that row's lock, held through a
-- commit, was the whole server's limit. The store now queues transfers per recipient while one
-- is in flight and hands the queue to this function: one statement, one transaction and one
-- commit for the lot. Each transfer is still the function of migration 6, run in a block of its
-- own (a subtransaction), so a refused one leaves no trace and the others go on; each sees the
-- balances the ones before it left. Nothing a client can observe changes.
--
-- Lock order (migration 6): the recipient's user row, then the sessions, then the keys, then
-- account rows in user-id order. Here the sessions and the account rows of the whole batch are
-- taken first, each set in id order, so a batch never holds one account while waiting for a
-- lower one, and two batches into one recipient (the store sends the next before the last has
-- committed, or two server processes send theirs) queue instead of deadlocking. The keys
-- are claimed after the accounts are held; a key raced by a request of another process may then
-- meet a deadlock, which that transfer alone reports (40P01) and the store retries on its own.
CREATE FUNCTION lighttech_transfer_batch(
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
BEGIN
    SELECT u.id INTO recipient FROM users u WHERE u.username_key = p_to_key FOR SHARE;
    PERFORM 1 FROM sessions s WHERE s.id = ANY (p_session) ORDER BY s.id FOR NO KEY UPDATE;
    PERFORM 1 FROM accounts a WHERE a.user_id = ANY (array_append(p_from, recipient))
    ORDER BY a.user_id FOR UPDATE;
    FOR i IN 1 .. cardinality(p_from) LOOP
        BEGIN
            SELECT t.outcome, t.balance_after, t.seq, t.recipient_id, t.recipient_username
            INTO outcome, balance_after, seq, recipient_id, recipient_username
            FROM lighttech_transfer(p_session[i], p_touch_before[i], p_from[i], p_to_key,
                p_amount[i], p_max_balance, p_now[i], p_transfer[i], p_out[i], p_in[i],
                p_description[i], p_key[i], p_fingerprint[i], p_key_expires[i]) t;
            error_code := NULL;
            error_message := NULL;
            error_detail := NULL;
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
END
$$;
