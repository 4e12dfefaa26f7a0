#!/bin/bash
# Sourced once by the mariadb image's entrypoint on the primary's first start (docker-entrypoint-initdb.d).
# The probe login dbproxy uses ([clusters.shop.health]): follow mode only reads read_only, the GTID
# positions and SHOW SLAVE STATUS. Written to the binary log, so the replica gets it by replication.
docker_process_sql <<SQL
CREATE USER IF NOT EXISTS 'dbproxy_monitor'@'%' IDENTIFIED BY '$(docker_sql_escape_string_literal "$DBPROXY_MONITOR_PASSWORD")';
GRANT SLAVE MONITOR, BINLOG MONITOR ON *.* TO 'dbproxy_monitor'@'%';
SQL
