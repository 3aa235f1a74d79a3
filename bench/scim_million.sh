#!/usr/bin/env bash
# SCIM lookups at directory scale (issue: SCIM): bulk-loads N users (default 1,000,000) into a
# fresh store, then measures the three lookups Entra and Okta make before provisioning:
#   userName eq "…", externalId eq "…", emails[type eq "work"].value eq "…"
# each with wrk at 8 and 64 connections, counting any answer other than 200 with exactly one
# result as an error.
#
#   bench/scim_million.sh [DURATION_S]                                  # SQLite
#   DATABASE_URL=postgres://... bench/scim_million.sh [DURATION_S]      # PostgreSQL
#
# The users are written with SQL (bench/scim_million_load.<backend>.sql) in one transaction, shaped exactly
# as `POST /Users` stores them (identity row, resource document, folded e-mail row): a bulk
# loader, since a million creates through HTTP would measure the loader rather than lookups.
# Tessera runs pinned to core 0 and wrk to core 1, as in bench/scim_bench.sh.
# Env: N_USERS [1000000], CONNS ["8 64"], OUT_DIR [bench-out/scim-million-...].
# Needs: wrk, curl, python3, taskset (and psql with DATABASE_URL).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
DURATION=${1:-15}
N_USERS=${N_USERS:-1000000}
CONNS=${CONNS:-"8 64"}
backend=sqlite; [ -n "${DATABASE_URL:-}" ] && backend=postgres
OUT_DIR=${OUT_DIR:-$root/bench-out/scim-million-$backend-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT_DIR"
command -v wrk >/dev/null || { echo "scim_million: wrk is not installed (apt-get install wrk)" >&2; exit 1; }

# Without DATABASE_URL: sqlx rebuilds everything when that variable changes.
env -u DATABASE_URL cargo build --release -q -p tessera
bin=$root/target/release/tessera
dir=$(mktemp -d -t tessera-million.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT

if [ -n "${DATABASE_URL:-}" ]; then
  psql "$DATABASE_URL" -qc 'SET client_min_messages = warning; DROP SCHEMA public CASCADE; CREATE SCHEMA public' >/dev/null
fi
export TESSERA_DATABASE_URL=${DATABASE_URL:-} TESSERA_LOG__LEVEL=warn
"$bin" migrate --data-dir "$dir" >/dev/null
token=$("$bin" scim-token create --data-source "Million" --data-dir "$dir" | tail -n 1)

start=$(date +%s)
sql=$(sed "s/:n_users/$N_USERS/g" "bench/scim_million_load.$backend.sql")
if [ -n "${DATABASE_URL:-}" ]; then
  psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -q -c "$sql" >/dev/null
  psql "$DATABASE_URL" -qc 'ANALYZE' >/dev/null
else
  python3 - "$dir/tessera.db" "$sql" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.executescript(sys.argv[2])
db.execute("ANALYZE")
EOF
fi
echo "# loaded $N_USERS users in $(( $(date +%s) - start )) s ($backend)" | tee "$OUT_DIR/results.txt"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
taskset -c 0 "$bin" serve --listen "127.0.0.1:$port" --data-dir "$dir" >"$OUT_DIR/tessera.log" 2>&1 &
pid=$!
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
total=$(curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$port/scim/v2/Users?count=0" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["totalResults"])')
[ "$total" = "$N_USERS" ] || { echo "scim_million: the server sees $total users, expected $N_USERS" >&2; exit 1; }

printf '%-10s %6s %10s %9s %9s %7s\n' lookup conns req/s p50_ms p99_ms errors | tee -a "$OUT_DIR/results.txt"
for kind in userName externalId email; do
  for c in $CONNS; do
    out=$(SCIM_TOKEN=$token N_USERS=$N_USERS LOOKUP=$kind taskset -c 1 \
      wrk -t1 -c"$c" -d"${DURATION}s" --latency --timeout 10s -s bench/lua/scim_million_lookup.lua \
      "http://127.0.0.1:$port/scim/v2" 2>&1) || { echo "$out" >&2; exit 1; }
    echo "$out" > "$OUT_DIR/wrk-$kind-$c.log"
    line=$(grep '^RESULT' <<<"$out")
    val() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
    printf '%-10s %6s %10s %9s %9s %7s\n' "$kind" "$c" "$(val rps)" "$(val p50_ms)" "$(val p99_ms)" "$(val errors)" \
      | tee -a "$OUT_DIR/results.txt"
  done
done
echo "# server RSS: $(( $(awk '/VmRSS/ {print $2}' /proc/$pid/status) / 1024 )) MiB; store: $(du -sh "$dir" | cut -f1)" \
  | tee -a "$OUT_DIR/results.txt"
