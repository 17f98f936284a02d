-- A key's figures now, consuming nothing (GET /v1/key): its buckets, its spend in the period and its
-- requests in flight, and its account's available credit.
-- KEYS: 1 key's bucket hash, 2 account hash, 3 key's spend in the period, 4 key's holds, 5 in flight,
--       6 key's refusals hash
-- ARGV: 1 rpm, 2 tpm
-- Returns {0, req_remaining, req_reset_ms, tok_remaining, tok_reset_ms, 0, available_nano, balance_nano,
--          account_known, key_spent_nano, spend_known, key_reserved_nano, in_flight,
--          refused_today, last_refusal_ms (0: none), last_refusal_code}
-- (buckets.lua is prepended: `now` and `refill`)
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local bucket = redis.call('HMGET', KEYS[1], 'r', 'rt', 't', 'tt')
local requests = refill(bucket[1], bucket[2], rpm)
local tokens = refill(bucket[3], bucket[4], tpm)
local account = redis.call('HMGET', KEYS[2], 'credit', 'spent', 'reserved')
local known = account[1] and 1 or 0
local balance = tonumber(account[1] or '0') - tonumber(account[2] or '0')
local available = balance - tonumber(account[3] or '0')
local spent = redis.call('HGET', KEYS[3], 'spent')
local in_flight = #redis.call('ZRANGEBYSCORE', KEYS[5], now, '+inf')
local refused = redis.call('HMGET', KEYS[6], 'day', 'today', 'last_at', 'last_code')
local refused_today = 0
if tonumber(refused[1]) == math.floor(now / 86400000) then refused_today = tonumber(refused[2]) end
return {0, math.floor(math.max(requests, 0)), math.ceil((rpm - requests) * 60000 / rpm),
        math.floor(math.max(tokens, 0)), math.ceil((tpm - tokens) * 60000 / tpm), 0, available, balance,
        known, tonumber(spent or '0'), spent and 1 or 0,
        tonumber(redis.call('HGET', KEYS[4], 'reserved') or '0'), in_flight,
        refused_today, tonumber(refused[3] or '0'), refused[4] or ''}
