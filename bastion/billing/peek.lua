-- The key's rate-limit buckets as they stand now, consuming nothing (for answers that admit nothing).
-- KEYS: 1 key's bucket hash. ARGV: 1 rpm, 2 tpm
-- Returns {0, req_remaining, req_reset_ms, tok_remaining, tok_reset_ms, 0, 0, 0}, admit.lua's shape.
-- (buckets.lua is prepended: `now` and `refill`)
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local bucket = redis.call('HMGET', KEYS[1], 'r', 'rt', 't', 'tt')
local requests = refill(bucket[1], bucket[2], rpm)
local tokens = refill(bucket[3], bucket[4], tpm)
return {0, math.floor(math.max(requests, 0)), math.ceil((rpm - requests) * 60000 / rpm),
        math.floor(math.max(tokens, 0)), math.ceil((tpm - tokens) * 60000 / tpm), 0, 0, 0}
