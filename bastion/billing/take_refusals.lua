-- The refusal tallies of a slot group, taken for the database: returned and removed at once.
-- KEYS: 1 the tallies hash. Returns HGETALL's flat list (c|day|account|key|code -> count, t|... -> ms).
local tallies = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return tallies
