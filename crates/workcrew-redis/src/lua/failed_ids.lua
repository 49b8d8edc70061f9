-- Up to `limit` failed ids, lowest first, with their errors (Store::failed_ids).
--
-- ARGV: limit. Reply: { id1, error1, id2, error2, ... } (ids encoded); none for a job that
-- does not exist (as SQLite answers).

local limit = tonumber(ARGV[1])
local out = {}
if limit > 0 then
  for _, id in ipairs(redis.call('ZRANGE', FAILED, 0, limit - 1)) do
    out[#out + 1] = id
    out[#out + 1] = redis.call('HGET', ERRORS, id) or ''
  end
end
return out
