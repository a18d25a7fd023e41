-- start.lua with an Idempotency-Key, new for every request (a client that sends one
-- with each start, as an IVR that may retry should)
local start = request
local n = 0
local prefix = tostring(math.random(1000000000))
request = function()
  n = n + 1
  wrk.headers["Idempotency-Key"] = "bench-" .. prefix .. "-" .. n
  return start()
end
