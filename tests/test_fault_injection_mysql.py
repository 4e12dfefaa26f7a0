"""Fault injection end to end on MariaDB (SPEC §13): each fault kind as PyMySQL sees it, with the configured
probability within 4 binomial standard deviations over 500 transactions (or connections). Transaction
faults match '^select' so that PyMySQL's own SET NAMES at connect is left alone."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
from e2e_helpers import running_proxy, wait_until
from mysql_e2e_helpers import (
    MysqlProxy,
    connect,
    direct,
    mysql_proxy_config,
    scalar,
)
from mysql_e2e_helpers import (
    admin_command as admin,
)

from deploy.mysqlcluster import HOST, MysqlCluster
from deploy.pgcluster import free_ports

N = 500


def within_4_sigma(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p))


@pytest.fixture(scope="module")
def proxy(mysql_cluster: MysqlCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MysqlProxy]:
    port, admin_port, reader_port, http_port = free_ports(4)
    text = mysql_proxy_config(mysql_cluster, port, admin_port=admin_port, reader_port=reader_port,
                              http_port=http_port, health={"failure_threshold": 2})
    text = text.replace("[server]\n", "[server]\nfaults = true\n", 1)
    with running_proxy(text, tmp_path_factory.mktemp("mysql-faults"), port) as running:
        yield MysqlProxy(running, admin_port, reader_port, http_port)


@pytest.fixture(autouse=True)
def no_faults_after(proxy: MysqlProxy) -> Iterator[None]:
    yield
    admin(proxy, "FAULT CLEAR")
    proxy.assert_alive_and_clean()


def fast_connect(proxy: MysqlProxy) -> pymysql.connections.Connection[Any]:
    """Without TLS: PyMySQL's default (TLS if offered) loads the CA store per connection, ~0.1s of CPU."""
    return connect(proxy, ssl_disabled=True)


def fired(proxy: MysqlProxy) -> int:
    (row,) = admin(proxy, "SHOW FAULTS")
    return int(row["fired"])


def test_error_fault_sends_the_errno(proxy: MysqlProxy) -> None:
    admin(proxy, "FAULT ADD error '1213' ON my/writer MATCH '^select' PROBABILITY 0.3")
    errors = 0
    with connect(proxy) as conn:
        for i in range(N):
            try:
                assert scalar(conn, "SELECT %s", (i,)) == i
            except pymysql.err.OperationalError as exc:
                assert exc.args[0] == 1213 and "error injected by dbproxy fault" in exc.args[1], exc
                errors += 1
        count = fired(proxy)
        admin(proxy, "FAULT CLEAR")
        assert scalar(conn, "SELECT 7") == 7
    assert within_4_sigma(errors, N, 0.3), errors
    assert count == errors


def test_sqlstate_error_fault_maps_to_the_mysql_errno(proxy: MysqlProxy) -> None:
    admin(proxy, "FAULT ADD error '40001' MATCH '^select 1$'")
    with connect(proxy) as conn:
        with pytest.raises(pymysql.err.OperationalError) as raised:
            scalar(conn, "select 1")
        assert raised.value.args[0] == 1213
        assert scalar(conn, "select 2") == 2


def test_latency_fault(proxy: MysqlProxy) -> None:
    # MATCH: PyMySQL's SET NAMES at connect would otherwise fire some (counted, but outside the timed loop)
    admin(proxy, "FAULT ADD latency 100ms ON my USER app MATCH '^select' PROBABILITY 0.1")
    slow = 0
    with connect(proxy) as conn:
        for _ in range(N):
            started = time.perf_counter()
            scalar(conn, "SELECT 1")
            slow += time.perf_counter() - started >= 0.09
        count = fired(proxy)
    assert within_4_sigma(count, N, 0.1), count
    assert count <= slow <= count + N // 20, (count, slow)   # a few others may stall on a loaded machine


def test_drop_fault(proxy: MysqlProxy) -> None:
    admin(proxy, "FAULT ADD drop ON my/writer MATCH '^select repeat' PROBABILITY 0.2")
    dropped = 0
    conn = fast_connect(proxy)
    try:
        for _ in range(N):
            try:
                assert scalar(conn, "SELECT REPEAT('x', 1000)") == "x" * 1000
            except pymysql.err.OperationalError as exc:
                assert exc.args[0] in (2013, 2014), exc   # lost connection during query
                dropped += 1
                close_quietly(conn)
                conn = fast_connect(proxy)
    finally:
        close_quietly(conn)
    assert within_4_sigma(dropped, N, 0.2), dropped
    assert fired(proxy) == dropped


def close_quietly(conn: pymysql.connections.Connection[Any]) -> None:
    try:
        conn.close()
    except pymysql.err.Error:
        pass   # a dropped connection may still look open


def test_refuse_fault(proxy: MysqlProxy) -> None:
    admin(proxy, "FAULT ADD refuse ON my PROBABILITY 0.25")
    refused = 0
    for _ in range(N):
        try:
            with fast_connect(proxy) as conn:
                scalar(conn, "SELECT 1")
        except pymysql.err.OperationalError as exc:
            assert exc.args[0] == 1040 and "refused by dbproxy fault injection" in exc.args[1], exc
            refused += 1
    assert within_4_sigma(refused, N, 0.25), refused
    assert fired(proxy) == refused


def test_blackhole(proxy: MysqlProxy, mysql_cluster: MysqlCluster) -> None:
    gone, kept = mysql_cluster.addresses[1:3]
    admin(proxy, f"FAULT ADD blackhole INSTANCE '{gone}' FOR 1m")
    assert proxy.reader_port is not None
    for _ in range(30):
        with connect(proxy.reader_port) as conn:
            assert f"{HOST}:{scalar(conn, 'SELECT @@port')}" == kept
    wait_until(lambda: instance(proxy, gone)["state"] == "down", what=f"{gone} down")
    with direct(mysql_cluster, 1) as conn:
        assert scalar(conn, "SELECT 1") == 1   # the database itself is fine
    admin(proxy, "FAULT CLEAR")
    wait_until(lambda: instance(proxy, gone)["state"] == "up", what=f"{gone} up again")


def instance(proxy: MysqlProxy, address: str) -> dict[str, Any]:
    return next(r for r in admin(proxy, "SHOW INSTANCES") if r["instance"] == address)


def test_faults_are_refused_when_off(mysql_cluster: MysqlCluster, tmp_path: Path) -> None:
    port, admin_port = free_ports(2)
    text = mysql_proxy_config(mysql_cluster, port, admin_port=admin_port)
    with running_proxy(text, tmp_path, port) as running:
        off = MysqlProxy(running, admin_port)
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="faults = true"):
            admin(off, "FAULT ADD drop")
        assert admin(off, "SHOW FAULTS") == []
