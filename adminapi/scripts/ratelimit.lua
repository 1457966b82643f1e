-- Sliding-window rate limit over a log of requests.
-- KEYS[1]  the request log: sorted set, score = request time (unix ms)
-- ARGV[1]  now (unix ms, from the injected clock)
-- ARGV[2]  a unique member for this request
-- ARGV[3], ARGV[4], ...  pairs of limit and window length (ms); a limit of
--          0 or less refuses every request
-- Returns 0 when the request is allowed (and logged), else the number of
-- milliseconds until it would be (for a zero limit, one window).
local now = tonumber(ARGV[1])
local longest, wait = 0, 0
for i = 3, #ARGV, 2 do
  local limit, window = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  if window > longest then longest = window end
  local count = redis.call('ZCOUNT', KEYS[1], now - window + 1, '+inf')
  if limit <= 0 then
    if window > wait then wait = window end
  elseif count >= limit then
    -- The request that must leave the window before one more fits.
    local e = redis.call('ZRANGEBYSCORE', KEYS[1], now - window + 1, '+inf', 'WITHSCORES', 'LIMIT', count - limit, 1)
    local w = tonumber(e[2]) + window - now
    if w > wait then wait = w end
  end
end
if wait > 0 then return wait end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - longest)
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], longest)
return 0
