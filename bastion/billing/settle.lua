-- Settlement, atomically, in one round trip: release the reservation (the account's and the key's),
-- charge the cost (to the account and to the key's spend in the current period, when Redis has it),
-- true up the token bucket, and append the usage record to the ledger stream (so a gateway crash loses
-- nothing).
-- KEYS: 1 key's bucket hash, 2 account hash, 3 account reservations zset, 4 ledger stream,
--       5 key's spend in the period (hash), 6 key's holds hash, 7 key's requests in flight (zset)
-- ARGV: 1 reservation member, 2 reserved nano, 3 cost nano, 4 token difference (actual - reserved),
--       5 tpm, 6 usage record (JSON)
-- Returns the account's balance after the charge (credit - spent).
-- (buckets.lua is prepended: `now` and `refill`)
if redis.call('ZREM', KEYS[3], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'reserved', -tonumber(ARGV[2]))
end
if redis.call('ZREM', KEYS[7], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[6], 'reserved', -tonumber(ARGV[2]))
end
redis.call('HINCRBY', KEYS[2], 'spent', ARGV[3])
-- A period Redis does not hold yet is loaded from the ledger (which has this record by then).
if redis.call('EXISTS', KEYS[5]) == 1 then redis.call('HINCRBY', KEYS[5], 'spent', ARGV[3]) end
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
