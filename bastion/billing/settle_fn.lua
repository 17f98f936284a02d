-- Shared by settle.lua and sweep.lua (prepended after buckets.lua): one request's settlement. Release
-- its reservation (the account's and the key's), charge the cost (to the account, and to the key's
-- spend in the current period when Redis has it), true up the token bucket, and append the usage record
-- to the ledger stream (so a gateway crash loses nothing).
-- `names`: bucket, account, account's reservations, ledger stream, key's spend, key's holds, key's
-- requests in flight (settle.lua's KEYS 1-7; sweep.lua builds the same names as layout.py does).
local function settle_request(names, member, reserved, cost, difference, tpm, record)
  if redis.call('ZREM', names[3], member) == 1 then
    redis.call('HINCRBY', names[2], 'reserved', -reserved)
  end
  if redis.call('ZREM', names[7], member) == 1 then
    redis.call('HINCRBY', names[6], 'reserved', -reserved)
  end
  redis.call('HINCRBY', names[2], 'spent', cost)
  -- A period Redis does not hold yet is loaded from the ledger (which has this record by then).
  if redis.call('EXISTS', names[5]) == 1 then redis.call('HINCRBY', names[5], 'spent', cost) end
  if difference ~= 0 then
    local bucket = redis.call('HMGET', names[1], 't', 'tt')
    local tokens = refill(bucket[1], bucket[2], tpm)
    redis.call('HSET', names[1], 't', math.min(tpm, tokens - difference), 'tt', now)
    redis.call('PEXPIRE', names[1], 120000)
  end
  redis.call('XADD', names[4], '*', 'r', record)
end

local function balance_of(account)
  local figures = redis.call('HMGET', account, 'credit', 'spent')
  return tonumber(figures[1] or '0') - tonumber(figures[2] or '0')
end
