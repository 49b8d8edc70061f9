-- Appends a range of loaded ids after the cursor and claims it (Store::append), if the
-- cursor is still where the ids were loaded after.
--
-- ARGV: owner, now, lease_ms, amo ('1'/'0'), after (encoded id, or '' for the start),
-- valid ('1': the ids are sorted and after `after`, as the client checked), then the ids
-- (encoded, strictly increasing).
--
-- Reply: { 'claimed', number, fence, expires } or { 'moved', cursor | false } or
-- { 'invalid' } (the cursor matched but the ids are not after it).

local owner, now, lease, amo = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local after, valid = ARGV[5], ARGV[6] == '1'

local j = load_job()
if not j then
  return no_job()
end
if j.src ~= 'loader' then
  return redis.error_reply('WCCONFLICT the job is not a loader job: ids cannot be appended')
end
if (j.cursor or '') ~= after then
  return { 'moved', j.cursor }
end
if not valid or #ARGV < 7 then
  return { 'invalid' }
end

local ids = {}
for x = 7, #ARGV do
  ids[#ids + 1] = ARGV[x]
end
local num = j.next
local expires = now + lease
local f = field(num)
j.fence = j.fence + 1
save_range(f, {
  state = ST_CLAIMED, fence = j.fence, attempts = 1, checkpoint = 0, amo = amo, len = #ids,
  owner = owner, err = false, k = false,
})
redis.call('HSET', LISTS, f, cmsgpack.pack(ids))
redis.call('ZADD', CLAIMED, int(expires), f)
j.cursor = ids[#ids]
j.next = num + 1
j.ids_claimed = j.ids_claimed + #ids
j.expiry_at = due_by(j.expiry_at, expires)
save_job(j)
return { 'claimed', num, j.fence, expires }
