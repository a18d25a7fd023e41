-- every request carries the API key of BENCH_KEY and, when BENCH_TENANT is set, names
-- that tenant in ContactCenterId (joined before start.lua or query.lua)
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
local tenant = os.getenv("BENCH_TENANT")
if tenant ~= nil and tenant ~= "" then
  wrk.headers["ContactCenterId"] = tenant
end
