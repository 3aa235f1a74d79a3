#!/usr/bin/env bash
# Starts a throw-away PostgreSQL cluster on 127.0.0.1 for the test suite (no Docker, no systemd).
# Prints shell `export` lines: eval "$(scripts/pg-up.sh)". Stop it with scripts/pg-down.sh.
# Port: $PG_TEST_PORT, or the first free one from 54329 up.
set -euo pipefail

bin_dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bin_dir" ] || [ ! -x "$bin_dir/initdb" ]; then
  echo "pg-up: PostgreSQL server binaries not found (apt-get install postgresql)" >&2
  exit 1
fi

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port="${PG_TEST_PORT:-}"
if [ -z "$port" ]; then
  for p in $(seq 54329 54399); do
    if port_free "$p"; then port=$p; break; fi
  done
fi
[ -n "$port" ] || { echo "pg-up: no free port in 54329-54399" >&2; exit 1; }

dir=$(mktemp -d -t tessera-pg.XXXXXX)
as_owner=()
if [ "$(id -u)" = 0 ]; then
  # initdb and postgres refuse to run as root.
  chown postgres:postgres "$dir"
  as_owner=(runuser -u postgres --)
fi
if ! "${as_owner[@]}" "$bin_dir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync \
    >"$dir/initdb.log" 2>&1; then
  cat "$dir/initdb.log" >&2
  exit 1
fi
# Durability settings off: this cluster holds test data only and is deleted afterwards.
if ! "${as_owner[@]}" "$bin_dir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
    start >/dev/null; then
  cat "$dir/server.log" >&2
  exit 1
fi
echo "export PG_TEST_DIR=$dir PG_TEST_BIN=$bin_dir"
echo "export TEST_PG_URL=postgres://postgres@127.0.0.1:$port/postgres"
