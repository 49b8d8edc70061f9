-- Migration 1: the store's operations that change several rows, one PL/pgSQL function
-- each. A call is one statement: atomic without a client transaction, one round trip.
-- `{s}` is the store's schema, quoted; every name is qualified with it, so the caller's
-- search_path does not matter.
--
-- Locks, in the order a step takes them (so two steps never wait on each other in a cycle):
--   1. the rows of the ranges it finishes (in range order, when there are several);
--   2. pending and expired ranges, FOR UPDATE SKIP LOCKED: a claim never waits, and two
--      claimers never get the same range;
--   3. the job row, FOR NO KEY UPDATE, only to cut new ranges at the cursor or to add to
--      the counters; nothing is waited for after it.
-- Errors raised here: SQLSTATE WC404 when the job does not exist.
-- Table aliases never reuse a variable's name (PL/pgSQL would read it as the variable).

-- Creates the job unless it exists; returns the job as stored (the caller compares sources).
CREATE FUNCTION {s}.workcrew_open(
    p_name text, p_source text, p_start bigint, p_end bigint, p_size bigint, p_kind text)
RETURNS text LANGUAGE plpgsql AS $fn$
DECLARE
    j record;
    v_created boolean;
BEGIN
    INSERT INTO {s}.jobs (name, source, span_start, span_end, range_size, id_kind, cursor_int)
    VALUES (p_name, p_source, p_start, p_end, p_size, p_kind,
            CASE WHEN p_source = 'span' THEN p_start END)
    ON CONFLICT (name) DO NOTHING;
    v_created := FOUND;
    -- A new statement, so a row another transaction just committed is seen.
    SELECT * INTO STRICT j FROM {s}.jobs WHERE name = p_name;
    RETURN json_build_object(
        'created', v_created, 'source', j.source, 'start', j.span_start, 'end', j.span_end,
        'size', j.range_size, 'kind', j.id_kind,
        'cursor_int', j.cursor_int, 'cursor_str', j.cursor_str)::text;
END
$fn$;

-- One step of a worker: finish ranges, then claim up to p_claim (pending ones whose time
-- has come, then expired leases, then new ranges cut at the cursor).
--
-- The finishes come as parallel arrays, entry i being range p_ranges[i] claimed with
-- p_fences[i], ended as p_kinds[i]: 'done' (p_failed[i]: NULL, or a JSON array of
-- {"id", "error"}), 'retry' (pending again from p_retry_at[i]), 'park' (failed for good)
-- or 'release' (pending at once); p_errors[i] is the attempt's error.
-- Returns {"finished": [bool], "claimed": [lease], "status": null | {...}}; a lease is
-- {"range", "fence", "start", "end", "ids", "checkpoint", "attempt", "origin",
-- "previous_owner"}.
CREATE FUNCTION {s}.workcrew_step(
    p_job text, p_owner text, p_now bigint, p_expires bigint,
    p_ranges bigint[], p_fences bigint[], p_kinds text[], p_errors text[],
    p_retry_at bigint[], p_failed text[], p_claim integer, p_amo boolean)
RETURNS text LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
    j record;
    i integer;
    v_count integer := coalesce(array_length(p_ranges, 1), 0);
    v_ok boolean;
    v_len bigint;
    v_nfailed bigint;
    v_parked integer;
    v_state smallint;
    v_fence bigint;
    v_cursor bigint;
    v_hi bigint;
    v_num bigint;
    v_open bigint;
    v_next bigint;
    v_verdicts jsonb := '[]';
    v_claimed jsonb := '[]';
    v_status jsonb;
    v_n integer := 0;
    v_have_job boolean := false;
    v_cut boolean := false;
    d_ids_done bigint := 0;
    d_ids_failed bigint := 0;
    d_ranges_done bigint := 0;
    d_ranges_failed bigint := 0;
