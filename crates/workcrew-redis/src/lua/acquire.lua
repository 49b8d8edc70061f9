-- The job-wide rate limit (Store::acquire): one GCRA step on the job's theoretical arrival
-- time, the same arithmetic as `Rate::gcra` in workcrew (the client sends the costs it
-- computed, so both round alike).
--
-- ARGV: now, cost (ms of budget these ids use), tolerance (ms: the burst's cost, or the
-- request's if larger). Reply: 0 (granted and counted) or the ms to wait.

local j = load_job()
if not j then
  return no_job()
end
local now, cost, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = math.max(j.tat or now, now)
local new_tat = tat + cost
if new_tat - now <= tolerance then
  j.tat = new_tat
  save_job(j)
  return 0
end
return math.max(math.ceil(new_tat - tolerance - now), 1)
