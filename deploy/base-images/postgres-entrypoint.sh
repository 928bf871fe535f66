#!/usr/bin/env bash
# Entrypoint of the local postgres stand-in: the official image's contract, in short.
# On an empty data folder: initdb with POSTGRES_USER as superuser (password POSTGRES_PASSWORD,
# read from a file, never on a command line), POSTGRES_DB created, every network client asked
# for its password (scram-sha-256). Then `postgres [ARGS]` runs as the postgres user.
set -euo pipefail

if [ "${1:-}" != "postgres" ]; then
    exec "$@"  # e.g. `docker run ... psql`
fi

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgres stand-in: POSTGRES_PASSWORD is not set; the database would accept no login" >&2
        exit 1
    fi
    user=${POSTGRES_USER:-postgres}
    db=${POSTGRES_DB:-$user}
    pwfile=$(mktemp)
    trap 'rm -f "$pwfile"' EXIT
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    echo "postgres stand-in: initialising $PGDATA (superuser $user, database $db)"
    initdb --pgdata="$PGDATA" --username="$user" --pwfile="$pwfile" --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    if [ "$db" != postgres ]; then
        # Single-user mode: nothing listens until the database exists.
        echo "CREATE DATABASE \"$db\"" | postgres --single -D "$PGDATA" postgres >/dev/null
    fi
fi
unset POSTGRES_PASSWORD
shift
exec postgres -D "$PGDATA" "$@"
