-- Shared by the scripts that read rate-limit buckets (prepended when they are loaded).
-- A bucket refills continuously: `capacity` per minute, never above `capacity`.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function refill(level, at, capacity)
  if not level then return capacity end
  return math.min(capacity, tonumber(level) + (now - tonumber(at)) * capacity / 60000)
end
