-- Migration 1: the store's tables. `{s}` is the store's schema, quoted.
--
-- Ids keep their kind: integers in bigint columns (ordered numerically), strings in text
-- columns with COLLATE "C" (ordered by their bytes, as Rust orders a String, whatever the
-- database's locale). A range's list
-- of ids is a jsonb array of bare numbers and strings, which keeps both kinds exactly.
-- No foreign keys: a range insert would take a KEY SHARE lock on the job row, which a step
-- cutting new ranges holds FOR NO KEY UPDATE; `reset` deletes a job's rows in one statement.

-- One row per job: its source, cursor, range counter and counters of what is finished.
CREATE TABLE {s}.jobs (
    name          text PRIMARY KEY,
    source        text NOT NULL CHECK (source IN ('span', 'loader')),
    span_start    bigint,
    span_end      bigint,
    range_size    bigint,
    id_kind       text NOT NULL CHECK (id_kind IN ('int', 'str')),
    -- span: the next start; loader: the last id handed out (one of the two, or none yet)
    cursor_int    bigint,
    cursor_str    text COLLATE "C",
    next_range    bigint NOT NULL DEFAULT 0,   -- the next range's number
    ids_done      bigint NOT NULL DEFAULT 0,
    ids_failed    bigint NOT NULL DEFAULT 0,
    ranges_done   bigint NOT NULL DEFAULT 0,
    ranges_failed bigint NOT NULL DEFAULT 0,
    rate_tat      double precision             -- the rate limit's theoretical arrival time (ms)
);

-- Open and parked ranges; done ranges are deleted (and counted in the job row), so this
-- table holds only what is in flight and claims stay cheap however long the job.
CREATE TABLE {s}.ranges (
    job           text NOT NULL,
    num           bigint NOT NULL,
    state         smallint NOT NULL,           -- 0 pending, 1 claimed, 3 failed (parked)
    span_start    bigint,                      -- a span range: [span_start, span_end)
    span_end      bigint,
    ids           jsonb,                       -- a list range: its ids, in order
    len           bigint NOT NULL,
    checkpoint    bigint NOT NULL DEFAULT 0,   -- ids already processed, from the first
    owner         text,                        -- claimed: the holder
    fence         bigint NOT NULL DEFAULT 0,   -- claimed: its fencing token (> 0); else 0
    due           bigint NOT NULL,             -- pending: ready at; claimed: lease expiry (ms)
    attempts      integer NOT NULL DEFAULT 0,
    at_most_once  boolean NOT NULL DEFAULT false,
    error         text,                        -- the last attempt's error
    PRIMARY KEY (job, num)
);

-- Claims (pending, then expired, oldest first), the open count and renewals all walk this.
CREATE INDEX ranges_due ON {s}.ranges (job, state, due, num);

-- Ids a handler reported failed, with their errors, until retry_failed takes them.
CREATE TABLE {s}.failed_ids (
    job           text NOT NULL,
    is_str        boolean NOT NULL,
    id_int        bigint NOT NULL,             -- 0 for a string id
    id_str        text COLLATE "C" NOT NULL,   -- '' for an integer id
    range_num     bigint NOT NULL,
    error         text NOT NULL,
    PRIMARY KEY (job, is_str, id_int, id_str)
);

-- Fencing tokens: one sequence for every job of the schema, so a token is larger than every
-- token handed out before (also across a reset), and taking one locks nothing.
CREATE SEQUENCE {s}.fences AS bigint;
