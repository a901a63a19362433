-- POST to /auth-token as a backend registered for `auth_token`
-- (KS_BACKEND_BASIC), minting for the public client KS_PUBLIC_CLIENT and a
-- new subject each time: many browsers signing in. Every request stores
-- one row and its audit event.
dofile(os.getenv("KS_LUA_DIR") .. "/report.lua")
local public = os.getenv("KS_PUBLIC_CLIENT")
local headers = {
  ["Content-Type"] = "application/x-www-form-urlencoded",
  ["Authorization"] = "Basic " .. os.getenv("KS_BACKEND_BASIC"),
}
local counter = 0
request = function()
  counter = counter + 1
  local body = "subject=bench-user-" .. counter .. "&public_client_id=" .. public
  return wrk.format("POST", nil, headers, body)
end
