-- a retry of one of the BENCH_SERVICES keyed starts made before the run: the
-- server replays its recorded answer (the same key, path and body)
local services = tonumber(os.getenv("BENCH_SERVICES") or "1000")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local i = math.random(0, services - 1)
  wrk.headers["Idempotency-Key"] = "preload-" .. i
  return wrk.format(nil, "/genesys/1/cs/services/start", nil, string.format(
    '{"customer_id":"cust-%d","service_type":100,"interaction_id":"IX-%d"}', i, i))
end
