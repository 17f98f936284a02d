-- The orphan sweep of one slot group: every instance whose heartbeat here is older than the window (or
-- that the caller knows is dead) has its checkpointed requests settled from their last checkpoints,
-- each exactly once (settle.lua and this script both take the checkpoint atomically; a settled one
-- becomes '~'), and leaves the group's runners.
-- KEYS: 1 the group's runners (zset: instance id -> its last heartbeat, Redis time ms)
-- ARGV: 1 the group's key head (layout.py's `head`), 2 the group's ledger stream, 3 heartbeat window ms,
--       4 a swept hash's TTL ms, 5 the caller's own instance id (alive: never swept),
--       6.. instance ids known to be dead (their process is gone)
-- Returns {requests settled, nano billed}.
-- (buckets.lua and settle_fn.lua are prepended)
local head, stream = ARGV[1], ARGV[2]
local dead = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))) do
  if id ~= ARGV[5] then table.insert(dead, id) end
end
for i = 6, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then table.insert(dead, ARGV[i]) end
end
local settled, billed = 0, 0
for _, id in ipairs(dead) do
  local running = head .. 'running:' .. id
  local entries = redis.call('HGETALL', running)
  for i = 1, #entries, 2 do
    local member, value = entries[i], entries[i + 1]
    if value ~= '~' then
      -- checkpoint: <account>|<key>|<period>|<cost nano>|<token difference>|<tpm>|<usage record JSON>
      local account, key, period, cost, difference, tpm, record =
        string.match(value, '^([^|]*)|([^|]*)|([^|]*)|(%-?%d+)|(%-?%d+)|(%d+)|(.*)$')
      local names = {head .. 'bucket:' .. key, head .. 'account:' .. account, head .. 'holds:' .. account,
                     stream, head .. 'kspend:' .. key .. ':' .. period, head .. 'kheld:' .. key,
                     head .. 'inflight:' .. key}
      local reserved = tonumber(string.match(member, '|(%d+)$'))
      settle_request(names, member, reserved, tonumber(cost), tonumber(difference), tonumber(tpm), record)
      redis.call('HSET', running, member, '~')
      settled, billed = settled + 1, billed + tonumber(cost)
    end
  end
  redis.call('ZREM', KEYS[1], id)
  if #entries > 0 then redis.call('PEXPIRE', running, ARGV[4]) end
end
return {settled, billed}
