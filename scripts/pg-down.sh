#!/usr/bin/env bash
# Stops the cluster started by scripts/pg-up.sh and deletes its directory.
set -euo pipefail
: "${PG_TEST_DIR:?PG_TEST_DIR is not set}" "${PG_TEST_BIN:?PG_TEST_BIN is not set}"
as_owner=()
[ "$(id -u)" = 0 ] && as_owner=(runuser -u postgres --)
"${as_owner[@]}" "$PG_TEST_BIN/pg_ctl" -D "$PG_TEST_DIR/data" -m fast -w stop >/dev/null || true
rm -rf "$PG_TEST_DIR"
