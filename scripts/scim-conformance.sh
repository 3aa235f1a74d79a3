#!/usr/bin/env bash
# SCIM conformance: runs scim2-tester (PyPI, pinned) against a real Tessera on a fresh SQLite
# store (or, with CONFORMANCE_DATABASE_URL, on that empty PostgreSQL database) and fails unless
# every result is SUCCESS and there are at least MIN_RESULTS of them.
# Installs scim2-tester into a virtualenv under target/ on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

MIN_RESULTS=${MIN_RESULTS:-135}
# Test-harness variables share the TESSERA_ prefix; the server refuses unknown settings.
unset TESSERA_TEST_REQUIRE_PG
VENV=target/conformance-venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import scim2_tester, httpx2' 2>/dev/null; then
  echo "installing scim2-tester into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "scim2-tester[httpx2]==0.5.2"
fi

cargo build --locked --quiet -p tessera
data_dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$data_dir"
}
trap cleanup EXIT

export TESSERA_DATA_DIR="$data_dir"
if [ -n "${CONFORMANCE_DATABASE_URL:-}" ]; then
  export TESSERA_DATABASE_URL="$CONFORMANCE_DATABASE_URL"
  echo "scim2-tester against Tessera on PostgreSQL"
else
  echo "scim2-tester against Tessera on SQLite"
fi
target/debug/tessera migrate >/dev/null
token=$(target/debug/tessera scim-token create --data-source "scim2-tester" | tail -n 1)
target/debug/tessera serve --listen "127.0.0.1:$port" >"$data_dir/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

if ! "$VENV/bin/python" scripts/conformance/run_scim2_tester.py "http://127.0.0.1:$port/scim/v2" "$token" "$MIN_RESULTS"; then
  echo "--- server log (last 50 lines) ---"
  tail -n 50 "$data_dir/server.log"
  exit 1
fi
