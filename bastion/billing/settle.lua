-- Settlement, atomically, in one round trip (settle_fn.lua's `settle_request`).
-- KEYS: 1 key's bucket hash, 2 account hash, 3 account reservations zset, 4 ledger stream,
--       5 key's spend in the period (hash), 6 key's holds hash, 7 key's requests in flight (zset),
--       8 (a stream that was checkpointed) this instance's running-usage hash in the slot group
-- ARGV: 1 reservation member, 2 reserved nano, 3 cost nano, 4 token difference (actual - reserved),
--       5 tpm, 6 usage record (JSON)
-- Returns the account's balance after the charge (credit - spent); {balance} if a sweep had settled the
-- request already from its checkpoint (its instance taken for dead): then nothing is charged again.
-- (buckets.lua and settle_fn.lua are prepended)
if KEYS[8] then
  local checkpoint = redis.call('HGET', KEYS[8], ARGV[1])
  if checkpoint then
    redis.call('HDEL', KEYS[8], ARGV[1])
    if checkpoint == '~' then return {balance_of(KEYS[2])} end
  end
end
settle_request(KEYS, ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]),
               ARGV[6])
return balance_of(KEYS[2])
