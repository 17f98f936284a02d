-- Admission, atomically, in one round trip: revocation, rate limits (two token buckets), credit.
-- KEYS: 1 key's bucket hash, 2 account hash, 3 account reservations zset, 4 key's revocation marker
-- ARGV: 1 rpm, 2 tpm, 3 tokens to reserve, 4 nano-USD to reserve, 5 reservation member, 6 reservation ttl ms
-- Returns {code, req_remaining, req_reset_ms, tok_remaining, tok_reset_ms, retry_ms, available_nano, balance_nano}
-- code: 0 admitted, 1 revoked, 2 account unknown to Redis (load it, retry), 3 larger than the tpm limit,
--       4 request limit, 5 token limit, 6 credit held by in-flight requests, 7 credit exhausted
-- (buckets.lua is prepended: `now` and `refill`)
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local want_tokens, want_nano = tonumber(ARGV[3]), tonumber(ARGV[4])

if redis.call('EXISTS', KEYS[4]) == 1 then return {1, 0, 0, 0, 0, 0, 0, 0} end
local account = redis.call('HMGET', KEYS[2], 'credit', 'spent')
if not account[1] then return {2, 0, 0, 0, 0, 0, 0, 0} end

-- Reservations of requests whose gateway died expire; give their credit back.
local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
if #stale > 0 then
  local freed = 0
  for _, member in ipairs(stale) do freed = freed + tonumber(string.match(member, '|(%d+)$')) end
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  redis.call('HINCRBY', KEYS[2], 'reserved', -freed)
end

local bucket = redis.call('HMGET', KEYS[1], 'r', 'rt', 't', 'tt')
local requests = refill(bucket[1], bucket[2], rpm)
local tokens = refill(bucket[3], bucket[4], tpm)
local balance = tonumber(account[1]) - tonumber(account[2] or '0')
local available = balance - tonumber(redis.call('HGET', KEYS[2], 'reserved') or '0')

local function answer(code, retry_ms)
  return {code, math.floor(math.max(requests, 0)), math.ceil((rpm - requests) * 60000 / rpm),
          math.floor(math.max(tokens, 0)), math.ceil((tpm - tokens) * 60000 / tpm),
          math.ceil(retry_ms), available, balance}
end

if want_tokens > tpm then return answer(3, 0) end
if requests < 1 then return answer(4, (1 - requests) * 60000 / rpm) end
if tokens < want_tokens then return answer(5, (want_tokens - tokens) * 60000 / tpm) end
if available < want_nano then
  if balance >= want_nano then return answer(6, 1000) end
  return answer(7, 0)
end

requests = requests - 1
tokens = tokens - want_tokens
redis.call('HSET', KEYS[1], 'r', requests, 'rt', now, 't', tokens, 'tt', now)
redis.call('PEXPIRE', KEYS[1], 120000)
redis.call('HINCRBY', KEYS[2], 'reserved', ARGV[4])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), ARGV[5])
available = available - want_nano
return answer(0, 0)