BEGIN
    IF v_count > 1 THEN
        -- Lock the finished ranges in range order, so two steps finishing the same
        -- ranges (one of them with stale tokens) cannot wait on each other.
        PERFORM 1 FROM {s}.ranges
          WHERE job = p_job AND num = ANY (p_ranges)
          ORDER BY num FOR UPDATE;
    END IF;

    FOR i IN 1 .. v_count LOOP
        IF coalesce(p_fences[i], 0) <= 0 THEN
            -- Token 0 is never handed out: pending and parked ranges hold it.
            v_verdicts := v_verdicts || to_jsonb(false);
            CONTINUE;
        END IF;
        -- Every outcome applies only while the range is claimed with this fencing token: a
        -- range holds a token (> 0) only while claimed, so (job, num, fence) finds it by
        -- its primary key (with `state` in the condition the planner may walk the claims
        -- index instead, dead entries of done ranges included).
        CASE p_kinds[i]
        WHEN 'done' THEN
            DELETE FROM {s}.ranges
             WHERE job = p_job AND num = p_ranges[i] AND fence = p_fences[i]
            RETURNING len INTO v_len;
            v_ok := FOUND;
            IF v_ok THEN
                v_nfailed := 0;
                IF p_failed[i] IS NOT NULL THEN
                    -- The last report of an id wins, as a row replaced in turn would.
                    INSERT INTO {s}.failed_ids AS fi (job, is_str, id_int, id_str, range_num, error)
                    SELECT DISTINCT ON (is_str, id_int, id_str)
                           p_job, is_str, id_int, id_str, p_ranges[i], error
                      FROM (SELECT jsonb_typeof(x.value->'id') = 'string' AS is_str,
                                   CASE WHEN jsonb_typeof(x.value->'id') = 'string'
                                        THEN 0 ELSE (x.value->>'id')::bigint END AS id_int,
                                   CASE WHEN jsonb_typeof(x.value->'id') = 'string'
                                        THEN x.value->>'id' ELSE '' END AS id_str,
                                   x.value->>'error' AS error,
                                   x.ordinality AS pos
                              FROM jsonb_array_elements(p_failed[i]::jsonb)
                                   WITH ORDINALITY AS x) ids
                     ORDER BY is_str, id_int, id_str, pos DESC
                    ON CONFLICT (job, is_str, id_int, id_str)
                    DO UPDATE SET range_num = excluded.range_num, error = excluded.error;
                    v_nfailed := least(jsonb_array_length(p_failed[i]::jsonb), v_len);
                END IF;
                d_ids_done := d_ids_done + v_len - v_nfailed;
                d_ids_failed := d_ids_failed + v_nfailed;
                d_ranges_done := d_ranges_done + 1;
            END IF;
        WHEN 'retry' THEN
            UPDATE {s}.ranges
               SET state = 0, fence = 0, due = p_retry_at[i], owner = NULL, error = p_errors[i]
             WHERE job = p_job AND num = p_ranges[i] AND fence = p_fences[i];
            v_ok := FOUND;
        WHEN 'park' THEN
            UPDATE {s}.ranges
               SET state = 3, fence = 0, owner = NULL, error = p_errors[i]
             WHERE job = p_job AND num = p_ranges[i] AND fence = p_fences[i]
            RETURNING len INTO v_len;
            v_ok := FOUND;
            IF v_ok THEN
                d_ranges_failed := d_ranges_failed + 1;
                d_ids_failed := d_ids_failed + v_len;
            END IF;
        WHEN 'release' THEN
            UPDATE {s}.ranges
               SET state = 0, fence = 0, due = p_now, owner = NULL, error = NULL
             WHERE job = p_job AND num = p_ranges[i] AND fence = p_fences[i];
            v_ok := FOUND;
        END CASE;
        v_verdicts := v_verdicts || to_jsonb(v_ok);
    END LOOP;

    -- Pending ranges whose time has come (state 0), then expired leases (state 1),
    -- oldest first; ranges another claimer holds are skipped, never waited for. Under
    -- at-most-once an expired range is parked instead, never run again; then look again.
    -- One query per state, each bounded on (job, state, due) in the index: done ranges
    -- are deleted, and a scan over `state <= 1` would walk their dead entries too.
    FOREACH v_state IN ARRAY ARRAY[0, 1]::smallint[] LOOP
        LOOP
            EXIT WHEN v_n >= p_claim;
            v_parked := 0;
            FOR r IN SELECT num, span_start, span_end, ids, len, checkpoint, attempts, owner,
                            at_most_once
                       FROM {s}.ranges
                      WHERE job = p_job AND state = v_state AND due <= p_now
                      ORDER BY due, num
                      LIMIT p_claim - v_n
                        FOR UPDATE SKIP LOCKED LOOP
                IF v_state = 1 AND r.at_most_once THEN
                    UPDATE {s}.ranges
                       SET state = 3, fence = 0, owner = NULL,
                           error = 'lease of ' || coalesce(r.owner, '?')
                                   || ' expired; at-most-once: not run again'
                     WHERE job = p_job AND num = r.num;
                    d_ranges_failed := d_ranges_failed + 1;
                    d_ids_failed := d_ids_failed + r.len;
                    v_parked := v_parked + 1;
                    CONTINUE;
                END IF;
                v_fence := nextval('{s}.fences');
                UPDATE {s}.ranges
                   SET state = 1, owner = p_owner, fence = v_fence, due = p_expires,
                       attempts = attempts + 1, at_most_once = p_amo
                 WHERE job = p_job AND num = r.num;
                v_claimed := v_claimed || jsonb_build_object(
                    'range', r.num, 'fence', v_fence,
                    'start', r.span_start, 'end', r.span_end, 'ids', r.ids,
                    'checkpoint', r.checkpoint, 'attempt', r.attempts + 1,
                    'origin', CASE WHEN v_state = 0 THEN 'pending' ELSE 'expired' END,
                    'previous_owner', r.owner);
                v_n := v_n + 1;
            END LOOP;
            EXIT WHEN v_parked = 0;
        END LOOP;
    END LOOP;

    -- New ranges at the cursor: the job row's lock makes cutting and advancing atomic.
    IF v_n < p_claim THEN
        SELECT source, span_end, range_size, cursor_int, next_range INTO j
          FROM {s}.jobs WHERE name = p_job FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no job %', p_job USING ERRCODE = 'WC404';
        END IF;
        v_have_job := true;
        IF j.source = 'span' THEN
            v_cursor := coalesce(j.cursor_int, j.span_end);
            v_num := j.next_range;
            WHILE v_n < p_claim AND v_cursor < j.span_end LOOP
                -- numeric: a cursor near the end of bigint must not overflow.
                v_hi := least(v_cursor::numeric + j.range_size, j.span_end)::bigint;
                v_fence := nextval('{s}.fences');
                INSERT INTO {s}.ranges (job, num, state, span_start, span_end, len, owner,
                                        fence, due, attempts, at_most_once)
                VALUES (p_job, v_num, 1, v_cursor, v_hi, v_hi - v_cursor, p_owner,
                        v_fence, p_expires, 1, p_amo);
                v_claimed := v_claimed || jsonb_build_object(
                    'range', v_num, 'fence', v_fence, 'start', v_cursor, 'end', v_hi,
                    'checkpoint', 0, 'attempt', 1, 'origin', 'new');
                v_num := v_num + 1;
                v_n := v_n + 1;
                v_cursor := v_hi;
                v_cut := true;
            END LOOP;
        END IF;
    END IF;

    IF v_cut OR d_ids_done <> 0 OR d_ids_failed <> 0 OR d_ranges_done <> 0
       OR d_ranges_failed <> 0 THEN
        UPDATE {s}.jobs
           SET ids_done = ids_done + d_ids_done,
               ids_failed = ids_failed + d_ids_failed,
               ranges_done = ranges_done + d_ranges_done,
               ranges_failed = ranges_failed + d_ranges_failed,
               cursor_int = CASE WHEN v_cut THEN v_cursor ELSE cursor_int END,
               next_range = CASE WHEN v_cut THEN v_num ELSE next_range END
         WHERE name = p_job;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no job %', p_job USING ERRCODE = 'WC404';
        END IF;
    END IF;

    -- The job's state, only when fewer ranges than asked were claimed.
    IF v_n < p_claim OR p_claim = 0 THEN
        IF NOT v_have_job THEN
            SELECT source, span_end, range_size, cursor_int, next_range INTO j
              FROM {s}.jobs WHERE name = p_job;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'no job %', p_job USING ERRCODE = 'WC404';
            END IF;
        END IF;
        IF v_cut THEN
            j.cursor_int := v_cursor;
        END IF;
        SELECT count(*), min(due) INTO v_open, v_next
          FROM {s}.ranges WHERE job = p_job AND state IN (0, 1);
        v_status := jsonb_build_object(
            'exhausted', j.source = 'span' AND coalesce(j.cursor_int, j.span_end) >= j.span_end,
            'open', v_open,
            'next_ready', v_next);
    END IF;

    RETURN jsonb_build_object(
        'finished', v_verdicts, 'claimed', v_claimed, 'status', v_status)::text;
