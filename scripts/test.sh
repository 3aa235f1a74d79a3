#!/usr/bin/env bash
# Runs Tessera's whole test suite on a fresh Debian machine with the Rust toolchain:
# installs what is missing (PostgreSQL, Python venvs for scim2-tester and schemathesis), starts a throw-away PostgreSQL on loopback, runs
# formatting and lint checks and every test (store tests on SQLite and on PostgreSQL), and stops
# what it started. A PostgreSQL that fails to start fails the run; it is never skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "test.sh: need root (or sudo) to install: $*" >&2; exit 1; fi
}

apt_updated=
need_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return
  step "installing ${missing[*]} from Debian packages"
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

need_packages postgresql python3-venv curl

step "starting a throw-away PostgreSQL"
pg_env=$(scripts/pg-up.sh)
eval "$pg_env"
trap 'scripts/pg-down.sh' EXIT
echo "PostgreSQL at ${TEST_PG_URL}"
export TEST_PG_URL
export TESSERA_TEST_REQUIRE_PG=1

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests (SQLite and PostgreSQL)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

step "SCIM conformance (scim2-tester) on SQLite"
scripts/scim-conformance.sh

step "SCIM conformance (scim2-tester) on PostgreSQL"
psql "$TEST_PG_URL" -qc "DROP DATABASE IF EXISTS tessera_conformance" \
  -c "CREATE DATABASE tessera_conformance ENCODING 'UTF8' LC_CTYPE 'C.UTF-8' LC_COLLATE 'C.UTF-8' TEMPLATE template0"
CONFORMANCE_DATABASE_URL="${TEST_PG_URL%/*}/tessera_conformance" scripts/scim-conformance.sh

step "REST API conformance (schemathesis) on SQLite"
scripts/api-conformance.sh

step "REST API conformance (schemathesis) on PostgreSQL"
psql "$TEST_PG_URL" -qc "DROP DATABASE IF EXISTS tessera_api_conformance" \
  -c "CREATE DATABASE tessera_api_conformance ENCODING 'UTF8' LC_CTYPE 'C.UTF-8' LC_COLLATE 'C.UTF-8' TEMPLATE template0"
CONFORMANCE_DATABASE_URL="${TEST_PG_URL%/*}/tessera_api_conformance" scripts/api-conformance.sh

step "all checks passed"
