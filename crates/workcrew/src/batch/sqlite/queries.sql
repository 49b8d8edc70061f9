-- The SQLite store's statements, one per `-- name:` block. `{p}` is the table prefix.
-- Each step of the store runs several of these inside one `BEGIN IMMEDIATE` transaction.

-- name: job_get
SELECT source, span_start, span_end, range_size, id_kind, cursor, next_range, fence,
       ids_done, ids_failed, ranges_done, ranges_failed, rate_tat
  FROM {p}jobs WHERE name = ?1;

-- name: job_insert
INSERT INTO {p}jobs (name, source, span_start, span_end, range_size, id_kind, cursor, fence)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7,
        coalesce((SELECT fence FROM {p}fences WHERE job = ?1), 0));

-- name: fence_keep
INSERT OR REPLACE INTO {p}fences (job, fence) SELECT name, fence FROM {p}jobs WHERE name = ?1;

-- name: job_update
UPDATE {p}jobs
   SET cursor = ?2, next_range = ?3, fence = ?4, ids_done = ?5, ids_failed = ?6,
       ranges_done = ?7, ranges_failed = ?8
 WHERE name = ?1;

-- name: job_rate
UPDATE {p}jobs SET rate_tat = ?2 WHERE name = ?1;

-- name: job_delete
DELETE FROM {p}jobs WHERE name = ?1;

-- name: range_get
SELECT state, fence, len, span_start, span_end, ids
  FROM {p}ranges WHERE job = ?1 AND num = ?2;

-- name: range_delete
DELETE FROM {p}ranges WHERE job = ?1 AND num = ?2;

-- name: range_pend
UPDATE {p}ranges SET state = 0, due = ?3, owner = NULL, error = ?4 WHERE job = ?1 AND num = ?2;

-- name: range_park
UPDATE {p}ranges SET state = 3, owner = NULL, error = ?3 WHERE job = ?1 AND num = ?2;

-- name: ranges_due
SELECT num, span_start, span_end, ids, len, checkpoint, owner, attempts, at_most_once
  FROM {p}ranges WHERE job = ?1 AND state = ?2 AND due <= ?3
 ORDER BY due, num LIMIT ?4;

-- name: range_claim
UPDATE {p}ranges
   SET state = 1, owner = ?3, fence = ?4, due = ?5, attempts = attempts + 1, at_most_once = ?6
 WHERE job = ?1 AND num = ?2;

-- name: range_insert
INSERT INTO {p}ranges (job, num, state, span_start, span_end, ids, len, owner, fence, due,
                       attempts, at_most_once)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12);

-- name: ranges_status
SELECT count(*), min(due) FROM {p}ranges WHERE job = ?1 AND state IN (0, 1);

-- name: range_checkpoint
UPDATE {p}ranges SET checkpoint = max(checkpoint, ?4), due = ?5
 WHERE job = ?1 AND num = ?2 AND fence = ?3 AND state = 1;

-- name: ranges_renew
UPDATE {p}ranges SET due = ?3 WHERE job = ?1 AND owner = ?2 AND state = 1
RETURNING num, fence;

-- name: ranges_count
SELECT state, count(*), coalesce(sum(len), 0) FROM {p}ranges WHERE job = ?1 GROUP BY state;

-- name: ranges_delete
DELETE FROM {p}ranges WHERE job = ?1;

-- name: ranges_failed
SELECT num, span_start, span_end, ids, attempts, error
  FROM {p}ranges WHERE job = ?1 AND state = 3 ORDER BY num LIMIT ?2;

-- name: ranges_unpark
UPDATE {p}ranges SET state = 0, due = ?2, attempts = 0, error = NULL
 WHERE job = ?1 AND state = 3
RETURNING len;

-- name: failed_id_insert
INSERT OR REPLACE INTO {p}failed_ids (job, id, range_num, error) VALUES (?1, ?2, ?3, ?4);

-- name: failed_ids_list
SELECT id, error FROM {p}failed_ids WHERE job = ?1 ORDER BY id LIMIT ?2;

-- name: failed_ids_take
DELETE FROM {p}failed_ids WHERE job = ?1 RETURNING id;

-- name: failed_ids_delete
DELETE FROM {p}failed_ids WHERE job = ?1;
