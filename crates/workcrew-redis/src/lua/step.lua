-- One step of a worker (Store::step): finish ranges, then claim some, atomically.
--
-- ARGV: owner, now, lease_ms, claim (how many), amo ('1': claim at-most-once), n (finishes),
-- then n finishes, each: range number, fence, and an outcome:
--   'D' m  id1 err1 .. idm errm   done, with m failed ids
--   'F' error retry_at            failed: pending again at retry_at, or parked when ''
--   'R'                           released: pending again now
--
-- Reply: { finished, leases, status, span }
--   finished: 1 (accepted) or 0 (stale fence) per finish
--   leases:   { number, fence, k | false, ids | false, checkpoint, attempt, expires,
--               origin ('n' new, 'p' pending, 'e' expired), previous owner | false }
--   status:   { exhausted (1/0), open ranges, next ready | false } when fewer ranges than
--             asked were claimed, else false
--   span:     { start, size, end } of a span job, else false
--
-- The hot path (finish one range, cut the next) is GET, HGET, ZREM, HDEL, HSET, ZADD, SET:
-- the job's `pending_at` and `expiry_at` bounds skip the sorted sets while nothing is due.

local owner, now, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local want, amo, n = tonumber(ARGV[4]), ARGV[5] == '1', tonumber(ARGV[6])

local j = load_job()
if not j then
  return no_job()
end
local span = j.src == 'span'

-- Finish.
local finished = {}
local i = 7
for x = 1, n do
  local f, token, what = field(tonumber(ARGV[i])), tonumber(ARGV[i + 1]), ARGV[i + 2]
  i = i + 3
  local failed_at, failed_n, error_text, retry_at
  if what == 'D' then
    failed_n = tonumber(ARGV[i])
    failed_at = i + 1
    i = i + 1 + 2 * failed_n
  elseif what == 'F' then
    error_text, retry_at = ARGV[i], ARGV[i + 1]
    i = i + 2
  end
  local r = load_range(f)
  if r and r.state == ST_CLAIMED and r.fence == token then
    finished[x] = 1
    redis.call('ZREM', CLAIMED, f)
    j.ids_claimed = j.ids_claimed - r.len
    if what == 'D' then
      redis.call('HDEL', RANGES, f)
      if not r.k then
        redis.call('HDEL', LISTS, f)
      end
      for y = 0, failed_n - 1 do
        local id = ARGV[failed_at + 2 * y]
        redis.call('ZADD', FAILED, 0, id)
        redis.call('HSET', ERRORS, id, ARGV[failed_at + 2 * y + 1])
      end
      local failed = math.min(failed_n, r.len)
      j.ids_done = j.ids_done + r.len - failed
      j.ids_failed = j.ids_failed + failed
      j.ranges_done = j.ranges_done + 1
    elseif what == 'F' and retry_at == '' then
      r.state, r.owner, r.err = ST_PARKED, false, error_text
      save_range(f, r)
      redis.call('ZADD', PARKED, int(tonumber(f)), f)
      j.ids_failed = j.ids_failed + r.len
    else
      -- Failed with a retry time, or released (pending at once, no error).
      local at = now
      if what == 'F' then
        at = tonumber(retry_at)
        r.err = error_text
      else
        r.err = false
      end
      r.state, r.owner = ST_PENDING, false
      save_range(f, r)
      redis.call('ZADD', PENDING, int(at), f)
      j.ids_pending = j.ids_pending + r.len
      j.pending_at = due_by(j.pending_at, at)
    end
  else
    finished[x] = 0
  end
end

-- Claim: pending ranges that are ready, then expired leases, then new ranges of the span.
local expires = now + lease
local leases = {}
local taken = {}

local function lease_of(f, r, origin, previous)
  local ids = false
  if not r.k then
    ids = list_ids(f)
  end
  return { tonumber(f), r.fence, r.k, ids, r.checkpoint, r.attempts, expires, origin, previous }
end

