-- commit.lua applies the writes of one change of the store if the state it
-- was decided on still holds: a compare-and-set over several keys, all in
-- one slot (the session's shard).
--
-- KEYS     every key the change reads or writes
-- ARGV[1]  the number of guards, then for each guard: type, key index,
--          value:
--            v  the version that starts the string at key (digits, then
--               a space) equals value ("" means the key does not exist):
--               a session record's
--            g  GET key equals value ("" means it does not exist)
--            n  the key does not exist (a nonce; a write then sets it)
--          then the writes, each: n, command, key index, n arguments;
--          the command DELIFEQ deletes the key if it holds the argument,
--          EXTEND sets the key's TTL to the argument (ms) unless it has a
--          longer one (a key without a TTL gets one)
--
-- Returns 1 when the writes were applied, 0 when a v or g guard failed (the
-- caller reads again), -1 when an n guard failed (a replayed request).
-- Nothing is written unless every guard holds.
--
-- Redis does not undo a script's writes when a later command fails, so
-- every write is checked before the first is made: a command of the list
-- below, a key of KEYS, its arguments present, and its key of the type the
-- command needs (or absent), as the writes before it leave it. A write
-- that fails the check is an error, and nothing is written.
local i = 2
for _ = 1, tonumber(ARGV[1]) do
  local kind, key, want = ARGV[i], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2]
  i = i + 3
  if kind == 'v' then
    local head = redis.call('GETRANGE', key, 0, 20)
    if (string.match(head, '^(%d+) ') or '') ~= want then return 0 end
  elseif kind == 'g' then
    if (redis.call('GET', key) or '') ~= want then return 0 end
  elseif redis.call('EXISTS', key) == 1 then
    return -1
  end
end

-- needs: the type a command's key must have when it exists (true: any);
-- makes: the type the command leaves (nil: the key's type is unchanged);
-- types: what the writes checked so far leave (nil: unknown, ask TYPE).
local needs = {SET = true, DEL = true, PEXPIRE = true, EXTEND = true, DELIFEQ = 'string',
  HSET = 'hash', ZADD = 'zset', ZREM = 'zset', XADD = 'stream'}
local makes = {SET = 'string', DEL = 'none', HSET = 'hash', ZADD = 'zset', XADD = 'stream'}
local types = {}
local j = i
while j <= #ARGV do
  local n, cmd = tonumber(ARGV[j]), ARGV[j + 1]
  local key = KEYS[tonumber(ARGV[j + 2]) or 0]
  local need = needs[cmd]
  if not n or n < 0 or not need or not key or j + 2 + n > #ARGV then
    return redis.error_reply('ERR commit: malformed write at ARGV[' .. j .. ']')
  end
  local have = types[key]
  if need ~= true then
    have = have or redis.call('TYPE', key)['ok']
    if have ~= 'none' and have ~= need then
      return redis.error_reply('WRONGTYPE commit: ' .. cmd .. ' on a ' .. have .. ' key')
    end
  end
  types[key] = makes[cmd] or have
  j = j + 3 + n
end

while i <= #ARGV do
  local n, cmd, key = tonumber(ARGV[i]), ARGV[i + 1], KEYS[tonumber(ARGV[i + 2])]
  if cmd == 'DELIFEQ' then
    if redis.call('GET', key) == ARGV[i + 3] then redis.call('DEL', key) end
  elseif cmd == 'EXTEND' then
    local ms, ttl = tonumber(ARGV[i + 3]), redis.call('PTTL', key)
    if ttl == -1 or (ttl >= 0 and ttl < ms) then redis.call('PEXPIRE', key, ms) end
  else
    redis.call(cmd, key, unpack(ARGV, i + 3, i + 2 + n))
  end
  i = i + 3 + n
end
return 1
