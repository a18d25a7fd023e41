-- GET one of the BENCH_SERVICES preloaded services
local services = tonumber(os.getenv("BENCH_SERVICES") or "1000")
request = function()
  return wrk.format("GET", "/genesys/1/cs/services/" .. math.random(1, services))
end
