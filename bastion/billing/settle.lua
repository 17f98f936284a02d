-- Settlement, atomically, in one round trip: release the reservation, charge the cost, true up the
-- token bucket, and append the usage record to the ledger stream (so a gateway crash loses nothing).
-- KEYS: 1 key's bucket hash, 2 account hash, 3 account reservations zset, 4 ledger stream
-- ARGV: 1 reservation member, 2 reserved nano, 3 cost nano, 4 token difference (actual - reserved),
--       5 tpm, 6 usage record (JSON)
-- Returns the account's balance after the charge (credit - spent).
-- (buckets.lua is prepended: `now` and `refill`)
if redis.call('ZREM', KEYS[3], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'reserved', -tonumber(ARGV[2]))
end
redis.call('HINCRBY', KEYS[2], 'spent', ARGV[3])
local difference, tpm = tonumber(ARGV[4]), tonumber(ARGV[5])
if difference ~= 0 then
  local bucket = redis.call('HMGET', KEYS[1], 't', 'tt')
  local tokens = refill(bucket[1], bucket[2], tpm)
  redis.call('HSET', KEYS[1], 't', math.min(tpm, tokens - difference), 'tt', now)
  redis.call('PEXPIRE', KEYS[1], 120000)
end
redis.call('XADD', KEYS[4], '*', 'r', ARGV[6])
local account = redis.call('HMGET', KEYS[2], 'credit', 'spent')
return tonumber(account[1] or '0') - tonumber(account[2] or '0')
