#!/bin/bash
# Run once by the postgres image's entrypoint on the primary's first start (docker-entrypoint-initdb.d):
# a replication role for the replica's pg_basebackup and streaming, and pg_hba lines letting it in.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v repl_password="$REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'repl_password';
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
