-- release.lua drops claimed members whose work turned out to be done
-- already (Run changed nothing), so that a stale entry does not come back
-- every lease.
--
-- KEYS[1]  the due index the members were claimed from
-- ARGV[1]  the lease end the claim set (unix ms)
-- ARGV[2..] the claimed session ids
--
-- Returns the number of members removed. A member whose score is no longer
-- the lease end was rescheduled by a lifecycle write after the claim and is
-- kept.
local n = 0
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[1]) then
    n = n + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return n
