-- recovery.lua keeps a recovery's state: its hash and the two sets of the
-- deliveries it scheduled and of those that ended. Nothing is written once
-- the hash has expired, so no key is left without a time to live; the
-- sets live as long as the hash.
--
-- KEYS[1]  the recovery's hash
-- KEYS[2]  the set of the deliveries it scheduled
-- KEYS[3]  the set of those that ended (succeeded, dead or dropped)
-- ARGV[1]  the operation:
--   schedule  ARGV[2..]: deliveries about to be scheduled (before their tasks)
--   page      ARGV[2] a shard's position field, ARGV[3] the last entry
--             walked, ARGV[4] how many entries the page held
--   done      ARGV[2]: a delivery that ended
--   walked    the walk is over: delivering, then done once every
--             scheduled delivery has ended
--   fail      ARGV[2]: why the recovery stopped
--
-- Once done or failed, the hash keeps the counts and the sets go.
--
-- Returns 0 when the hash is gone, else 1.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
local op = ARGV[1]

local function keep(key)
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
end

local function settle(status, why)
  local s, d = redis.call('SCARD', KEYS[2]), redis.call('SCARD', KEYS[3])
  redis.call('HSET', KEYS[1], 'status', status, 'scheduled', s, 'done', d)
  if why then redis.call('HSET', KEYS[1], 'err', why) end
  redis.call('UNLINK', KEYS[2], KEYS[3]) -- a large set is freed off the main thread
end

local function complete()
  if redis.call('HGET', KEYS[1], 'status') == 'delivering'
    and redis.call('SCARD', KEYS[3]) >= redis.call('SCARD', KEYS[2]) then
    settle('done')
  end
end

if op == 'schedule' then
  if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 1 end
  redis.call('SADD', KEYS[2], unpack(ARGV, 2))
  keep(KEYS[2])
elseif op == 'page' then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'scanned', ARGV[4])
elseif op == 'done' then
  if redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 1 then
    redis.call('SADD', KEYS[3], ARGV[2])
    keep(KEYS[3])
    complete()
  end
elseif op == 'walked' then
  if redis.call('HGET', KEYS[1], 'status') == 'running' then
    redis.call('HSET', KEYS[1], 'status', 'delivering')
  end
  complete()
elseif op == 'fail' then
  local st = redis.call('HGET', KEYS[1], 'status')
  if st == 'running' or st == 'delivering' then settle('failed', ARGV[2]) end
end
return 1
