-- readref.lua reads a ref_id's active session in one round trip, for a
-- create that found the ref_id taken.
--
-- KEYS[1]  the ref key: the id of the ref_id's active session
-- KEYS[2]  a nonce to spend first, or the ref key again when there is none
-- ARGV[1]  the session record key prefix of the shard (the id follows)
-- ARGV[2]  the personal data key prefix of the shard
-- ARGV[3]  the nonce's TTL in ms ("" when there is no nonce)
--
-- Returns -1 when the nonce was spent already (nothing read); otherwise
-- {owner id or "", record or "", personal data or ""}.
if ARGV[3] ~= '' then
  if redis.call('SET', KEYS[2], 1, 'NX', 'PX', ARGV[3]) == false then return -1 end
end
local owner = redis.call('GET', KEYS[1])
if not owner then return {'', '', ''} end
return {owner, redis.call('GET', ARGV[1] .. owner) or '', redis.call('GET', ARGV[2] .. owner) or ''}
