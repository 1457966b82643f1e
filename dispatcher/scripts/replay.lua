-- replay.lua numbers a replay of a delivery and marks the delivery pending.
--
-- KEYS[1]  sessiond:{<sid>}:delivery:<did>  the record (hash)
-- ARGV[1]  now, unix ms, from the injected clock
--
-- Returns {replay number, previous status}, or {0, ""} when the record is
-- gone.
if redis.call("PTTL", KEYS[1]) <= 0 then
  return {0, ""}
end
local previous = redis.call("HGET", KEYS[1], "status") or ""
local n = redis.call("HINCRBY", KEYS[1], "replays", 1)
redis.call("HSET", KEYS[1], "status", "pending", "updated_at", ARGV[1], "error", "")
return {n, previous}
