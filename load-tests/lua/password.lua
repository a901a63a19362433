-- POST a password grant with the client's HTTP Basic credentials
-- (KS_BASIC), cycling through KS_USERS users named KS_USERNAME-0, -1, …
-- that share the password KS_PASSWORD: many people logging in, not one
-- account hammered (that is throttled per user by design). Every request
-- costs one argon2id verification on the server.
dofile(os.getenv("KS_LUA_DIR") .. "/report.lua")
local users = tonumber(os.getenv("KS_USERS"))
local prefix = os.getenv("KS_USERNAME")
local password = os.getenv("KS_PASSWORD")
local headers = {
  ["Content-Type"] = "application/x-www-form-urlencoded",
  ["Authorization"] = "Basic " .. os.getenv("KS_BASIC"),
}
local counter = 0
request = function()
  counter = counter + 1
  local body = "grant_type=password&username=" .. prefix .. "-" .. (counter % users)
    .. "&password=" .. password
  return wrk.format("POST", nil, headers, body)
end
