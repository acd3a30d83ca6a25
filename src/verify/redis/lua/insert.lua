-- insert: KEYS[1] record key, KEYS[2] version counter; ARGV[1] channel, ARGV[2] digest hex,
-- ARGV[3] record (JSON), ARGV[4] expiry in Unix milliseconds or "" for none.
local v = redis.call('INCR', KEYS[2])
local state = 'created'
if redis.call('DEL', KEYS[1]) == 1 then state = 'replaced' end
redis.call('HSET', KEYS[1], 'v', v, 'active', '1', 'record', ARGV[3])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'exp', ARGV[4])
  redis.call('PEXPIREAT', KEYS[1], ARGV[4])
end
redis.call('PUBLISH', ARGV[1], v .. ' ' .. ARGV[2] .. ' ' .. state)
return v
