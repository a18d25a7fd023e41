-- a retry of one of the BENCH_SERVICES keyed starts made before the run: the
-- server replays its recorded answer (the same key, path and body). Requests are
-- made once, in init, as in get_service.lua.
local services = tonumber(os.getenv("BENCH_SERVICES") or "1000")
local requests = {}
init = function(args)
  for i = 0, services - 1 do
    requests[i + 1] = wrk.format("POST", "/genesys/1/cs/services/start",
      {["Content-Type"] = "application/json", ["Idempotency-Key"] = "preload-" .. i},
      string.format('{"customer_id":"cust-%d","service_type":100,"interaction_id":"IX-%d"}',
                    i, i))
  end
end
request = function()
  return requests[math.random(1, services)]
end
