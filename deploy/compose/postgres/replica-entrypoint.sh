#!/bin/bash
# Entrypoint of the PostgreSQL streaming replica: on first start, clone the primary with pg_basebackup
# (-R writes standby.signal and primary_conninfo), then run postgres as a hot standby. PGPASSWORD
# stays in the server's environment for its WAL receiver.
set -euo pipefail
: "${PRIMARY_HOST:?}" "${REPLICATION_PASSWORD:?}"
primary_port=${PRIMARY_PORT:-5432}
export PGPASSWORD="$REPLICATION_PASSWORD"
mkdir -p "$PGDATA"
chown postgres:postgres "$PGDATA"
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    until gosu postgres pg_isready --host "$PRIMARY_HOST" --port "$primary_port" --quiet; do sleep 1; done
    gosu postgres pg_basebackup --host "$PRIMARY_HOST" --port "$primary_port" --username replicator \
        --pgdata "$PGDATA" --wal-method stream --write-recovery-conf --checkpoint fast
fi
exec gosu postgres postgres -c hot_standby=on
