-- after start.lua and report.lua: keep the id of every service the server
-- acknowledged (201) and, when done, write them one a line to $BENCH_IDS
ids = {}
local threads = {}
setup = function(thread)
  table.insert(threads, thread)
end
response = function(status, headers, body)
  if status == 201 then
    local id = string.match(body, '"service_id"%s*:%s*(%d+)')
    if id then ids[#ids + 1] = id end
  end
end
local report = done
done = function(summary, latency, requests)
  report(summary, latency, requests)
  local out = assert(io.open(os.getenv("BENCH_IDS"), "w"))
  for _, thread in ipairs(threads) do
    for _, id in ipairs(thread:get("ids")) do out:write(id, "\n") end
  end
  out:close()
end
