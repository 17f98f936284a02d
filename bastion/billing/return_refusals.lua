-- Tallies taken for a database write that failed, given back (added to what came in meanwhile).
-- KEYS: 1 the tallies hash. ARGV: pairs of tally (day|account|key|code), count, last ms.
for i = 1, #ARGV, 3 do
  redis.call('HINCRBY', KEYS[1], 'c|' .. ARGV[i], ARGV[i + 1])
  local last = tonumber(redis.call('HGET', KEYS[1], 't|' .. ARGV[i]) or '0')
  if tonumber(ARGV[i + 2]) > last then redis.call('HSET', KEYS[1], 't|' .. ARGV[i], ARGV[i + 2]) end
end
return #ARGV / 3
