-- Loads an account into Redis from the database's figures, or updates its credit after a top-up.
-- KEYS: 1 account hash. ARGV: 1 credit nano, 2 credit version, 3 usage nano (only used on first load)
-- A newer version of the credit total replaces an older one; spent is kept once Redis has it.
local version = redis.call('HGET', KEYS[1], 'version')
if not version then
  redis.call('HSET', KEYS[1], 'credit', ARGV[1], 'version', ARGV[2], 'spent', ARGV[3])
  return 1
end
if tonumber(ARGV[2]) > tonumber(version) then
  redis.call('HSET', KEYS[1], 'credit', ARGV[1], 'version', ARGV[2])
  return 1
end
return 0
