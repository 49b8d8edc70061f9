-- Puts parked ranges back with fresh attempts, and makes new ranges of the failed ids, at
-- most `chunk` each, in id order (Store::retry_failed).
--
-- ARGV: now, chunk. Reply: { ranges put back, ids put into new ranges }.
--
-- Runs over every parked range and failed id in one script: Redis serves nothing else
-- meanwhile (about a second per million failed ids).

local now, chunk = tonumber(ARGV[1]), math.max(tonumber(ARGV[2]), 1)
local j = load_job()
if not j then
  return no_job()
end

local parked = redis.call('ZRANGE', PARKED, 0, -1)
for _, f in ipairs(parked) do
  local r = load_range(f)
  if r then
    r.state, r.attempts, r.err = ST_PENDING, 0, false
    save_range(f, r)
    redis.call('ZADD', PENDING, int(now), f)
    j.ids_pending = j.ids_pending + r.len
    j.ids_failed = j.ids_failed - r.len
  end
end
redis.call('DEL', PARKED)

local failed = redis.call('ZRANGE', FAILED, 0, -1)
redis.call('DEL', FAILED, ERRORS)
j.ids_failed = math.max(j.ids_failed - #failed, 0)
local x = 1
while x <= #failed do
  local ids = {}
  for y = x, math.min(x + chunk - 1, #failed) do
    ids[#ids + 1] = failed[y]
  end
  x = x + #ids
  local f = field(j.next)
  j.next = j.next + 1
  save_range(f, {
    state = ST_PENDING, fence = 0, attempts = 0, checkpoint = 0, amo = false, len = #ids,
    owner = false, err = false, k = false,
  })
  redis.call('HSET', LISTS, f, cmsgpack.pack(ids))
  redis.call('ZADD', PENDING, int(now), f)
  j.ids_pending = j.ids_pending + #ids
end

if #parked > 0 or #failed > 0 then
  j.pending_at = due_by(j.pending_at, now)
end
save_job(j)
return { #parked, #failed }
