-- set_active: KEYS[1] record key, KEYS[2] version counter; ARGV[1] channel, ARGV[2] digest hex,
-- ARGV[3] "1" (resume) or "0" (pause). Returns 0 when the record does not exist.
if ARGV[3] ~= '1' and ARGV[3] ~= '0' then return redis.error_reply('ARGV[3] must be 1 or 0') end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local v = redis.call('INCR', KEYS[2])
local state = 'inactive'
if ARGV[3] == '1' then state = 'active' end
redis.call('HSET', KEYS[1], 'v', v, 'active', ARGV[3])
redis.call('PUBLISH', ARGV[1], v .. ' ' .. ARGV[2] .. ' ' .. state)
return v
