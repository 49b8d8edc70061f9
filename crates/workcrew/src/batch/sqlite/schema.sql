-- The SQLite store's schema. `{p}` is the table prefix (default `workcrew_`).
-- Ids and cursors use SQLite's dynamic typing (columns without a type, so no conversion):
-- and SQLite orders integers before text, which is the order of `Id`.

CREATE TABLE IF NOT EXISTS {p}jobs (
    name          TEXT PRIMARY KEY,
    source        TEXT NOT NULL,               -- 'span' or 'loader'
    span_start    INTEGER,
    span_end      INTEGER,
    range_size    INTEGER,
    id_kind       TEXT NOT NULL,               -- 'int' or 'str'
    cursor,                                    -- span: next start; loader: last id handed out
    next_range    INTEGER NOT NULL DEFAULT 0,  -- the next range's number
    fence         INTEGER NOT NULL DEFAULT 0,  -- the last fencing token handed out
    ids_done      INTEGER NOT NULL DEFAULT 0,
    ids_failed    INTEGER NOT NULL DEFAULT 0,
    ranges_done   INTEGER NOT NULL DEFAULT 0,
    ranges_failed INTEGER NOT NULL DEFAULT 0,
    rate_tat      REAL                         -- the rate limit's theoretical arrival time (ms)
);

-- Open and parked ranges; done ranges are deleted (and counted in the job row).
CREATE TABLE IF NOT EXISTS {p}ranges (
    job           TEXT NOT NULL,
    num           INTEGER NOT NULL,
    state         INTEGER NOT NULL,            -- 0 pending, 1 claimed, 3 failed (parked)
    span_start    INTEGER,                     -- a span range: [span_start, span_end)
    span_end      INTEGER,
    ids           TEXT,                        -- a list range: its ids as a JSON array
    len           INTEGER NOT NULL,
    checkpoint    INTEGER NOT NULL DEFAULT 0,  -- ids already processed, from the first
    owner         TEXT,                        -- claimed: the holder; pending: the last one
    fence         INTEGER NOT NULL DEFAULT 0,
    due           INTEGER NOT NULL,            -- pending: ready at; claimed: lease expiry (ms)
    attempts      INTEGER NOT NULL DEFAULT 0,
    at_most_once  INTEGER NOT NULL DEFAULT 0,
    error         TEXT,                        -- the last attempt's error
    PRIMARY KEY (job, num)
) WITHOUT ROWID;

-- No secondary index: the table holds only open and parked ranges (a few per worker), so a scan
-- of a job's rows is cheaper than keeping an index up to date at every claim and completion.

CREATE TABLE IF NOT EXISTS {p}failed_ids (
    job           TEXT NOT NULL,
    id            NOT NULL,
    range_num     INTEGER NOT NULL,
    error         TEXT NOT NULL,
    PRIMARY KEY (job, id)
) WITHOUT ROWID;

-- The last fencing token handed out per job name, kept across `reset` (which deletes the job's
-- row): a job created again continues from it, so a process that still holds a range of the job
-- from before the reset is fenced out instead of finishing into the new run.
CREATE TABLE IF NOT EXISTS {p}fences (
    job           TEXT PRIMARY KEY,
    fence         INTEGER NOT NULL
) WITHOUT ROWID;
