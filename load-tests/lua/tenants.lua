-- client_credentials for a random tenant per request. KS_TENANTS is a file
-- of lines `tenant base64(client_id:client_secret)`.
dofile(os.getenv("KS_LUA_DIR") .. "/report.lua")
local tenants = {}
for line in io.lines(os.getenv("KS_TENANTS")) do
  local tenant, basic = line:match("^(%S+)%s+(%S+)$")
  if tenant then tenants[#tenants + 1] = { "/" .. tenant .. "/oauth2/token", "Basic " .. basic } end
end
math.randomseed(os.time())
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
request = function()
  local pick = tenants[math.random(#tenants)]
  headers["Authorization"] = pick[2]
  return wrk.format("POST", pick[1], headers, "grant_type=client_credentials")
end
