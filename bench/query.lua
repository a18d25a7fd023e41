-- GET a random preloaded customer's services (about ten each)
local customers = tonumber(os.getenv("BENCH_CUSTOMERS") or "100")
request = function()
  local c = math.random(0, customers - 1)
  return wrk.format("GET", "/genesys/1/cs/customers/cust-" .. c .. "/services")
end
