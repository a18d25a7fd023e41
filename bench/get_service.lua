-- GET one of the BENCH_SERVICES preloaded services (requests made once, in init,
-- so that wrk spends as little of the machine as for replay.lua)
local services = tonumber(os.getenv("BENCH_SERVICES") or "1000")
local requests = {}
init = function(args)
  for i = 1, services do
    requests[i] = wrk.format("GET", "/genesys/1/cs/services/" .. i)
  end
end
request = function()
  return requests[math.random(1, services)]
end
