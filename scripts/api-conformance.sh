#!/usr/bin/env bash
# REST API conformance: runs schemathesis (PyPI, pinned) against a real Tessera on a fresh
# SQLite store (or, with CONFORMANCE_DATABASE_URL, on that empty PostgreSQL database), driven
# by the server's own /api/v1/openapi.json. Fails on any 5xx and on any response that breaks
# the document (status, content type, headers, schema), or on bad input that is accepted.
# Installs schemathesis into a virtualenv under target/ on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

# Test cases per operation; the seed makes failures reproducible.
MAX_EXAMPLES=${MAX_EXAMPLES:-60}
SEED=${SEED:-20261123}
unset TESSERA_TEST_REQUIRE_PG
VENV=target/schemathesis-venv
if [ ! -x "$VENV/bin/schemathesis" ]; then
  echo "installing schemathesis into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==4.32.5"
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
  echo "schemathesis against Tessera on PostgreSQL"
else
  echo "schemathesis against Tessera on SQLite"
fi
target/debug/tessera migrate >/dev/null
token=$(target/debug/tessera admin-token create --label schemathesis | tail -n 1)
target/debug/tessera serve --listen "127.0.0.1:$port" >"$data_dir/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

# positive_data_acceptance is left out: valid-looking ids name nothing in an empty store, so
# correct 404s and 422s would count as failures. Everything else runs.
if ! "$VENV/bin/schemathesis" run "http://127.0.0.1:$port/api/v1/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks all --exclude-checks positive_data_acceptance \
    --phases examples,coverage,fuzzing,stateful \
    --max-examples "$MAX_EXAMPLES" --seed "$SEED" --workers 2 \
    --generation-database none --no-color --warnings off; then
  echo "--- server log (last 50 lines) ---"
  tail -n 50 "$data_dir/server.log"
  exit 1
fi
