#!/usr/bin/env bash
# Start the team's MLflow tracking server: PostgreSQL as the backend store (runs, models,
# users), artifacts served through the server, every request authenticated (basic-auth).
#
#   export MLFLOW_AUTH_ADMIN_PASSWORD='a long secret'     # needed on the first start only
#   deploy/team/start_tracking_server.sh                  # foreground; Ctrl-C stops it all
#
# Run it from the project's virtualenv (it starts the `mlflow` found on PATH). It stays in the
# foreground; SIGINT/SIGTERM stop the MLflow server and the PostgreSQL it started. Everything
# it keeps lives in MLFLOW_TEAM_DATA_DIR, so a restart finds the same runs, models and users.
#
# Settings (environment variables; defaults in brackets):
#   MLFLOW_TEAM_DATA_DIR        [/var/lib/mlflow-team as root, else ~/.local/share/mlflow-team]
#                               PostgreSQL cluster, artifacts, generated secrets
#   MLFLOW_TEAM_HOST            [127.0.0.1] address to bind; 0.0.0.0 to serve the network
#   MLFLOW_TEAM_PORT            [5000]
#   MLFLOW_TEAM_ALLOWED_HOSTS   [localhost:PORT,127.0.0.1:PORT and HOST:PORT] Host headers the
#                               server answers (DNS-rebinding guard), e.g. mlflow.example.com
#   MLFLOW_TEAM_WORKERS         [2] server worker processes
#   MLFLOW_TEAM_ARTIFACTS_DESTINATION [DATA_DIR/artifacts] where the server keeps artifacts:
#                               a directory, or object storage such as s3://bucket/mlflow
#   MLFLOW_TEAM_DEFAULT_PERMISSION [READ] what every user may do on resources they were not
#                               granted anything on: READ, USE, EDIT, MANAGE or NO_PERMISSIONS
#   MLFLOW_TEAM_AUTH_CACHE_SECONDS [30] how long a worker trusts a checked password: every
#                               request is authenticated and one scrypt check costs ~0.1-0.6 s of
#                               CPU; a password change or user deletion reaches the other
#                               workers after at most this long. 0 checks every request.
#   MLFLOW_TEAM_PG_PORT         [5433] loopback port of the PostgreSQL cluster this script runs
#   MLFLOW_TEAM_PG_BIN          [found] directory holding initdb and pg_ctl
#   MLFLOW_TEAM_BACKEND_STORE_URI and MLFLOW_TEAM_AUTH_DATABASE_URI
#                               postgresql:// URIs of an existing (managed) PostgreSQL; when
#                               set, no local cluster is started. Keep passwords out of them:
#                               libpq reads PGPASSFILE / ~/.pgpass.
#   MLFLOW_AUTH_ADMIN_USERNAME  [admin] and MLFLOW_AUTH_ADMIN_PASSWORD: the admin user MLflow
#                               creates on the first start (MLflow ships no default password)
#   MLFLOW_FLASK_SERVER_SECRET_KEY [generated once into DATA_DIR] CSRF key; several servers
#                               behind one load balancer must share it
#   MLFLOW_SERVER_ENABLE_JOB_EXECUTION [false] MLflow's job runner: eight more Python
#                               processes for GenAI jobs (online scoring, trace roll-ups) this
#                               project does not use; true brings them back
set -euo pipefail

die() { echo "start_tracking_server: $*" >&2; exit 1; }

if [[ $(id -u) -eq 0 ]]; then
    DEFAULT_DATA_DIR=/var/lib/mlflow-team
else
    DEFAULT_DATA_DIR="${XDG_DATA_HOME:-$HOME/.local/share}/mlflow-team"
