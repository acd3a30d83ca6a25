-- delete: KEYS[1] record key, KEYS[2] version counter; ARGV[1] channel, ARGV[2] digest hex.
-- Returns 0 when the record does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local v = redis.call('INCR', KEYS[2])
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], v .. ' ' .. ARGV[2] .. ' deleted')
return v
