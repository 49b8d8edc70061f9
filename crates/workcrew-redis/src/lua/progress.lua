-- A job's counters (Store::progress).
--
-- Reply: { src, start | false, end | false, size | false, cut, ids_done, ids_failed,
--          ranges_done, ranges_failed, ranges_claimed, ids_claimed, ranges_pending,
--          ids_pending }

local j = load_job()
if not j then
  return no_job()
end
return { j.src, j.start or false, j.end_ or false, j.size or false, j.cut, j.ids_done,
  j.ids_failed, j.ranges_done, redis.call('ZCARD', PARKED), redis.call('ZCARD', CLAIMED),
  j.ids_claimed, redis.call('ZCARD', PENDING), j.ids_pending }