fi
DATA_DIR=$(realpath -m "${MLFLOW_TEAM_DATA_DIR:-$DEFAULT_DATA_DIR}")
HOST=${MLFLOW_TEAM_HOST:-127.0.0.1}
PORT=${MLFLOW_TEAM_PORT:-5000}
WORKERS=${MLFLOW_TEAM_WORKERS:-2}
PG_PORT=${MLFLOW_TEAM_PG_PORT:-5433}
ARTIFACTS=${MLFLOW_TEAM_ARTIFACTS_DESTINATION:-$DATA_DIR/artifacts}
DEFAULT_PERMISSION=${MLFLOW_TEAM_DEFAULT_PERMISSION:-READ}
ALLOWED_HOSTS=${MLFLOW_TEAM_ALLOWED_HOSTS:-localhost:$PORT,127.0.0.1:$PORT}
if [[ -z ${MLFLOW_TEAM_ALLOWED_HOSTS:-} && $HOST != 127.0.0.1 && $HOST != 0.0.0.0 && $HOST != localhost ]]; then
    ALLOWED_HOSTS+=",$HOST:$PORT"
fi

MLFLOW=$(command -v mlflow) || die "mlflow not found on PATH: activate the project's virtualenv (pip install -r requirements.txt)"
"$(dirname "$MLFLOW")/python" -c "import psycopg" 2>/dev/null \
    || die "psycopg (the PostgreSQL driver) is missing next to $MLFLOW: pip install -r requirements.txt"

