-- Admission, atomically, in one round trip: revocation, the key's settings version, rate limits (two
-- token buckets), the account's credit, the key's budget for its period and its requests in flight.
-- KEYS: 1 key's bucket hash, 2 account hash, 3 account reservations zset, 4 key's revocation marker,
--       5 key's settings version, 6 key's spend in the period (hash), 7 key's holds hash,
--       8 key's requests in flight (zset), 9 key's refusals hash, 10 the slot group's refusal tallies
-- ARGV: 1 rpm, 2 tpm, 3 tokens to reserve, 4 nano-USD to reserve, 5 reservation member,
--       6 reservation ttl ms, 7 key settings version, 8 key budget nano (-1: none), 9 max in flight (0: none),
--       10 account id, 11 key id
-- Returns {code, req_remaining, req_reset_ms, tok_remaining, tok_reset_ms, retry_ms, available_nano,
--          balance_nano, key_spent_nano, key_reserved_nano, in_flight}
-- code: 0 admitted, 1 revoked, 2 account unknown to Redis (load it, retry), 3 larger than the tpm limit,
--       4 request limit, 5 token limit, 6 credit held by in-flight requests, 7 credit exhausted,
--       8 the key's settings changed (reload it, retry), 9 the key's spend unknown to Redis (load, retry),
--       10 budget held by in-flight requests, 11 budget exhausted, 12 too many requests in flight
-- A refusal (codes 3-7 and 10-12) is counted (refusal_counts.lua) under the code the client is answered.
-- (buckets.lua and refusal_counts.lua are prepended: `now`, `refill`, `count_refusal`)
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local want_tokens, want_nano = tonumber(ARGV[3]), tonumber(ARGV[4])
local budget, parallel = tonumber(ARGV[8]), tonumber(ARGV[9])
local function early(code) return {code, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} end

if redis.call('EXISTS', KEYS[4]) == 1 then return early(1) end
local version = redis.call('GET', KEYS[5])
if version and tonumber(version) > tonumber(ARGV[7]) then return early(8) end
local account = redis.call('HMGET', KEYS[2], 'credit', 'spent')
if not account[1] then return early(2) end
local key_spent = redis.call('HGET', KEYS[6], 'spent')
if not key_spent then return early(9) end
key_spent = tonumber(key_spent)

-- Reservations of requests whose gateway died expire; give their credit (and the key's budget) back.
local function expire(holds, totals)
  local stale = redis.call('ZRANGEBYSCORE', holds, '-inf', now)
  if #stale == 0 then return end
  local freed = 0
  for _, member in ipairs(stale) do freed = freed + tonumber(string.match(member, '|(%d+)$')) end
  redis.call('ZREMRANGEBYSCORE', holds, '-inf', now)
  redis.call('HINCRBY', totals, 'reserved', -freed)
end
expire(KEYS[3], KEYS[2])
expire(KEYS[8], KEYS[7])

local bucket = redis.call('HMGET', KEYS[1], 'r', 'rt', 't', 'tt')
local requests = refill(bucket[1], bucket[2], rpm)
local tokens = refill(bucket[3], bucket[4], tpm)
local balance = tonumber(account[1]) - tonumber(account[2] or '0')
local available = balance - tonumber(redis.call('HGET', KEYS[2], 'reserved') or '0')
local key_reserved = tonumber(redis.call('HGET', KEYS[7], 'reserved') or '0')
local in_flight = redis.call('ZCARD', KEYS[8])

local function answer(code, retry_ms)
  return {code, math.floor(math.max(requests, 0)), math.ceil((rpm - requests) * 60000 / rpm),
          math.floor(math.max(tokens, 0)), math.ceil((tpm - tokens) * 60000 / tpm),
          math.ceil(retry_ms), available, balance, key_spent, key_reserved, in_flight}
end

local function refuse(code, retry_ms, answered)
  count_refusal(KEYS[9], KEYS[10], ARGV[10], ARGV[11], answered)
  return answer(code, retry_ms)
end

if want_tokens > tpm then return refuse(3, 0, 'rate_limit_exceeded') end
if parallel > 0 and in_flight >= parallel then return refuse(12, 1000, 'rate_limit_exceeded') end
if requests < 1 then return refuse(4, (1 - requests) * 60000 / rpm, 'rate_limit_exceeded') end
if tokens < want_tokens then
  return refuse(5, (want_tokens - tokens) * 60000 / tpm, 'rate_limit_exceeded')
end
if budget >= 0 and key_spent + key_reserved + want_nano > budget then
  if key_spent + want_nano <= budget then return refuse(10, 1000, 'key_budget_exceeded') end
  return refuse(11, 0, 'key_budget_exceeded')
end
if available < want_nano then
  if balance >= want_nano then return refuse(6, 1000, 'insufficient_funds') end
  return refuse(7, 0, 'insufficient_funds')
end

requests = requests - 1
tokens = tokens - want_tokens
redis.call('HSET', KEYS[1], 'r', requests, 'rt', now, 't', tokens, 'tt', now)
redis.call('PEXPIRE', KEYS[1], 120000)
redis.call('HINCRBY', KEYS[2], 'reserved', ARGV[4])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), ARGV[5])
redis.call('HINCRBY', KEYS[7], 'reserved', ARGV[4])
redis.call('ZADD', KEYS[8], now + tonumber(ARGV[6]), ARGV[5])
available = available - want_nano
key_reserved = key_reserved + want_nano
in_flight = in_flight + 1
return answer(0, 0)
