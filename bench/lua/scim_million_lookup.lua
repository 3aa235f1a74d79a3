-- wrk script of bench/scim_million.sh: random lookups among the bulk-loaded users.
-- Env: SCIM_TOKEN, N_USERS, LOOKUP (userName | externalId | email).
-- ok = 200 with exactly one result (`"totalResults":1`); anything else is an error.
local token = os.getenv("SCIM_TOKEN")
local n_users = tonumber(os.getenv("N_USERS"))
local lookup = os.getenv("LOOKUP")
ok, bad = 0, 0 -- globals: done() reads them from each thread
local threads = {}

local function encode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

local filters = {
  userName = function(n) return 'userName eq "user' .. n .. '@example.org"' end,
  externalId = function(n) return 'externalId eq "ext-' .. n .. '"' end,
  email = function(n) return 'emails[type eq "work"].value eq "user' .. n .. '@example.org"' end,
}
local filter = assert(filters[lookup], "LOOKUP must be userName, externalId or email")

function setup(thread)
  threads[#threads + 1] = thread
end

function init()
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end

function request()
  local n = math.random(n_users)
  return wrk.format("GET", wrk.path .. "/Users?filter=" .. encode(filter(n)), {
    ["Authorization"] = "Bearer " .. token,
    ["Accept"] = "application/scim+json",
  })
end

function response(status, headers, body)
  if status == 200 and body:find('"totalResults":1[,}%s]') then
    ok = ok + 1
  else
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local good, wrong = 0, 0
  for _, t in ipairs(threads) do
    good = good + t:get("ok")
    wrong = wrong + t:get("bad")
  end
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format("RESULT rps=%.1f p50_ms=%.2f p99_ms=%.2f errors=%d ok=%d\n",
    summary.requests / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    wrong + e.connect + e.read + e.write + e.timeout, good))
end
