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
--
-- Ids arrive encoded by the client so that byte order is id order: `i` and 16 hex digits
-- (an integer with its sign bit flipped), or `s` and the string. Scripts never do arithmetic
-- on ids (Lua numbers are doubles: exact only up to 2^53); span ranges are stored as their
-- index k in the span, and the client turns k into ids.

local JOB, RANGES, LISTS, PENDING, CLAIMED, PARKED, FAILED, ERRORS =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]

local ST_PENDING, ST_CLAIMED, ST_PARKED = 0, 1, 3

-- The job's record, or nil: one string, read and written once per script (one GET and one
-- SET cost less than a hash's fields one by one). Fields, in this order:
--   src ('span' or 'loader'), kind ('int' or 'str'),
--   start, end (a span's bounds as decimal text; false for a loader), size, nranges (how many
--   ranges the span cuts into), lastlen (ids in the last one) (false for a loader),
--   cut (span ranges cut so far), next (the next range's number), fence (the last token),
--   cursor (a loader's last id, encoded; false before the first),
--   ids_done, ids_failed, ranges_done, ids_claimed, ids_pending (counters),
--   pending_at, expiry_at: no pending range is ready, and no lease expires, before these
--     times (lower bounds, false when the set is empty: a claim skips a set that has
--     nothing due without asking Redis),
--   tat (the rate limit's theoretical arrival time, ms; false before the first request).
local JOB_FIELDS = {
  'src', 'kind', 'start', 'end_', 'size', 'nranges', 'lastlen', 'cut', 'next', 'fence',
  'cursor', 'ids_done', 'ids_failed', 'ranges_done', 'ids_claimed', 'ids_pending',
  'pending_at', 'expiry_at', 'tat',
}

-- The type each field of the job's record must have ('n' number, 's' string, 'b' boolean;
-- '?' after it: or false).
local JOB_TYPES = {
  src = 's', kind = 's', start = 's?', end_ = 's?', size = 'n?', nranges = 'n?',
  lastlen = 'n?', cut = 'n', next = 'n', fence = 'n', cursor = 's?', ids_done = 'n',
  ids_failed = 'n', ranges_done = 'n', ids_claimed = 'n', ids_pending = 'n',
  pending_at = 'n?', expiry_at = 'n?', tat = 'n?',
}

local LUA_TYPES = { n = 'number', s = 'string', b = 'boolean' }

-- Whether `v` has the type `spec` names.
local function typed(v, spec)
  if v == false and string.sub(spec, 2, 2) == '?' then
    return true
  end
  return type(v) == LUA_TYPES[string.sub(spec, 1, 1)]
end

-- Raises the store's "unreadable data" error.
local function corrupt(what)
  error({ err = 'WCCORRUPT ' .. what .. ' is unreadable (written by another program or version?)' })
end

-- Unpacks a cmsgpack string of exactly `n` values, or raises corrupt(what).
local function unpack_exactly(raw, n, what)
  local values = { pcall(cmsgpack.unpack, raw) }
  if not values[1] or #values ~= n + 1 then
    corrupt(what)
  end
  table.remove(values, 1)
  return values
end

local function load_job()
  local raw = redis.call('GET', JOB)
  if not raw then
    return nil
  end
  local values = unpack_exactly(raw, #JOB_FIELDS, 'the job record')
  local j = {}
  for x, name in ipairs(JOB_FIELDS) do
    if not typed(values[x], JOB_TYPES[name]) then
      corrupt('the job record')
    end
    j[name] = values[x]
  end
  return j
end

local function save_job(j)
  local values = {}
  for x, name in ipairs(JOB_FIELDS) do
    local v = j[name]
    if v == nil then
      v = false
    end
    values[x] = v
  end
  redis.call('SET', JOB, cmsgpack.pack(unpack(values)))
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

-- A range record, or nil. Fields: state, fence, attempts, checkpoint, amo (at-most-once
-- claim), len, owner (false when none), err (false when none), k (the span index, or false
-- for a list range).
local RANGE_TYPES = { 'n', 'n', 'n', 'n', 'b', 'n', 's?', 's?', 'n?' }

local function load_range(f)
  local raw = redis.call('HGET', RANGES, f)
  if not raw then
    return nil
  end
  local v = unpack_exactly(raw, #RANGE_TYPES, 'range ' .. f)
  for x, spec in ipairs(RANGE_TYPES) do
    if not typed(v[x], spec) then
      corrupt('range ' .. f)
    end
  end
  if v[1] ~= ST_PENDING and v[1] ~= ST_CLAIMED and v[1] ~= ST_PARKED then
    corrupt('range ' .. f)
  end
  return {
    state = v[1], fence = v[2], attempts = v[3], checkpoint = v[4], amo = v[5], len = v[6],
    owner = v[7], err = v[8], k = v[9],
  }
end

local function save_range(f, r)
  redis.call('HSET', RANGES, f, cmsgpack.pack(
    r.state, r.fence, r.attempts, r.checkpoint, r.amo, r.len, r.owner, r.err, r.k))
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
