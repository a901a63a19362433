dofile(os.getenv("KS_LUA_DIR") .. "/report.lua")
