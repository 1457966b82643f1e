-- replay.lua numbers a replay of a delivery and marks it pending.
--
-- KEYS[1]  the session's deliveries hash
-- KEYS[2]  the session's record (gone: the session was purged)
-- ARGV[1]  the record's field: event id~endpoint id
-- ARGV[2]  now, unix ms, from the injected clock
--
-- Returns {replay number, previous status, attempts kept}, or {0, "", 0}
-- when the record or the session is gone.
if redis.call('EXISTS', KEYS[2]) == 0 then return {0, '', 0} end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return {0, '', 0} end
local nl = string.find(cur, '\n', 1, true)
local head, rest = cur, ''
if nl then head, rest = string.sub(cur, 1, nl - 1), string.sub(cur, nl) end
local sum = cjson.decode(head)
local previous = sum.s
sum.r = (sum.r or 0) + 1
sum.s, sum.ua, sum.e = 'pending', tonumber(ARGV[2]), nil
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(sum) .. rest)
return {sum.r, previous, sum.n or 0}
