#!/usr/bin/env bash
# HTTP throughput benchmark (issue: foundation). Runs wrk for $DURATION at $CONNECTIONS connections
# against /healthz and against an authenticated no-op route (/api/v1/whoami: a token lookup in
# the store), with request logging on (headers and bodies captured for every surface) and off.
#
#   bench/http_bench.sh                 # SQLite in a temporary data directory
#   DATABASE_URL=postgres://... bench/http_bench.sh   # PostgreSQL (database must exist)
#
# Needs: wrk (apt-get install wrk), curl, python3 (and psql with DATABASE_URL). Builds the release
# binary first. Each case runs on a fresh server and store; the table shows the request-log
# counters read from /metrics one second after the run (rows written so far, rows dropped).
# With DATABASE_URL the database's public schema is dropped and recreated before each case.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-15s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
TOKEN="bench-admin-token-0123456789abcdefghijklmnop"

command -v wrk >/dev/null || { echo "http_bench: wrk is not installed (apt-get install wrk)" >&2; exit 1; }
cargo build --release -q -p tessera
bin=target/release/tessera

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run_case() { # $1 logging on|off, $2 route; a fresh server and store for each case
  local logging=$1 route=$2 dir port pid out rps p50 p99 metrics
  dir=$(mktemp -d -t tessera-bench.XXXXXX)
  port=$(free_port)
  local enabled=true; [ "$logging" = off ] && enabled=false
  if [ -n "${DATABASE_URL:-}" ]; then psql "$DATABASE_URL" -qc 'SET client_min_messages = warning; DROP SCHEMA public CASCADE; CREATE SCHEMA public' >/dev/null; fi
  TESSERA_BOOTSTRAP_TOKEN=$TOKEN \
  TESSERA_LOG__LEVEL=warn \
  TESSERA_REQUEST_LOG__ENABLED=$enabled \
  TESSERA_REQUEST_LOG__INCLUDE_OPS=true \
  TESSERA_REQUEST_LOG__BODIES__OPS=true \
  TESSERA_REQUEST_LOG__BODIES__API=true \
  TESSERA_DATABASE_URL="${DATABASE_URL:-}" \
    "$bin" serve --listen "127.0.0.1:$port" --data-dir "$dir" >"$dir/out.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
    -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port$route")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  sleep 1
  metrics=$(curl -s "http://127.0.0.1:$port/metrics")
  printf '%-8s %-16s %12s %10s %10s %12s %10s\n' "$logging" "$route" "$rps" "$p50" "$p99" \
    "$(awk '/^tessera_request_log_written_total/ {print $2}' <<<"$metrics")" \
    "$(awk '/^tessera_request_log_dropped_total/ {print $2}' <<<"$metrics")"
  kill -TERM "$pid"; wait "$pid" || true
  rm -rf "$dir"
}

echo "tessera http_bench: wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $(nproc) cores, $(date -u +%F)"
echo "database: ${DATABASE_URL:+postgres}${DATABASE_URL:-sqlite (temporary data dir)}" | sed 's#postgres://[^ ]*##'
printf '%-8s %-16s %12s %10s %10s %12s %10s\n' logging route req/s p50 p99 log-written dropped
for route in /healthz /api/v1/whoami; do
  run_case off "$route"
  run_case on "$route"
done
