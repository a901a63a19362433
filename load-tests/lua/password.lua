-- POST a password grant for one user (KS_USERNAME, KS_PASSWORD) with the
-- client's HTTP Basic credentials (KS_BASIC). Every request costs one
-- argon2id verification on the server.
dofile(os.getenv("KS_LUA_DIR") .. "/report.lua")
wrk.method = "POST"
wrk.body = "grant_type=password&username=" .. os.getenv("KS_USERNAME")
  .. "&password=" .. os.getenv("KS_PASSWORD")
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. os.getenv("KS_BASIC")
