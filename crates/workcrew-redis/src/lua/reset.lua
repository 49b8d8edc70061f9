-- Deletes a job (Store::reset): every key but `floor`, which keeps the job's last fencing
-- token (or the higher one it held already), so the job made again hands out larger tokens
-- and fences out every holder from before the reset. A job record this version cannot read
-- is deleted all the same (it has no token to keep).
--
-- Reply: how many keys were deleted.

local read, j = pcall(load_job)
local floor = tonumber(redis.call('GET', FLOOR) or '0') or 0
if read and j and type(j.fence) == 'number' and j.fence > floor then
  floor = j.fence
end
if floor > 0 then
  -- As a string of digits: `%.14g`, Lua's default, would round a token.
  redis.call('SET', FLOOR, string.format('%.0f', floor))
end
return redis.call('DEL', JOB, RANGES, LISTS, PENDING, CLAIMED, PARKED, FAILED, ERRORS)
