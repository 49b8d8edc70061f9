-- Records that the first `done` ids of a claimed range are processed and extends its lease
-- (Store::checkpoint), if the caller still holds it.
--
-- ARGV: range number, fence, done, expires. Reply: 1 (recorded) or 0 (fenced out).

local f, fence, done = field(tonumber(ARGV[1])), tonumber(ARGV[2]), tonumber(ARGV[3])
local expires = tonumber(ARGV[4])
local r = load_range(f)
if not r or r.state ~= ST_CLAIMED or r.fence ~= fence then
  return 0
end
local j = load_job()
if not j then
  return no_job()
end
r.checkpoint = math.max(r.checkpoint, done)
save_range(f, r)
redis.call('ZADD', CLAIMED, 'XX', int(expires), f)
-- A lease renewed for less than it had left moves the bound down.
j.expiry_at = due_by(j.expiry_at, expires)
save_job(j)
return 1
