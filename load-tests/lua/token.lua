-- POST a client_credentials request authenticated with HTTP Basic; the
-- credentials come from the environment (KS_BASIC = base64 of id:secret).
dofile(os.getenv("KS_LUA_DIR") .. "/report.lua")
wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. os.getenv("KS_BASIC")
