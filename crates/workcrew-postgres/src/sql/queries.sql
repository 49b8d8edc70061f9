-- The store's statements, one per `-- name:` block, each prepared once per connection.
-- `{s}` is the store's schema, quoted. Every statement is one round trip and atomic on its
-- own (the ones that change several rows call the functions in 001_functions.sql).

-- name: now
-- The server's clock, in milliseconds since the Unix epoch.
SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;

-- name: open
SELECT {s}.workcrew_open($1, $2, $3, $4, $5, $6);

-- name: step
SELECT {s}.workcrew_step($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12);

-- name: append
SELECT {s}.workcrew_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12);

-- name: checkpoint
-- Only a claimed range holds a fencing token (> 0): the primary key finds it.
UPDATE {s}.ranges SET checkpoint = greatest(checkpoint, $4), due = $5
 WHERE job = $1 AND num = $2 AND fence = $3 AND $3 > 0;

-- name: renew
-- Locks the owner's claimed ranges in range order (as a step finishing several does), then
-- extends them; a range another claimer took meanwhile no longer matches and is left out.
UPDATE {s}.ranges SET due = $3
 WHERE job = $1 AND state = 1 AND owner = $2
   AND num IN (SELECT num FROM {s}.ranges
                WHERE job = $1 AND state = 1 AND owner = $2
                ORDER BY num FOR UPDATE)
RETURNING num, fence;

-- name: progress
-- One statement: the counters and the open ranges are read in one snapshot.
SELECT j.source, j.span_start, j.span_end, j.cursor_int,
       j.ids_done, j.ids_failed, j.ranges_done, j.ranges_failed,
       c.pending, c.pending_ids, c.claimed, c.claimed_ids
  FROM {s}.jobs j
 CROSS JOIN LATERAL (
       SELECT count(*) FILTER (WHERE state = 0) AS pending,
              coalesce(sum(len) FILTER (WHERE state = 0), 0)::bigint AS pending_ids,
              count(*) FILTER (WHERE state = 1) AS claimed,
              coalesce(sum(len) FILTER (WHERE state = 1), 0)::bigint AS claimed_ids
         FROM {s}.ranges r WHERE r.job = j.name) c
 WHERE j.name = $1;

-- name: reset
WITH ranges AS (DELETE FROM {s}.ranges WHERE job = $1),
     failed AS (DELETE FROM {s}.failed_ids WHERE job = $1)
DELETE FROM {s}.jobs WHERE name = $1;

-- name: retry_failed
SELECT {s}.workcrew_retry_failed($1, $2, $3);

-- name: failed_ranges
SELECT num, span_start, span_end, ids::text, attempts, error
  FROM {s}.ranges WHERE job = $1 AND state = 3 ORDER BY num LIMIT $2;

-- name: failed_ids
SELECT is_str, id_int, id_str, error
  FROM {s}.failed_ids WHERE job = $1 ORDER BY is_str, id_int, id_str LIMIT $2;

-- name: acquire
SELECT {s}.workcrew_acquire($1, $2, $3, $4);