END
$fn$;

-- Adds a range of loaded ids after the cursor and claims it, if the cursor is still where
-- the ids were loaded after (p_after_*: all NULL for the start).
-- Returns {"range", "fence"}, or {"moved": true, "cursor_int", "cursor_str"}, or
-- {"not_after": true} when the first id is not after the cursor, or {"empty": true}.
CREATE FUNCTION {s}.workcrew_append(
    p_job text, p_owner text, p_expires bigint,
    p_after_int bigint, p_after_str text,
    p_first_is_str boolean, p_first_int bigint, p_first_str text,
    p_last_int bigint, p_last_str text,
    p_ids text, p_amo boolean)
RETURNS text LANGUAGE plpgsql AS $fn$
DECLARE
    j record;
    v_fence bigint;
    v_ids jsonb;
BEGIN
    SELECT cursor_int, cursor_str, next_range INTO j
      FROM {s}.jobs WHERE name = p_job FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no job %', p_job USING ERRCODE = 'WC404';
    END IF;
    IF j.cursor_int IS DISTINCT FROM p_after_int OR j.cursor_str IS DISTINCT FROM p_after_str THEN
        RETURN json_build_object(
            'moved', true, 'cursor_int', j.cursor_int, 'cursor_str', j.cursor_str)::text;
    END IF;
    IF p_first_is_str IS NULL THEN
        RETURN '{"empty": true}';
    END IF;
    -- Ids order integers before strings, integers numerically, strings by bytes.
    IF (j.cursor_int IS NOT NULL
            AND NOT (p_first_is_str OR p_first_int > j.cursor_int))
       OR (j.cursor_str IS NOT NULL
            AND NOT (p_first_is_str AND p_first_str > j.cursor_str COLLATE "C")) THEN
        RETURN '{"not_after": true}';
    END IF;
    v_ids := p_ids::jsonb;
    v_fence := nextval('{s}.fences');
    INSERT INTO {s}.ranges (job, num, state, ids, len, owner, fence, due, attempts, at_most_once)
    VALUES (p_job, j.next_range, 1, v_ids, jsonb_array_length(v_ids), p_owner, v_fence,
            p_expires, 1, p_amo);
    UPDATE {s}.jobs
       SET cursor_int = p_last_int, cursor_str = p_last_str, next_range = next_range + 1
     WHERE name = p_job;
    RETURN json_build_object('range', j.next_range, 'fence', v_fence)::text;
