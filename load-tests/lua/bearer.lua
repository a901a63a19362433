-- GET with one bearer token (KS_TOKEN), or a different token per request
-- from a file of tokens, one per line (KS_TOKENS).
dofile(os.getenv("KS_LUA_DIR") .. "/report.lua")
local tokens = {}
local file = os.getenv("KS_TOKENS")
if file then
  for line in io.lines(file) do tokens[#tokens + 1] = line end
end
local single = os.getenv("KS_TOKEN")
local counter = 0
request = function()
  counter = counter + 1
  local token = single or tokens[(counter % #tokens) + 1]
  return wrk.format("GET", nil, { ["Authorization"] = "Bearer " .. token })
end
