-- Extends every lease `owner` holds (Store::renew) and lists them.
--
-- ARGV: owner, expires. Reply: { number1, fence1, number2, fence2, ... }.
--
-- Walks the claimed set: it holds only the ranges in flight (a few per worker of every
-- process), so this costs little, and renewals come only every third of a lease.

local j = load_job()
if not j then
  return no_job()
end
local owner, expires = ARGV[1], tonumber(ARGV[2])
local held = {}
local fields = redis.call('ZRANGE', CLAIMED, 0, -1)
for _, f in ipairs(fields) do
  local r = load_range(f)
  if r and r.state == ST_CLAIMED and r.owner == owner then
    redis.call('ZADD', CLAIMED, 'XX', int(expires), f)
    held[#held + 1] = tonumber(f)
    held[#held + 1] = r.fence
  end
end
if #held > 0 then
  -- A lease renewed for less than it had left moves the bound down.
  j.expiry_at = due_by(j.expiry_at, expires)
  save_job(j)
end
return held
