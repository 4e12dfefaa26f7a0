#!/bin/bash
# Run once by the mariadb image's entrypoint on the primary's first start (docker-entrypoint-initdb.d;
# executable, so it runs as a program against the entrypoint's temporary server on its socket).
# Makes the probe login dbproxy uses ([clusters.shop.health]): follow mode only reads read_only, the
# GTID positions and SHOW SLAVE STATUS. Written to the binary log, so the replica gets it too.
set -euo pipefail
password=${DBPROXY_MONITOR_PASSWORD:?}
password=${password//\\/\\\\}
password=${password//\'/\\\'}
# The entrypoint's temporary server listens on the image's socket only (MYSQL_UNIX_PORT, the client's
# own variable, overrides it; named on the command line so no option file can point elsewhere).
mariadb --protocol=socket --socket="${MYSQL_UNIX_PORT:-/run/mysqld/mysqld.sock}" \
    --user=root --password="$MARIADB_ROOT_PASSWORD" <<SQL
CREATE USER IF NOT EXISTS 'dbproxy_monitor'@'%' IDENTIFIED BY '${password}';
GRANT SLAVE MONITOR, BINLOG MONITOR ON *.* TO 'dbproxy_monitor'@'%';
SQL