mkdir -p "$DATA_DIR"
chmod 755 "$DATA_DIR"
[[ $ARTIFACTS == *://* ]] || mkdir -p "$ARTIFACTS"

# A secret generated here is kept in DATA_DIR (mode 600) so restarts reuse it.
secret_file() {
    local file=$1
    if [[ ! -s $file ]]; then
        (umask 077 && python3 -c "import secrets; print(secrets.token_urlsafe(32))" >"$file")
    fi
    cat "$file"
}

PGDATA="$DATA_DIR/postgres"
PG_STARTED=""
as_pg_owner() {
    # PostgreSQL refuses to run as root: as root, run it as the `postgres` system user, from
    # a directory that user can enter (each of its tools complains about one it cannot).
    if [[ $(id -u) -eq 0 ]]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

find_pg_bin() {
    if [[ -n ${MLFLOW_TEAM_PG_BIN:-} ]]; then echo "$MLFLOW_TEAM_PG_BIN"; return; fi
    local candidate
    # Debian keeps the server binaries off PATH, under /usr/lib/postgresql/<version>/bin.
    if candidate=$(command -v pg_ctl); then
        candidate=$(dirname "$(realpath "$candidate")")
        if [[ -x $candidate/initdb && -x $candidate/psql ]]; then echo "$candidate"; return; fi
    fi
    for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x $candidate/pg_ctl && -x $candidate/initdb && -x $candidate/psql ]]; then echo "$candidate"; return; fi
    done
    die "PostgreSQL server binaries (initdb, pg_ctl, psql) not found: apt-get install -y postgresql, or set MLFLOW_TEAM_PG_BIN"
}

start_local_postgres() {
    local bin psql_admin
    bin=$(find_pg_bin)
    if [[ $(id -u) -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "user 'postgres' does not exist: apt-get install -y postgresql"
    fi
    mkdir -p "$PGDATA"
    [[ $(id -u) -eq 0 ]] && chown postgres: "$PGDATA"
    chmod 700 "$PGDATA"
    as_pg_owner test -w "$PGDATA" || die "the PostgreSQL user cannot reach $PGDATA: choose a MLFLOW_TEAM_DATA_DIR whose parents it can enter (e.g. /srv/mlflow-team)"

    if [[ ! -f $PGDATA/PG_VERSION ]]; then
        [[ -n ${MLFLOW_AUTH_ADMIN_PASSWORD:-} ]] \
            || die "first start: set MLFLOW_AUTH_ADMIN_PASSWORD, the password of the admin user to create"
        echo "start_tracking_server: creating the PostgreSQL cluster in $PGDATA" >&2
        as_pg_owner "$bin/initdb" -D "$PGDATA" --auth-local=peer --auth-host=scram-sha-256 \
            --encoding=UTF8 --locale=C.UTF-8 >"$DATA_DIR/initdb.log" 2>&1 \
            || die "initdb failed, see $DATA_DIR/initdb.log"
    fi
    # Loopback TCP only; the admin socket lives inside the data directory.
    if ! as_pg_owner "$bin/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
        as_pg_owner "$bin/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PGDATA" start >/dev/null \
            || die "PostgreSQL did not start, see $PGDATA/server.log"
        PG_STARTED="$bin"
    fi

    # The `mlflow` role and its two databases; its password goes to a pgpass file, never
    # onto a command line or into a URI.
    local password found
    password=$(secret_file "$DATA_DIR/postgres-password")
    psql_admin=(as_pg_owner "$bin/psql" -h "$PGDATA" -p "$PG_PORT" -d postgres -v ON_ERROR_STOP=1 -qtA)
    found=$("${psql_admin[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = 'mlflow'")
    if [[ -z $found ]]; then
        "${psql_admin[@]}" >/dev/null <<<"CREATE ROLE mlflow LOGIN PASSWORD '$password'"
    fi
    for db in mlflow mlflow_auth; do
        found=$("${psql_admin[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$db'")
        if [[ -z $found ]]; then
            "${psql_admin[@]}" -c "CREATE DATABASE $db OWNER mlflow" >/dev/null
        fi
    done
    (umask 077 && echo "127.0.0.1:$PG_PORT:*:mlflow:$password" >"$DATA_DIR/pgpass")
    export PGPASSFILE="$DATA_DIR/pgpass"
    BACKEND_STORE_URI="postgresql://mlflow@127.0.0.1:$PG_PORT/mlflow"
    AUTH_DATABASE_URI="postgresql://mlflow@127.0.0.1:$PG_PORT/mlflow_auth"
}

SERVER_PID=""
# Whatever this script started, it stops: on Ctrl-C, SIGTERM, an error or the server exiting.
stop_all() {
    trap - INT TERM EXIT
    if [[ -n $SERVER_PID ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n $PG_STARTED ]]; then
        as_pg_owner "$PG_STARTED/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
    fi
}
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT

if [[ -n ${MLFLOW_TEAM_BACKEND_STORE_URI:-} ]]; then
    BACKEND_STORE_URI=$MLFLOW_TEAM_BACKEND_STORE_URI
    AUTH_DATABASE_URI=${MLFLOW_TEAM_AUTH_DATABASE_URI:?set MLFLOW_TEAM_AUTH_DATABASE_URI too (the users database)}
else
    start_local_postgres
fi

# MLflow's basic-auth app reads its settings from this file; users live in PostgreSQL too.
cat >"$DATA_DIR/basic_auth.ini" <<EOF
[mlflow]
default_permission = $DEFAULT_PERMISSION
database_uri = $AUTH_DATABASE_URI
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = ${MLFLOW_TEAM_AUTH_CACHE_SECONDS:-30}
EOF
export MLFLOW_AUTH_CONFIG_PATH="$DATA_DIR/basic_auth.ini"
if [[ -z ${MLFLOW_FLASK_SERVER_SECRET_KEY:-} ]]; then
    MLFLOW_FLASK_SERVER_SECRET_KEY=$(secret_file "$DATA_DIR/flask-secret-key")
    export MLFLOW_FLASK_SERVER_SECRET_KEY
fi

export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}

echo "start_tracking_server: MLflow on http://$HOST:$PORT (allowed hosts: $ALLOWED_HOSTS)" >&2
"$MLFLOW" server \
    --backend-store-uri "$BACKEND_STORE_URI" \
    --artifacts-destination "$ARTIFACTS" --serve-artifacts \
    --host "$HOST" --port "$PORT" --workers "$WORKERS" \
    --allowed-hosts "$ALLOWED_HOSTS" \
    --app-name basic-auth &
SERVER_PID=$!
set +e
wait "$SERVER_PID"
status=$?
SERVER_PID=""
exit "$status"
