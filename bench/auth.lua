-- every request carries the API key of BENCH_KEY (joined before start.lua or query.lua)
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
