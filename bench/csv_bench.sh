#!/usr/bin/env bash
# CSV upload benchmark (issue: governance model): a CSV data source user list and a CSV
# application member list, each of N rows, uploaded first to an empty store (the initial load)
# and then again with 1% of rows changed (the measured case: goal under 5 s end to end and a
# server peak RSS under 200 MB). The server is restarted on the same store before every
# upload, so each peak RSS (VmHWM) is that upload's own, not memory the allocator kept from
# an earlier one.
#
#   bench/csv_bench.sh                               # SQLite, N=100000
#   DATABASE_URL=postgres://... bench/csv_bench.sh   # PostgreSQL
#
# Env: N [100000]. Needs: curl, python3 (and psql with DATABASE_URL).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-100000}
TOKEN="bench-admin-token-0123456789abcdefghijklmnop"
env -u DATABASE_URL cargo build --release -q -p tessera
bin=target/release/tessera
dir=$(mktemp -d -t tessera-csv.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
if [ -n "${DATABASE_URL:-}" ]; then psql "$DATABASE_URL" -qc 'SET client_min_messages = warning; DROP SCHEMA public CASCADE; CREATE SCHEMA public' >/dev/null; fi
pid=
start_server() {
  TESSERA_DATABASE_URL="${DATABASE_URL:-}" TESSERA_BOOTSTRAP_TOKEN=$TOKEN TESSERA_LOG__LEVEL=warn \
    "$bin" serve --listen "127.0.0.1:$port" --data-dir "$dir" >>"$dir/out.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
}
stop_server() { kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; }
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
start_server
api="http://127.0.0.1:$port/api/v1"
auth=(-H "Authorization: Bearer $TOKEN")
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

python3 - "$dir" "$N" <<'PY'
import random, sys
d, n = sys.argv[1], int(sys.argv[2])
random.seed(7)
depts = ["Ops", "Lab", "Sales", "Finance", "IT"]
users = [(f"user{i:06d}", f"user{i:06d}@corp.example", random.choice(depts)) for i in range(n)]
def write_users(path, rows):
    with open(path, "w") as f:
        f.write("user_name,email,department,manager\n")
        for u, e, dep in rows:
            num = int(u[-6:])
            mgr = "" if u.startswith("user") and num < 100 else f"user{num % 100:06d}@corp.example"
            f.write(f"{u},{e},{dep},{mgr}\n")
write_users(f"{d}/users0.csv", users)
changed = list(users)
k = n // 100
for i in random.sample(range(100, n), k // 2):            # moves: department changes
    u, e, dep = changed[i]; changed[i] = (u, e, "Moved")
drop = set(random.sample(range(100, n), k // 4))           # leavers
changed = [r for i, r in enumerate(changed) if i not in drop]
changed += [(f"new{i:06d}", f"new{i:06d}@corp.example", "Ops") for i in range(k // 4)]  # joiners
write_users(f"{d}/users1.csv", changed)
roles = [f"role{r}" for r in range(10)]
members = [(u, roles[i % 10], "" if i % 3 else "2031-12-31") for i, (u, _, _) in enumerate(users)]
def write_members(path, rows):
    with open(path, "w") as f:
        f.write("user,role,end_date\n")
        for u, r, e in rows:
            f.write(f"{u},{r},{e}\n")
write_members(f"{d}/members0.csv", members)
m = list(members)
for i in random.sample(range(n), k // 2):                  # end dates changed
    u, r, e = m[i]; m[i] = (u, r, "2032-06-30")
gone = set(random.sample(range(n), k // 4))                # removed
m = [r for i, r in enumerate(m) if i not in gone]
m += [(f"user{i:06d}", "role0" if i % 10 else "role1", "") for i in random.sample(range(n), k // 4)]  # added
seen = set(); out = []
for row in m:
    if (row[0], row[1]) not in seen:
        seen.add((row[0], row[1])); out.append(row)
write_members(f"{d}/members1.csv", out)
PY

upload() { # $1 label, $2 url, $3 file → prints the label, seconds, peak MB and the counts
  local label=$1; shift
  stop_server; start_server
  local start end out sampler
  # The peak of anonymous memory (heap), sampled every 20 ms: VmHWM also counts the pages of
  # the SQLite file mapped into memory (mmap_size), which are page cache, not the upload's.
  ( max=0; while kill -0 "$pid" 2>/dev/null; do
      v=$(awk '/RssAnon/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
      [ "${v:-0}" -gt "$max" ] && max=$v && echo "$max" > "$dir/anon.peak"
      sleep 0.02; done ) & sampler=$!
  start=$(date +%s.%N)
  out=$(curl -sS -X PUT "${auth[@]}" -H 'Content-Type: text/csv' --data-binary "@$2" "$1")
  end=$(date +%s.%N)
  sleep 0.1; kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  local peak anon; peak=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' /proc/$pid/status)
  anon=$(awk '{printf "%.0f", $1/1024}' "$dir/anon.peak")
  printf '%-38s %7.2f s  heap %4s MB  rss %4s MB  %s\n' "$label" "$(echo "$end - $start" | bc)" "$anon" "$peak" \
    "$(python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps(d.get("applied", d.get("counts"))))' <<<"$out")"
}

source_id=$(curl -sS "${auth[@]}" -H 'Content-Type: application/json' "$api/data-sources" \
  -d '{"name":"HR export","kind":"csv","matching_key":"email"}' | json '["id"]')
app_id=$(curl -sS "${auth[@]}" -H 'Content-Type: application/json' "$api/applications" \
  -d '{"name":"Legacy ERP","connector_kind":"csv"}' | json '["id"]')
res_id=$(curl -sS "${auth[@]}" -H 'Content-Type: application/json' "$api/applications/$app_id/resources" \
  -d '{"name":"ERP","resource_type":"app"}' | json '["id"]')
for r in $(seq 0 9); do
  curl -sS "${auth[@]}" -H 'Content-Type: application/json' "$api/resources/$res_id/roles" -d "{\"name\":\"role$r\"}" >/dev/null
done

echo "tessera csv_bench: N=$N, $(nproc) cores, $(date -u +%F), database: ${DATABASE_URL:+postgres}${DATABASE_URL:-sqlite}" | sed 's#postgres://[^ ,]*##'
upload "data source users, initial load" "$api/data-sources/$source_id/users" "$dir/users0.csv"
upload "data source users, 1% changed" "$api/data-sources/$source_id/users" "$dir/users1.csv"
upload "data source users, same list again" "$api/data-sources/$source_id/users" "$dir/users1.csv"
upload "application members, initial load" "$api/applications/$app_id/members" "$dir/members0.csv"
upload "application members, 1% changed" "$api/applications/$app_id/members" "$dir/members1.csv"
upload "application members, same list again" "$api/applications/$app_id/members" "$dir/members1.csv"
echo "file sizes: $(du -h "$dir/users1.csv" | cut -f1) users, $(du -h "$dir/members1.csv" | cut -f1) members"
