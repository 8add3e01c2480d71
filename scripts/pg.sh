# Sourced by scripts/test: start and stop a throwaway PostgreSQL cluster from the installed
# binaries. PostgreSQL refuses to run as root, so as root the cluster runs as `postgres`.

pg_bindir() {
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir; return
  fi
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] && { echo "$dir"; return; }
  done
  return 1
}

pg_install_if_missing() {
  pg_bindir >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing PostgreSQL with apt-get" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  pg_bindir >/dev/null 2>&1
}

pg_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# pg_start DIR: init and start a cluster in DIR; sets PG_PORT, PG_URL, PG_DIR.
pg_start() {
  local bindir run_as=()
  bindir=$(pg_bindir) || { echo "PostgreSQL binaries not found" >&2; return 1; }
  PG_DIR=$1
  PG_PORT=$(pg_free_port)
  mkdir -p "$PG_DIR"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$PG_DIR"
    chmod 700 "$PG_DIR"
    run_as=(runuser -u postgres --)
  fi
  "${run_as[@]}" "$bindir/initdb" -D "$PG_DIR/data" -U idp --auth=trust -E UTF8 --no-sync >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; return 1; }
  "${run_as[@]}" "$bindir/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
    -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
    start >/dev/null || { cat "$PG_DIR/server.log" >&2; return 1; }
  "$bindir/createdb" -h 127.0.0.1 -p "$PG_PORT" -U idp idp_test
  PG_URL="postgresql+asyncpg://idp@127.0.0.1:$PG_PORT/idp_test"
  export PG_DIR PG_PORT PG_URL PG_BINDIR="$bindir"
}

pg_stop() {
  [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR/data" ] || return 0
  local run_as=()
  [ "$(id -u)" = 0 ] && run_as=(runuser -u postgres --)
  "${run_as[@]}" "$(pg_bindir)/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}
