-- Runs one Argo CD health check on one object, the way Argo CD runs it (util/lua/lua.go of
-- argoproj/argo-cd: gopher-lua, a Lua 5.1 VM), for tests/argocd_health.rs.
--
--   lua5.1 health_runner.lua HEALTH_LUA OBJECT_LUA
--
-- OBJECT_LUA holds the object as a Lua table constructor (the test converts the YAML). The
-- script runs as a chunk with the global `obj` and only what Argo CD opens for health checks
-- when `resource.customizations.useOpenLibs` is not set: the base library, `package`/`require`,
-- `table`, and an `os` with only `time` and `date`. No `string`, `math`, `io` or `debug`, and
-- strings have no methods (gopher-lua sets the string metatable only when the string library is
-- opened). Argo CD stops a script after one second; so does this runner (one second of CPU
-- time).
--
-- Output on success (exit 0), one item per line: the status, the length of the message in bytes,
-- the message itself, and the lines of HEALTH_LUA that ran, comma-separated. The status and message are what Argo CD makes of the
-- returned value (ExecuteHealthLua): a table's `status` and `message`; a status that is not one
-- of Argo CD's becomes Unknown / "Lua returned an invalid health status"; nil or an empty table
-- give an empty status. Anything Argo CD reports as an error (a runtime error, a non-table
-- result, a non-string status or message) is written to stderr with exit code 1.

local script_path, object_path = arg[1], arg[2]
if script_path == nil or object_path == nil then
  io.stderr:write("usage: lua5.1 health_runner.lua HEALTH_LUA OBJECT_LUA\n")
  os.exit(2)
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

local function fail(message)
  io.stderr:write(tostring(message), "\n")
  os.exit(1)
end

local object_chunk, object_error = loadstring("return " .. read(object_path), "=object")
if object_chunk == nil then
  fail("object: " .. object_error)
end
local object = object_chunk()

local env = {}
for _, name in ipairs({
  "assert", "collectgarbage", "dofile", "error", "getfenv", "getmetatable", "ipairs", "load",
  "loadfile", "loadstring", "module", "newproxy", "next", "pairs", "pcall", "rawequal", "rawget",
  "rawset", "require", "select", "setfenv", "setmetatable", "tonumber", "tostring", "type",
  "unpack", "xpcall", "_VERSION",
}) do
  env[name] = _G[name]
end
env._G = env
env.package = package
env.table = {}
for name, f in pairs(table) do
  env.table[name] = f
end
env.os = { time = os.time, date = os.date }
env.print = function(...)
  local parts = {}
  for i = 1, select("#", ...) do
    parts[#parts + 1] = tostring((select(i, ...)))
  end
  io.stderr:write(table.concat(parts, "\t"), "\n")
end
env.obj = object

local chunk, load_error = loadstring(read(script_path), "=health.lua")
if chunk == nil then
  fail(load_error)
end
setfenv(chunk, env)

local covered = {}
local started = os.clock()
debug.sethook(function(event, line)
  if debug.getinfo(2, "S").source ~= "=health.lua" then
    return
  end
  -- Checked on line events too: a loop that is one jump raises no count event under "l".
  if os.clock() - started > 1 then
    error("the health check ran too long (Argo CD stops a script after one second)", 2)
  end
  if event == "line" then
    covered[line] = true
  end
end, "l", 1000)
getmetatable("").__index = nil
local ok, result = pcall(chunk)
debug.sethook()
if not ok then
  fail(result)
end

local valid = {
  Healthy = true, Progressing = true, Degraded = true, Suspended = true, Missing = true,
  Unknown = true,
}
local status, message = "", ""
if type(result) == "table" then
  if next(result) ~= nil then
    if result.status ~= nil and type(result.status) ~= "string" then
      fail("status is a " .. type(result.status) .. ", not a string")
    end
    if result.message ~= nil and type(result.message) ~= "string" then
      fail("message is a " .. type(result.message) .. ", not a string")
    end
    status, message = result.status or "", result.message or ""
    if not valid[status] then
      status, message = "Unknown", "Lua returned an invalid health status"
    end
  end
elseif result ~= nil then
  fail("expect table output from Lua script, not " .. type(result))
end

local lines = {}
for line in pairs(covered) do
  lines[#lines + 1] = line
end
table.sort(lines)
io.write(status, "\n", #message, "\n", message, "\n", table.concat(lines, ","), "\n")
