-- record.lua creates a delivery's record unless it exists.
--
-- KEYS[1]  sessiond:{<sid>}:delivery:<did>  the record (hash)
-- KEYS[2]  sessiond:{<sid>}:deliveries      the session's deliveries (zset)
-- ARGV[1]  delivery id
-- ARGV[2]  now, unix ms, from the injected clock
-- ARGV[3]  time to live, ms: what is left of the event's retention
-- ARGV[4..] field, value, ... of the new record
--
-- Returns the status the record already had, or "" when there was none:
-- it is created now, unless the event's retention is over (ARGV[3] <= 0),
-- in which case no record is kept.
local status = redis.call("HGET", KEYS[1], "status")
if status then
  return status
end
local ttl = tonumber(ARGV[3])
if ttl <= 0 then
  return ""
end
redis.call("HSET", KEYS[1], unpack(ARGV, 4))
redis.call("PEXPIRE", KEYS[1], ttl)
redis.call("ZADD", KEYS[2], ARGV[2], ARGV[1])
if redis.call("PTTL", KEYS[2]) < ttl then
  redis.call("PEXPIRE", KEYS[2], ttl)
end
return ""
