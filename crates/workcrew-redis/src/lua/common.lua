#!lua
-- (The shebang makes this a script with flags, Redis 7 and later: the server refuses to
-- start it when over `maxmemory` rather than failing a write halfway through it, and only
-- keys given in KEYS may be used.)
--
-- Shared by every script of the Redis batch store: prepended to each one (Redis scripts
-- cannot include each other). It names the job's keys and reads and writes range records.
--
-- Keys of one job, all under the hash tag {prefix:job} so a cluster keeps them on one slot:
--   KEYS[1] job      string: the job's record (cmsgpack, see `load_job`)
--   KEYS[2] ranges   hash: range field -> record (cmsgpack, see `load_range`)
--   KEYS[3] lists    hash: range field -> the ids of a list range (cmsgpack array of ids)
--   KEYS[4] pending  zset: range field, score = ready at (ms)
--   KEYS[5] claimed  zset: range field, score = lease expiry (ms)
--   KEYS[6] parked   zset: range field, score = range number
--   KEYS[7] failed   zset: failed id, score 0 (ordered by the id's bytes)
--   KEYS[8] errors   hash: failed id -> its error
--   KEYS[9] floor    string: the last fencing token of the job before its reset (kept by a
--                    reset, so the job made again hands out larger ones)
--
-- Ids arrive encoded by the client so that byte order is id order: `i` and 16 hex digits
-- (an integer with its sign bit flipped), or `s` and the string. Scripts never do arithmetic
-- on ids (Lua numbers are doubles: exact only up to 2^53); span ranges are stored as their
-- index k in the span, and the client turns k into ids.

local JOB, RANGES, LISTS, PENDING, CLAIMED, PARKED, FAILED, ERRORS, FLOOR =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]

local ST_PENDING, ST_CLAIMED, ST_PARKED = 0, 1, 3

-- Raises the store's "unreadable data" error.
local function corrupt(what)
  error({ err = 'WCCORRUPT ' .. what .. ' is unreadable (written by another program or version?)' })
end

-- Records are cmsgpack strings: a tag naming the kind of record and its layout (so data
-- written by anything else is not taken for one), then its fields' values in the order of
-- its schema (names; a false value stands for none).
local function decode(raw, tag, schema, what)
  local v = { pcall(cmsgpack.unpack, raw) }
  if not v[1] or v[2] ~= tag or #v ~= #schema + 2 then
    corrupt(what)
  end
  local record = {}
  for x = 1, #schema do
    record[schema[x]] = v[x + 2]
  end
  return record
end

local function encode(record, tag, schema)
  local v = { tag }
  for x = 1, #schema do
    local value = record[schema[x]]
    if value == nil then
      value = false
    end
    v[x + 1] = value
  end
  return cmsgpack.pack(unpack(v))
end

-- The job's record: one string, read and written once per script (one GET and one SET cost
-- less than a hash's fields one by one).
local JOB_TAG = 'wcjob1'
local JOB_SCHEMA = {
  'src',          -- 'span' or 'loader'
  'kind',         -- 'int' or 'str'
  'start',        -- a span's bounds, decimal text (exact: not a double)
  'end_',
  'size',         -- ids per range of a span
  'nranges',      -- how many ranges the span cuts into
  'lastlen',      -- ids in its last range
  'cut',          -- span ranges cut so far
  'next',         -- the next range's number
  'fence',        -- the last fencing token handed out
  'cursor',       -- a loader's last id, encoded
  'ids_done', 'ids_failed', 'ranges_done', 'ids_claimed', 'ids_pending',
  -- No pending range is ready, and no lease expires, before these times (lower bounds;
  -- false when the set is empty): a claim skips a set with nothing due without asking Redis.
  'pending_at', 'expiry_at',
  'tat',          -- the rate limit's theoretical arrival time (ms)
}

-- The job's record, or nil.
local function load_job()
  local raw = redis.call('GET', JOB)
  if not raw then
    return nil
  end
  return decode(raw, JOB_TAG, JOB_SCHEMA, 'the job record')
end

local function save_job(j)
  redis.call('SET', JOB, encode(j, JOB_TAG, JOB_SCHEMA))
end

-- Lowers a set's "nothing due before" bound to `at`.
local function due_by(bound, at)
  if not bound or at < bound then
    return at
  end
  return bound
end

-- A range's field in `ranges`, `lists` and the sorted sets: its number, zero-padded, so
-- that byte order is number order (ties of a score are ordered by member).
local function field(num)
  return string.format('%016d', num)
end

-- A range's record.
local RANGE_TAG = 'wcrange1'
local RANGE_SCHEMA = {
  'state',        -- ST_PENDING, ST_CLAIMED or ST_PARKED
  'fence',        -- the token of its last claim
  'attempts',
  'checkpoint',   -- ids already processed, from its first
  'amo',          -- claimed at-most-once
  'len',          -- how many ids
  'owner',        -- the holder while claimed
  'err',          -- the last attempt's error
  'k',            -- a span range's index in the span; false: a list
}

-- The record of range `f`, or nil.
local function load_range(f)
  local raw = redis.call('HGET', RANGES, f)
  if not raw then
    return nil
  end
  return decode(raw, RANGE_TAG, RANGE_SCHEMA, 'range ' .. f)
end

local function save_range(f, r)
  redis.call('HSET', RANGES, f, encode(r, RANGE_TAG, RANGE_SCHEMA))
end

-- The ids of a list range, as an array of encoded ids.
local function list_ids(f)
  local raw = redis.call('HGET', LISTS, f)
  if not raw then
    corrupt('list range ' .. f .. ' (no ids)')
  end
  local ok, ids = pcall(cmsgpack.unpack, raw)
  if not ok or type(ids) ~= 'table' then
    corrupt('the ids of range ' .. f)
  end
  return ids
end

-- Numbers go into Redis as exact integers (tostring would round to 14 digits).
local function int(n)
  return string.format('%d', n)
end

local function no_job()
  return redis.error_reply('WCNOJOB no such job')
end
