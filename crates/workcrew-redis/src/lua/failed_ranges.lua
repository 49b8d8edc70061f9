-- Up to `limit` parked ranges, lowest number first (Store::failed_ranges).
--
-- ARGV: limit. Reply: { span, ranges } with span = { start, size, end } or false, and each
-- range { number, k | false, ids | false, attempts, error | false }; none for a job that
-- does not exist (as SQLite answers).

local j = load_job()
if not j then
  return { false, {} }
end
local out = {}
local limit = tonumber(ARGV[1])
if limit > 0 then
  for _, f in ipairs(redis.call('ZRANGE', PARKED, 0, limit - 1)) do
    local r = load_range(f)
    if r then
      local ids = false
      if not r.k then
        ids = list_ids(f)
      end
      out[#out + 1] = { tonumber(f), r.k, ids, r.attempts, r.err }
    end
  end
end
local span = false
if j.src == 'span' then
  span = { j.start, j.size, j.end_ }
end
return { span, out }
