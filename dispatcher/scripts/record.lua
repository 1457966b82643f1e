-- record.lua writes a delivery's record: its status, and the attempt just
-- made if any, into the session's deliveries hash; and acknowledges the
-- outbox entry whose last delivery this is. A purged session gets no
-- record (its deliveries are being dropped), but the entry is still
-- acknowledged.
--
-- KEYS[1]  the session's deliveries hash; field ARGV[1] holds the record:
--          a summary (JSON) and then one line per attempt (JSON)
-- KEYS[2]  the session's record (gone: the session was purged)
-- KEYS[3]  the shard's outbox stream
-- ARGV[1]  the record's field: event id~endpoint id
-- ARGV[2]  the delivery's status
-- ARGV[3]  the event type
-- ARGV[4]  the event's outbox entry id
-- ARGV[5]  now, unix ms, from the injected clock
-- ARGV[6]  the delivery's error ("" for none)
-- ARGV[7]  the attempt as JSON ("" when there is none)
-- ARGV[8]  the least time to live of the hash, ms
-- ARGV[9]  the most attempts a record keeps
-- ARGV[10] the outbox entry to acknowledge ("" for none)
-- ARGV[11] the outbox consumer group
-- ARGV[12] "1" for a test event's delivery, whose session does not exist
--
-- Returns 1 when the record was written, 0 when the session is gone.
if ARGV[10] ~= '' then
  redis.call('XACK', KEYS[3], ARGV[11], ARGV[10])
end
if ARGV[12] ~= '1' and redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local sum, rest
if cur then
  local nl = string.find(cur, '\n', 1, true)
  if nl then
    sum, rest = cjson.decode(string.sub(cur, 1, nl - 1)), string.sub(cur, nl)
  else
    sum, rest = cjson.decode(cur), ''
  end
else
  sum, rest = {t = ARGV[3], c = ARGV[4], ca = tonumber(ARGV[5]), n = 0, r = 0}, ''
end
sum.s, sum.ua = ARGV[2], tonumber(ARGV[5])
if ARGV[6] ~= '' then sum.e = ARGV[6] else sum.e = nil end
if ARGV[7] ~= '' and sum.n < tonumber(ARGV[9]) then
  sum.n = sum.n + 1
  rest = rest .. '\n' .. ARGV[7]
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(sum) .. rest)
redis.call('PEXPIRE', KEYS[1], ARGV[8], 'NX')
redis.call('PEXPIRE', KEYS[1], ARGV[8], 'GT')
return 1
