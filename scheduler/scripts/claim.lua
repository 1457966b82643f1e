-- claim.lua leases the due members of one due index to the caller.
--
-- KEYS[1]  a due index: zset of session ids scored by due time (unix ms)
-- ARGV[1]  now, unix ms (the caller's injected clock)
-- ARGV[2]  lease end, unix ms: claimed members are rescored to it, so other
--          claimers skip them until then, and they come due again if the
--          claimer dies before their work commits
-- ARGV[3]  the most members to claim
--
-- Returns {next, id, id, ...}: next is the lowest score left in the index
-- after the claim ("" when it is empty), then the claimed ids, earliest
-- due first.
local ids = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[3]))
if #ids > 0 then
  local args = {}
  for i, id in ipairs(ids) do
    args[2 * i - 1] = ARGV[2]
    args[2 * i] = id
  end
  redis.call('ZADD', KEYS[1], 'XX', unpack(args))
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
table.insert(ids, 1, first[2] or '')
return ids
