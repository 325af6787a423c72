#!/bin/bash
# A throwaway PostgreSQL server for a fleet on one machine (README, "Running
# a fleet"): Debian's postgresql 15 (deploy/install-deps.sh), its data in
# DIR/data, listening only on a unix socket in DIR (no TCP port), with the
# role and database `mantissa` and a random password (scram-sha-256).
#
#   eval "$(bash deploy/local-postgres.sh start DIR)"  # sets MANTISSA_DATABASE, PGPASSWORD
#   bash deploy/local-postgres.sh stop DIR             # stops it; rm -rf DIR removes it
#
# `start` prints the two export lines: the URI (without the password) for
# mantissad --database, and PGPASSWORD, where libpq finds the password. As
# root, the server runs as the `postgres` user (it refuses root), and DIR is
# handed to that user.
set -euo pipefail

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}
[ $# -eq 2 ] || usage
command=$1
dir=$2

bin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
[ -x "$bin/pg_ctl" ] || {
  echo "$0: no PostgreSQL server under /usr/lib/postgresql: run deploy/install-deps.sh" >&2
  exit 1
}
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case $command in
  start)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    # The socket's path must fit in a sockaddr_un (107 bytes).
    [ ${#dir} -le 80 ] || { echo "$0: $dir is too long for a unix socket path" >&2; exit 1; }
    [ ! -e "$dir/data" ] || { echo "$0: $dir/data exists: stop and remove it first" >&2; exit 1; }
    if [ "$(id -u)" -eq 0 ]; then
      chown postgres: "$dir"
      runuser -u postgres -- test -x "$dir" ||
        { echo "$0: the postgres user cannot reach $dir (a parent is private)" >&2; exit 1; }
    fi
    password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    (umask 077 && printf '%s\n' "$password" > "$dir/password")
    [ "$(id -u)" -ne 0 ] || chown postgres: "$dir/password"
    as_owner "$bin/initdb" --pgdata="$dir/data" --username=mantissa --pwfile="$dir/password" \
      --auth=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
      { cat "$dir/initdb.log" >&2; exit 1; }
    rm -f "$dir/password"
    # A demo: no TCP, and no fsync (a power cut may lose the last commits).
    as_owner "$bin/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" --wait \
      -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c fsync=off" \
      start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    PGPASSWORD=$password "$bin/createdb" --host="$dir" --username=mantissa mantissa
    echo "export MANTISSA_DATABASE='postgresql://mantissa@/mantissa?host=$dir'"
    echo "export PGPASSWORD='$password'"
    ;;
  stop)
    as_owner "$bin/pg_ctl" --pgdata="$dir/data" --mode=fast --wait stop >/dev/null
    ;;
  *)
    usage
    ;;
esac
