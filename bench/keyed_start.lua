-- start.lua with an Idempotency-Key, new for every request (a client that sends one
-- with each start, as an IVR that may retry should). wrk gives each thread its own
-- Lua state with the same unseeded random numbers, and each round is a new wrk: the
-- key names the run (the time), the thread and the request, so that no key repeats.
local start = request
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local n = 0
local run = tostring(os.time()) .. "-" .. tostring(os.clock())
request = function()
  n = n + 1
  wrk.headers["Idempotency-Key"] = "bench-" .. run .. "-" .. tostring(tid) .. "-" .. n
  return start()
end