END
$fn$;

-- Puts parked ranges back (attempts from zero) and makes new pending ranges of the failed
-- ids, at most p_chunk ids each, in id order. Returns {"ranges", "ids"}.
CREATE FUNCTION {s}.workcrew_retry_failed(p_job text, p_now bigint, p_chunk bigint)
RETURNS text LANGUAGE plpgsql AS $fn$
DECLARE
    v_next bigint;
    v_ranges bigint;
    v_range_ids bigint;
    v_parts bigint;
    v_ids bigint;
BEGIN
    SELECT next_range INTO v_next FROM {s}.jobs WHERE name = p_job FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no job %', p_job USING ERRCODE = 'WC404';
    END IF;
    WITH unparked AS (
        UPDATE {s}.ranges SET state = 0, due = p_now, attempts = 0, error = NULL
         WHERE job = p_job AND state = 3
        RETURNING len)
    SELECT count(*), coalesce(sum(len), 0) INTO v_ranges, v_range_ids FROM unparked;
    WITH taken AS (
        DELETE FROM {s}.failed_ids WHERE job = p_job
        RETURNING is_str, id_int, id_str),
    numbered AS (
        SELECT is_str, id_int, id_str,
               (row_number() OVER (ORDER BY is_str, id_int, id_str) - 1) / p_chunk AS part
          FROM taken),
    parts AS (
        SELECT part,
               jsonb_agg(CASE WHEN is_str THEN to_jsonb(id_str) ELSE to_jsonb(id_int) END
                         ORDER BY is_str, id_int, id_str) AS ids,
               count(*) AS len
          FROM numbered GROUP BY part),
    inserted AS (
        INSERT INTO {s}.ranges (job, num, state, ids, len, due)
        SELECT p_job, v_next + part, 0, ids, len, p_now FROM parts
        RETURNING len)
    SELECT count(*), coalesce(sum(len), 0) INTO v_parts, v_ids FROM inserted;
    UPDATE {s}.jobs
       SET next_range = next_range + v_parts,
           ranges_failed = greatest(ranges_failed - v_ranges, 0),
           ids_failed = greatest(ids_failed - v_range_ids - v_ids, 0)
     WHERE name = p_job;
    RETURN json_build_object('ranges', v_ranges, 'ids', v_ids)::text;
END
$fn$;

-- The job-wide rate limit, a GCRA (the reference is workcrew's `Rate::gcra`): p_cost and
-- p_tolerance are the request's and the burst's milliseconds of budget. Returns 0 when
-- granted (and counted), else how many milliseconds to wait.
CREATE FUNCTION {s}.workcrew_acquire(
    p_job text, p_now bigint, p_cost double precision, p_tolerance double precision)
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    v_tat double precision;
    v_new double precision;
BEGIN
    SELECT rate_tat INTO v_tat FROM {s}.jobs WHERE name = p_job FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no job %', p_job USING ERRCODE = 'WC404';
    END IF;
    v_new := greatest(coalesce(v_tat, p_now::double precision), p_now::double precision) + p_cost;
    IF v_new - p_now::double precision <= p_tolerance THEN
        UPDATE {s}.jobs SET rate_tat = v_new WHERE name = p_job;
        RETURN 0;
    END IF;
    RETURN greatest(ceil(v_new - p_tolerance - p_now::double precision), 1)::bigint;
END
$fn$;
