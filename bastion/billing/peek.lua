-- The key's rate-limit buckets as they stand now, consuming nothing (for answers that admit nothing).
-- With a refusal to count (a request refused before admission: its body, its model), counts it too.
-- KEYS: 1 key's bucket hash; to count: 2 key's refusals hash, 3 the slot group's refusal tallies
-- ARGV: 1 rpm, 2 tpm; to count: 3 the code answered, 4 account id, 5 key id
-- Returns {0, req_remaining, req_reset_ms, tok_remaining, tok_reset_ms, 0, 0, 0}, admit.lua's shape.
-- (buckets.lua and refusal_counts.lua are prepended: `now`, `refill`, `count_refusal`)
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
if ARGV[3] then count_refusal(KEYS[2], KEYS[3], ARGV[4], ARGV[5], ARGV[3]) end
local bucket = redis.call('HMGET', KEYS[1], 'r', 'rt', 't', 'tt')
local requests = refill(bucket[1], bucket[2], rpm)
local tokens = refill(bucket[3], bucket[4], tpm)
return {0, math.floor(math.max(requests, 0)), math.ceil((rpm - requests) * 60000 / rpm),
        math.floor(math.max(tokens, 0)), math.ceil((tpm - tokens) * 60000 / tpm), 0, 0, 0}
