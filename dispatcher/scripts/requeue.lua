-- requeue.lua gives the tasks of dead workers back to their Asynq queue:
-- the active tasks whose lease expires before the cutoff, that is, whose
-- lease has not been extended for a while (Asynq extends the leases of
-- live workers every 5 s). It does what Asynq's Requeue does on shutdown
-- (internal/rdb, v0.26), so the task keeps its retry count, and it puts
-- the task at the tail of the pending list, which is dequeued next.
--
-- KEYS[1]  asynq:{<queue>}:lease    active task ids, score lease expiry (unix s)
-- KEYS[2]  asynq:{<queue>}:active   active task ids
-- KEYS[3]  asynq:{<queue>}:pending  pending task ids
-- ARGV[1]  cutoff, unix s: leases expiring before it are orphaned
-- ARGV[2]  task key prefix, asynq:{<queue>}:t:
-- ARGV[3]  now, unix ns, from the injected clock (the task's pending_since)
-- ARGV[4]  the most tasks looked at in one call
--
-- Returns the number of tasks given back.
local ids = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", "(" .. ARGV[1], "LIMIT", 0, tonumber(ARGV[4]))
local n = 0
for _, id in ipairs(ids) do
  redis.call("ZREM", KEYS[1], id)
  local key = ARGV[2] .. id
  if redis.call("LREM", KEYS[2], 0, id) > 0 and redis.call("EXISTS", key) == 1 then
    redis.call("RPUSH", KEYS[3], id)
    redis.call("HSET", key, "state", "pending", "pending_since", ARGV[3])
    n = n + 1
  end
end
return n
