#!/usr/bin/env bash
# SCIM load benchmark of Tessera (issue: SCIM), with the shared harness `scim_bench.sh`
# (Entra-style traffic through wrk, every wrong answer counted; see its README).
#
#   bench/scim_bench.sh [DURATION_S]                        # Tessera on SQLite
#   DATABASE_URL=postgres://... bench/scim_bench.sh [DURATION_S]   # on PostgreSQL
#   PEER=1 bench/scim_bench.sh [DURATION_S]                 # the scim2-server peer, then Tessera
#
# Tessera (release build, default configuration: request log on, with bodies) runs pinned to
# core 0 on a fresh store; wrk runs on core 1 as the harness does. With DATABASE_URL the
# database's public schema is dropped and recreated first. PEER=1 runs the harness's
# `scim_compare.sh` with the peer (scim2-server under uvicorn, its fastest set-up) as A and
# Tessera as B: A, B, A again, with ratios.
#
# Env: SCIM_HARNESS [../shared/bench] (the directory holding scim_bench.sh), PEER_MODE
#      [uvicorn], OUT_DIR [bench-out/...], and every knob of the harness (N_USERS, CONNS,
#      SCENARIOS, ...).
# Needs: wrk, curl, python3, taskset (and psql with DATABASE_URL).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

DURATION=${1:-15}
HARNESS=$(cd "${SCIM_HARNESS:-$root/../shared/bench}" && pwd)
[ -x "$HARNESS/scim_bench.sh" ] || { echo "scim_bench: no harness at $HARNESS (set SCIM_HARNESS)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "scim_bench: wrk is not installed (apt-get install wrk)" >&2; exit 1; }

# Without DATABASE_URL: sqlx rebuilds everything when that variable changes.
env -u DATABASE_URL cargo build --release -q -p tessera
bin=$root/target/release/tessera
backend=sqlite; [ -n "${DATABASE_URL:-}" ] && backend=postgres
stamp=$(date +%Y%m%d-%H%M%S)
export OUT_DIR=${OUT_DIR:-$root/bench-out/scim-$backend-$stamp}
mkdir -p "$OUT_DIR"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

dir=$(mktemp -d -t tessera-scim-bench.XXXXXX)
if [ -n "${DATABASE_URL:-}" ]; then
  psql "$DATABASE_URL" -qc 'SET client_min_messages = warning; DROP SCHEMA public CASCADE; CREATE SCHEMA public' >/dev/null
fi
export TESSERA_DATABASE_URL=${DATABASE_URL:-} TESSERA_LOG__LEVEL=warn
"$bin" migrate --data-dir "$dir" >/dev/null
token=$("$bin" scim-token create --data-source "SCIM benchmark" --data-dir "$dir" | tail -n 1)
port=$(free_port)
taskset -c 0 "$bin" serve --listen "127.0.0.1:$port" --data-dir "$dir" >"$OUT_DIR/tessera.log" 2>&1 &
tessera_pid=$!
pids+=("$tessera_pid")
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
tessera_url=http://127.0.0.1:$port/scim/v2
label="tessera ($backend, release, pinned to core 0)"

if [ "${PEER:-0}" = 1 ]; then
  peer_port=$(free_port)
  peer=$(SERVER_CPUS=0 "$HARNESS/peers/start_scim2_server.sh" "${PEER_MODE:-uvicorn}" "$peer_port" t0k3n)
  peer_pid=$(sed -n 's/.*WORK_PID=\([0-9]*\).*/\1/p' <<<"$peer")
  pids+=("$(sed -n 's/^PID=\([0-9]*\).*/\1/p' <<<"$peer")")
  LABEL_A="scim2-server (${PEER_MODE:-uvicorn})" PID_A=$peer_pid LABEL_B=$label PID_B=$tessera_pid \
    "$HARNESS/scim_compare.sh" "http://127.0.0.1:$peer_port/v2" t0k3n "$tessera_url" "$token" "$DURATION"
else
  SERVER_PID=$tessera_pid LABEL=$label "$HARNESS/scim_bench.sh" "$tessera_url" "$token" "$DURATION"
fi
echo "tessera store size: $(du -sh "$dir" | cut -f1) ($backend; data dir $dir)"
rm -rf "$dir"