-- Claims the due range `f` of `zset` (or parks it: an expired at-most-once claim); returns
-- whether it was parked.
local function claim_one(zset, f)
  local r = load_range(f)
  if not r then
    error({ err = 'WCCORRUPT range ' .. f .. ' is listed but has no record' })
  end
  if zset == CLAIMED and r.amo then
    -- At-most-once: a range whose holder vanished is never run again.
    r.err = 'lease of ' .. tostring(r.owner) .. ' expired; at-most-once: not run again'
    r.state, r.owner = ST_PARKED, false
    save_range(f, r)
    redis.call('ZREM', CLAIMED, f)
    redis.call('ZADD', PARKED, int(tonumber(f)), f)
    j.ids_claimed = j.ids_claimed - r.len
    j.ids_failed = j.ids_failed + r.len
    return true
  end
  local origin, previous = 'p', false
  if zset == CLAIMED then
    origin, previous = 'e', r.owner
  else
    redis.call('ZREM', PENDING, f)
    j.ids_pending = j.ids_pending - r.len
    j.ids_claimed = j.ids_claimed + r.len
  end
  j.fence = j.fence + 1
  r.state, r.owner, r.fence, r.attempts, r.amo = ST_CLAIMED, owner, j.fence, r.attempts + 1, amo
  save_range(f, r)
  redis.call('ZADD', CLAIMED, int(expires), f)
  j.expiry_at = due_by(j.expiry_at, expires)
  taken[f] = true
  leases[#leases + 1] = lease_of(f, r, origin, previous)
  return false
end

-- Claims due ranges of `zset`, lowest score first, until `want` are claimed, and moves the
-- set's bound (`bound` names it in the job) up to its first range not due.
local function claim_due(zset, bound)
  while #leases < want and j[bound] and j[bound] <= now do
    local ask = want - #leases
    -- One more than asked: the first range not claimed now gives the new bound.
    local got = redis.call('ZRANGE', zset, 0, ask, 'WITHSCORES')
    local next_due = false
    local parked = 0
    for x = 1, #got / 2 do
      local f, at = got[2 * x - 1], tonumber(got[2 * x])
      if at > now or x > ask then
        next_due = at
        break
      end
      -- A range claimed in this step is due again only with a lease of 0: not twice.
      if not taken[f] and claim_one(zset, f) then
        parked = parked + 1
      end
    end
    -- Ranges this step claimed went back into the claimed set at `expires`.
    if zset == CLAIMED and next(taken) then
      next_due = due_by(next_due, expires)
    end
    j[bound] = next_due
    -- Parked ranges left the set: look again if more may be due. Each look parks a range
    -- or ends the loop, so it ends.
    if parked == 0 then
      break
    end
  end
end

if want > 0 then
  claim_due(PENDING, 'pending_at')
  claim_due(CLAIMED, 'expiry_at')
  local cut_any = false
  while span and #leases < want and j.cut < j.nranges do
    local len = j.size
    if j.cut == j.nranges - 1 then
      len = j.lastlen
    end
    j.fence = j.fence + 1
    local f = field(j.next)
    local r = {
      state = ST_CLAIMED, fence = j.fence, attempts = 1, checkpoint = 0, amo = amo, len = len,
      owner = owner, err = false, k = j.cut,
    }
    save_range(f, r)
    redis.call('ZADD', CLAIMED, int(expires), f)
    j.ids_claimed = j.ids_claimed + len
    leases[#leases + 1] = lease_of(f, r, 'n', false)
    j.cut = j.cut + 1
    j.next = j.next + 1
    cut_any = true
  end
  if cut_any then
    j.expiry_at = due_by(j.expiry_at, expires)
  end
end

local status = false
if #leases < want or want == 0 then
  local open = redis.call('ZCARD', PENDING) + redis.call('ZCARD', CLAIMED)
  -- The sets' first scores: the exact bounds, and the earliest time anything is due.
  local first = redis.call('ZRANGE', PENDING, 0, 0, 'WITHSCORES')
  j.pending_at = tonumber(first[2]) or false
  first = redis.call('ZRANGE', CLAIMED, 0, 0, 'WITHSCORES')
  j.expiry_at = tonumber(first[2]) or false
  local next_ready = j.pending_at
  if j.expiry_at then
    next_ready = due_by(next_ready, j.expiry_at)
  end
  local exhausted = 0
  if span and j.cut >= j.nranges then
    exhausted = 1
  end
  status = { exhausted, open, next_ready }
end

save_job(j)

local span_reply = false
if span then
  span_reply = { j.start, j.size, j.end_ }
end
return { finished, leases, status, span_reply }
