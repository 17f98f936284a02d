-- An instance's running-usage checkpoints in one slot group, and its heartbeat there, in one round trip.
-- KEYS: 1 the group's runners (zset: instance id -> its last heartbeat, Redis time ms),
--       2 this instance's running-usage hash in the group (reservation member -> checkpoint, or '~'
--         once a sweep has settled the request from it)
-- ARGV: 1 instance id, 2 the hash's TTL ms, 3 n: checkpoints that follow, 4.. n (member, checkpoint)
--       pairs, then members to forget (requests settled without reaching Redis)
-- Returns the members a sweep has settled (the instance was taken for dead): its requests to end.
-- (buckets.lua is prepended: `now`)
local known = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[1])
local swept, last = {}, 3 + 2 * tonumber(ARGV[3])
for i = 4, last, 2 do
  if redis.call('HGET', KEYS[2], ARGV[i]) == '~' then
    table.insert(swept, ARGV[i])
  else
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
end
for i = last + 1, #ARGV do redis.call('HDEL', KEYS[2], ARGV[i]) end
if not known then
  -- Not among the runners: new here, or swept while it could not beat. Every request settled by the
  -- sweep is named (those checkpointed just now are already).
  local entries = redis.call('HGETALL', KEYS[2])
  for i = 1, #entries, 2 do
    if entries[i + 1] == '~' then table.insert(swept, entries[i]) end
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return swept
