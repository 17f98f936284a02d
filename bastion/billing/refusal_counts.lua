-- Shared by the scripts that count refusals (prepended after buckets.lua, whose `now` it uses).
-- A refusal is counted where it is decided, in the round trip that decided it: on the key's own hash
-- (today's count and the last refusal, for GET /v1/key) and in its slot group's tallies (per UTC day,
-- account, key and code: what the ledger writer moves to the database), so a client hammering a
-- refused key adds to counters, never to the usage ledger.
local function count_refusal(mine, tallies, account_id, key_id, code)
  local day = math.floor(now / 86400000)
  local tally = day .. '|' .. account_id .. '|' .. key_id .. '|' .. code
  redis.call('HINCRBY', tallies, 'c|' .. tally, 1)
  redis.call('HSET', tallies, 't|' .. tally, now)
  local counted = redis.call('HMGET', mine, 'day', 'today')
  local today = 0
  if tonumber(counted[1]) == day then today = tonumber(counted[2]) end
  redis.call('HSET', mine, 'day', day, 'today', today + 1, 'last_at', now, 'last_code', code)
  redis.call('PEXPIRE', mine, 172800000)
end
