-- Loads a key's spend in one period from the ledger's figure, unless Redis has it already.
-- KEYS: 1 the key's spend hash for the period. ARGV: 1 spent nano, 2 expiry (epoch ms; 0: never)
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'spent', ARGV[1])
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIREAT', KEYS[1], ARGV[2]) end
return 1
