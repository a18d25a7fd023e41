-- POST /services/start with a new customer each time and a few hundred bytes of data
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local pad = string.rep("x", 200)
local n = 0
request = function()
  n = n + 1
  local body = string.format(
    '{"customer_id":"new-%d-%d","contact_key":"408-%d","service_type":100,' ..
    '"interaction_id":"bench","media_type":1,"coupon":{"coupon_name":"DISCOUNTCODE15"},' ..
    '"notes":"%s"}', math.random(1000000000), n, n, pad)
  return wrk.format(nil, "/genesys/1/cs/services/start", nil, body)
end
