-- attempt.lua records an attempt of a delivery and the delivery's status.
--
-- KEYS[1]  sessiond:{<sid>}:delivery:<did>  the record (hash); attempt n is
--          its field "a:<n>"
-- ARGV[1]  the delivery's status: succeeded, failed or dead
-- ARGV[2]  the attempt's number, 0 for a status change without an attempt
-- ARGV[3]  the attempt as JSON ("" without an attempt)
-- ARGV[4]  now, unix ms, from the injected clock
-- ARGV[5]  the delivery's error ("" for none)
-- ARGV[6]  the most fields a record may have; past it attempts are not kept
--
-- Returns 1, or 0 when the record is gone (its retention is over) and
-- nothing was written.
if redis.call("EXISTS", KEYS[1]) == 0 then
  return 0
end
if ARGV[2] ~= "0" and redis.call("HLEN", KEYS[1]) < tonumber(ARGV[6]) then
  redis.call("HSET", KEYS[1], "status", ARGV[1], "updated_at", ARGV[4], "error", ARGV[5], "a:" .. ARGV[2], ARGV[3])
else
  redis.call("HSET", KEYS[1], "status", ARGV[1], "updated_at", ARGV[4], "error", ARGV[5])
end
return 1
