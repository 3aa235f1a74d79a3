#!/usr/bin/env bash
# Grant API throughput (issue: governance model). Sets up one application with R roles and N
# identities (SCIM creates), then drives `POST /api/v1/memberships` with wrk, each request a
# new (role, identity) pair, so every request is a real grant: rules checked, row and audit
# entry written, answered after commit. Any answer other than 201 counts as an error.
#
#   bench/grants_bench.sh [DURATION_S]                                # SQLite
#   DATABASE_URL=postgres://... bench/grants_bench.sh [DURATION_S]    # PostgreSQL
#
# Default configuration (request log on, with bodies). Tessera runs pinned to core 0, wrk to
# core 1. Env: CONNS ["8 64"], N_IDENTITIES [4000], N_ROLES [100], REQUEST_LOG [true]
# (false: the request log off, to see its cost).
# Needs: wrk, curl, python3, taskset (and psql with DATABASE_URL).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${1:-15}
CONNS=${CONNS:-"8 64"}
N_IDENTITIES=${N_IDENTITIES:-4000}
N_ROLES=${N_ROLES:-100}
REQUEST_LOG=${REQUEST_LOG:-true}
TOKEN="bench-admin-token-0123456789abcdefghijklmnop"

command -v wrk >/dev/null || { echo "grants_bench: wrk is not installed (apt-get install wrk)" >&2; exit 1; }
env -u DATABASE_URL cargo build --release -q -p tessera
bin=target/release/tessera
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "tessera grants_bench: ${DURATION}s per run, $N_ROLES roles x $N_IDENTITIES identities, $(nproc) cores, $(date -u +%F)"
echo "request log: $REQUEST_LOG"
echo "database: ${DATABASE_URL:+postgres}${DATABASE_URL:-sqlite (temporary data dir)}" | sed 's#postgres://[^ ]*##'
printf '%-6s %10s %10s %10s %8s\n' conns grants/s p50 p99 errors
for conns in $CONNS; do
  dir=$(mktemp -d -t tessera-grants.XXXXXX)
  port=$(free_port)
  if [ -n "${DATABASE_URL:-}" ]; then psql "$DATABASE_URL" -qc 'SET client_min_messages = warning; DROP SCHEMA public CASCADE; CREATE SCHEMA public' >/dev/null; fi
  export TESSERA_DATABASE_URL="${DATABASE_URL:-}"
  "$bin" migrate --data-dir "$dir" >/dev/null
  scim_token=$("$bin" scim-token create --data-dir "$dir" --data-source bench | tail -n 1)
  TESSERA_BOOTSTRAP_TOKEN=$TOKEN TESSERA_LOG__LEVEL=warn TESSERA_REQUEST_LOG__ENABLED=$REQUEST_LOG \
    taskset -c 0 "$bin" serve --listen "127.0.0.1:$port" --data-dir "$dir" >"$dir/out.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done

  # Set-up over HTTP: identities by SCIM, the application, resource and roles by the API.
  python3 - "$port" "$TOKEN" "$scim_token" "$N_IDENTITIES" "$N_ROLES" "$dir/pairs.lua" <<'PY'
import json, sys, http.client
port, token, scim, n_ids, n_roles, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
c = http.client.HTTPConnection("127.0.0.1", int(port))
def call(method, path, body, bearer, ctype="application/json"):
    c.request(method, path, json.dumps(body), {"Authorization": "Bearer " + bearer, "Content-Type": ctype})
    r = c.getresponse(); data = json.loads(r.read())
    assert r.status == 201, (path, r.status, data)
    return data["id"]
ids = [call("POST", "/scim/v2/Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": f"u{i}@bench.example"}, scim, "application/scim+json") for i in range(n_ids)]
app = call("POST", "/api/v1/applications", {"name": "bench", "connector_kind": "manual"}, token)
res = call("POST", f"/api/v1/applications/{app}/resources", {"name": "r", "resource_type": "app"}, token)
roles = [call("POST", f"/api/v1/resources/{res}/roles", {"name": f"role{i}"}, token) for i in range(n_roles)]
with open(out, "w") as f:
    f.write("ids = {" + ",".join(f'"{i}"' for i in ids) + "}\n")
    f.write("roles = {" + ",".join(f'"{r}"' for r in roles) + "}\n")
PY
  cat > "$dir/grant.lua" <<LUA
dofile("$dir/pairs.lua")
local threads = {}
local counter = 0
function setup(thread) thread:set("tid", #threads); table.insert(threads, thread) end
function init(args) n = tid * 1000000; errors = 0 end
function request()
  local role = roles[(n % #roles) + 1]
  local id = ids[(math.floor(n / #roles) % #ids) + 1]
  n = n + 1
  return wrk.format("POST", "/api/v1/memberships",
    {["Authorization"] = "Bearer $TOKEN", ["Content-Type"] = "application/json"},
    '{"role_id":"' .. role .. '","identity_id":"' .. id .. '"}')
end
function response(status) if status ~= 201 then errors = errors + 1 end end
function done(summary, latency, requests)
  local e = 0
  for _, t in ipairs(threads) do e = e + t:get("errors") end
  io.write(string.format("ERRORS %d\n", e))
end
LUA
  out=$(taskset -c 1 wrk -t2 -c"$conns" -d"${DURATION}s" --latency -s "$dir/grant.lua" "http://127.0.0.1:$port")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errors=$(awk '/^ERRORS/ {print $2}' <<<"$out")
  printf '%-6s %10s %10s %10s %8s\n' "$conns" "$rps" "$p50" "$p99" "$errors"
  kill -TERM "$pid"; wait "$pid" || true
  rm -rf "$dir"
done
