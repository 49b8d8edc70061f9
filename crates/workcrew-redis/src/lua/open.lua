-- Opens a job (Store::open): creates it if it does not exist, else returns what it holds so
-- the client can check the source.
--
-- ARGV: src ('span' or 'loader'), kind ('int' or 'str'), and for a span: start, end, size,
-- nranges (how many ranges the span cuts into), lastlen (ids in the last one).
--
-- Reply: { 1 } when created; else { 0, src, kind, start, end, size, cut, cursor } (false
-- where a loader has none).

local j = load_job()
if j then
  return { 0, j.src, j.kind, j.start, j.end_, j.size, j.cut, j.cursor }
end

-- Fencing tokens start above the last token of the job before a reset (its `floor`, which the
-- reset kept), and at least at the server's time in ms times 1024, so a job created again
-- hands out tokens larger than any of the job before it and a holder from before is fenced
-- out: after a reset always, even within the same millisecond; after the server lost its
-- data (and the floor with it), unless the job before claimed over 1024 ranges per
-- millisecond of its life. Exact in a double until the year 2250.
local t = redis.call('TIME')
local fence = (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) * 1024
local floor = tonumber(redis.call('GET', FLOOR) or '0') or 0
if floor >= fence then
  fence = floor
end

j = {
  src = ARGV[1], kind = ARGV[2], cut = 0, next = 0, fence = fence, cursor = false,
  ids_done = 0, ids_failed = 0, ranges_done = 0, ids_claimed = 0, ids_pending = 0,
  pending_at = false, expiry_at = false, tat = false,
}
if ARGV[1] == 'span' then
  j.start, j.end_, j.size = ARGV[3], ARGV[4], tonumber(ARGV[5])
  j.nranges, j.lastlen = tonumber(ARGV[6]), tonumber(ARGV[7])
end
save_job(j)
return { 1 }
