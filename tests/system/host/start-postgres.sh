#!/usr/bin/env bash
# Start a PostgreSQL 15 server for the catalogue contract tests, on a machine without systemd
# (CI sandboxes, containers). Idempotent: a server that already answers is left alone.
# Tests connect with: postgres://snapbot@127.0.0.1:55432/snapbot
#
# Why it looks like this:
# - A cluster of our own, not the Debian `main` one: pg_ctlcluster/systemd may be unavailable,
#   and tests must never touch (or depend on) a database someone else runs on the machine.
# - Port 55432 and a socket directory inside the cluster dir: no clash with a system cluster on
#   5432, and no dependency on /run/postgresql surviving a container restart.
# - Trust authentication: the server only listens on loopback of a throwaway test machine, and
#   tests then need no password plumbing.
# - Durability settings stay at their defaults (fsync on): snapbot's catalogue is its
#   crash-surviving lock, so the tests should run against the behaviour production has.
# - The snapbot role may create databases: each contract test gets a fresh database and drops
#   it afterwards, so tests cannot see each other's rows.
set -euo pipefail

PGBIN=/usr/lib/postgresql/15/bin
BASE=/var/tmp/snapbot-postgres
PGDATA=$BASE/data
LOG=$BASE/server.log
HOST=127.0.0.1
PORT=55432
DB_USER=snapbot
DB_NAME=snapbot

# The version's own binaries, not Debian's pg_wrapper, which picks a version and cluster from
# the environment and ~/.postgresqlrc.
if [ ! -x "$PGBIN/pg_ctl" ]; then
  echo "PostgreSQL 15 is not installed ($PGBIN/pg_ctl missing): apt-get install postgresql" >&2
  exit 1
fi

# Everything server-side runs as `postgres`: initdb and the postmaster refuse to run as root.
as_postgres() { runuser -u postgres -- "$@"; }

# psql over TCP as the superuser; -X so a developer's ~/.psqlrc cannot change the output.
admin_psql() {
  "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$HOST" -p "$PORT" -U postgres -d postgres "$@"
}

# -U postgres: without it the probe logs "role root does not exist" on every run.
ready() { "$PGBIN/pg_isready" -q -h "$HOST" -p "$PORT" -U postgres; }

app_ready() {
  "$PGBIN/psql" -X -q -At -h "$HOST" -p "$PORT" -U "$DB_USER" -d "$DB_NAME" -c 'select 1' >/dev/null 2>&1
}

ensure_role_and_database() {
  # CREATE DATABASE cannot run inside a DO block or transaction, hence check-then-create.
  admin_psql <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
    CREATE ROLE $DB_USER LOGIN CREATEDB;
  ELSE
    ALTER ROLE $DB_USER LOGIN CREATEDB;
  END IF;
END
\$\$;
SQL
  if [ "$(admin_psql -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != 1 ]; then
    admin_psql -c "CREATE DATABASE $DB_NAME OWNER $DB_USER"
  fi
}

# Fast path for the second and later runs: server up, role and database in place.
if ready && app_ready; then
  exit 0
fi

# Creating the cluster directory and switching to `postgres` need root (CI runs as root).
[ "$(id -u)" -eq 0 ] || exec sudo -- bash "$0" "$@"

mkdir -p "$BASE"
chown postgres:postgres "$BASE"
chmod 700 "$BASE"

if [ ! -f "$PGDATA/PG_VERSION" ]; then
  # Build the cluster aside and move it in only once configured, so an interrupted run never
  # leaves a half-made cluster that later runs would mistake for a good one.
  rm -rf "$PGDATA.new"
  as_postgres "$PGBIN/initdb" -D "$PGDATA.new" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=trust >"$BASE/initdb.log" 2>&1 || {
    cat "$BASE/initdb.log" >&2
    exit 1
  }
  # In postgresql.conf rather than pg_ctl -o, so a developer's plain `pg_ctl start` matches.
  as_postgres tee -a "$PGDATA.new/postgresql.conf" >/dev/null <<CONF

# snapbot test cluster (tests/system/host/start-postgres.sh)
listen_addresses = '$HOST'
port = $PORT
unix_socket_directories = '$BASE'
CONF
  mv "$PGDATA.new" "$PGDATA"
fi

if ! ready; then
  pid=$(head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-D $PGDATA"; then
    # Our postmaster runs but does not answer yet: most likely crash recovery. Give it time,
    # then restart it rather than fail a CI run on a hung server.
    for _ in $(seq 1 60); do
      ready && break
      sleep 0.5
    done
    ready || as_postgres "$PGBIN/pg_ctl" stop -D "$PGDATA" -m fast -w >/dev/null 2>&1 || true
  elif [ -n "$pid" ]; then
    # Left by a server that died with its machine or container. Its PID may now belong to an
    # unrelated process, which would make PostgreSQL refuse to start (and pg_ctl stop signal
    # that process), so the lock files go.
    rm -f "$PGDATA/postmaster.pid" "$BASE/.s.PGSQL.$PORT.lock"
  fi
  if ! ready; then
    # -w: return only once connections are accepted (or fail), so the next step cannot race it.
    as_postgres "$PGBIN/pg_ctl" start -D "$PGDATA" -l "$LOG" -w -t 120 >/dev/null || {
      echo "PostgreSQL did not start on $HOST:$PORT; last lines of $LOG:" >&2
      tail -n 20 "$LOG" >&2 || true
      exit 1
    }
  fi
fi

ensure_role_and_database
if ! app_ready; then
  echo "PostgreSQL answers on $HOST:$PORT but $DB_USER cannot connect to $DB_NAME" >&2
  exit 1
fi
echo "PostgreSQL is up at postgres://$DB_USER@$HOST:$PORT/$DB_NAME" >&2
