"""Fault injection end to end on PostgreSQL (SPEC §13): each fault kind as psycopg sees it, with the configured
probability within 4 binomial standard deviations over 500 transactions (or connections), the admin console
and HTTP controls, and everything refused while [server] faults is false."""

from __future__ import annotations

import http.client
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from e2e_helpers import APP, MD5, RunningProxy, running_proxy, wait_until
from ops_helpers import AdminError, OpsPorts, admin, ops_config, scrape

from deploy.pgcluster import HOST, PgCluster, free_ports

N = 500


def within_4_sigma(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p))


@pytest.fixture(scope="module")
def ports() -> OpsPorts:
    return OpsPorts.of(free_ports(6))


@pytest.fixture(scope="module")
def proxy(pg_cluster: PgCluster, ports: OpsPorts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    config = ops_config(pg_cluster, ports, client_auth="md5").replace("[server]\n", "[server]\nfaults = true\n", 1)
    with running_proxy(config, tmp_path_factory.mktemp("faults"), ports.writer) as running:
        wait_until(lambda: all(r["state"] == "up" for r in admin(ports.admin, "SHOW INSTANCES")),
                   what="every instance up")
        yield running


@pytest.fixture(autouse=True)
def no_faults_after(proxy: RunningProxy, ports: OpsPorts) -> Iterator[None]:
    yield
    admin(ports.admin, "FAULT CLEAR")
    proxy.assert_alive_and_clean()


def conninfo(port: int, user: Any = APP) -> str:
    return f"host={HOST} port={port} user={user.name} password={user.password} dbname=app sslmode=disable"


def fault_row(ports: OpsPorts) -> dict[str, str]:
    (row,) = admin(ports.admin, "SHOW FAULTS")
    return row


def injected(ports: OpsPorts, kind: str) -> float:
    return scrape(ports.http).get(f'dbproxy_faults_injected_total{{cluster="main",kind="{kind}"}}', 0.0)


def test_error_fault_answers_serialization_failures_at_the_configured_rate(proxy: RunningProxy,
                                                                           ports: OpsPorts) -> None:
    before = injected(ports, "error")
    admin(ports.admin, "FAULT ADD error '40001' ON main/writer PROBABILITY 0.3")
    failures = 0
    with psycopg.connect(conninfo(ports.writer), autocommit=True) as conn:
        for i in range(N):
            try:
                assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
            except psycopg.errors.SerializationFailure as exc:
                assert "error injected by dbproxy fault" in str(exc)
                failures += 1
        fired = int(fault_row(ports)["fired"])
        admin(ports.admin, "FAULT CLEAR")
        assert conn.execute("SELECT 1").fetchone() == (1,)   # the session is fine after the errors
    assert within_4_sigma(failures, N, 0.3), failures
    assert fired == failures
    assert injected(ports, "error") - before == failures
    assert "injected: error 40001 on main" in proxy.log_text()


def test_latency_fault_delays_only_matching_statements(proxy: RunningProxy, ports: OpsPorts) -> None:
    admin(ports.admin, "FAULT ADD latency 100ms ON main MATCH '^select 2' PROBABILITY 0.1 FOR 5m")
    slow = 0
    with psycopg.connect(conninfo(ports.writer), autocommit=True, prepare_threshold=None) as conn:
        for _ in range(N):
            started = time.perf_counter()
            conn.execute("SELECT 2").fetchone()
            slow += time.perf_counter() - started >= 0.09
            conn.execute("SELECT 1").fetchone()   # never matched: fired counts SELECT 2 only
    fired = int(fault_row(ports)["fired"])
    # If the pattern were ignored, fired would be near 0.1 * 2N = 100: outside this bound.
    assert within_4_sigma(fired, N, 0.1), fired
    assert fired <= slow <= fired + N // 20, (fired, slow)   # every delayed one was slow; few others stalled


def test_drop_fault_closes_the_connection_mid_result(proxy: RunningProxy, ports: OpsPorts) -> None:
    admin(ports.admin, "FAULT ADD drop ON main/writer USER app PROBABILITY 0.2")
    dropped = 0
    conn = psycopg.connect(conninfo(ports.writer), autocommit=True)
    try:
        for _ in range(N):
            try:
                assert conn.execute("SELECT repeat('x', 1000)").fetchone() == ("x" * 1000,)
            except psycopg.OperationalError:
                dropped += 1
                assert conn.closed or conn.broken
                conn.close()
                conn = psycopg.connect(conninfo(ports.writer), autocommit=True)
    finally:
        conn.close()
    assert within_4_sigma(dropped, N, 0.2), dropped
    assert int(fault_row(ports)["fired"]) == dropped
    assert "connection dropped by fault" in proxy.log_text()
    with psycopg.connect(conninfo(ports.writer, MD5), autocommit=True) as other:   # USER app only
        for _ in range(20):
            assert other.execute("SELECT 1").fetchone() == (1,)


def test_refuse_fault_refuses_new_connections_with_an_error(proxy: RunningProxy, ports: OpsPorts) -> None:
    admin(ports.admin, "FAULT ADD refuse ON main USER app PROBABILITY 0.25")
    refused = 0
    for _ in range(N):
        try:
            with psycopg.connect(conninfo(ports.writer), autocommit=True) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            assert "connection refused by dbproxy fault injection" in str(exc), exc
            refused += 1
    assert within_4_sigma(refused, N, 0.25), refused
    assert int(fault_row(ports)["fired"]) == refused
    refusals = scrape(ports.http)['dbproxy_client_connections_refused_total{cluster="main",endpoint="writer",'
                                  'reason="fault"}']
    assert refusals == refused


def test_blackhole_makes_an_instance_dead_to_probes_and_routing(proxy: RunningProxy, ports: OpsPorts,
                                                                pg_cluster: PgCluster) -> None:
    gone, kept = pg_cluster.instance_addrs()[1:3]
    admin(ports.admin, f"FAULT ADD blackhole INSTANCE '{gone}' ON main FOR 1m")
    for _ in range(40):   # at once: the reader endpoint only uses the other replica
        with psycopg.connect(conninfo(ports.reader), autocommit=True) as conn:
            port = conn.execute("SELECT inet_server_port()").fetchone()
            assert port is not None and f"{HOST}:{port[0]}" == kept
    wait_until(lambda: instance(ports, gone)["state"] == "down", what=f"{gone} down")
    assert instance(ports, gone)["error"].startswith("blackholed by fault")
    assert injected(ports, "blackhole") >= 2   # failure_threshold probes at least
    with psycopg.connect(f"host={HOST} port={gone.rsplit(':', 1)[1]} user=app dbname=app") as direct:
        assert direct.execute("SELECT 1").fetchone() == (1,)   # the database itself was never touched
    admin(ports.admin, "FAULT CLEAR")
    wait_until(lambda: instance(ports, gone)["state"] == "up", what=f"{gone} up again")


def instance(ports: OpsPorts, address: str) -> dict[str, str]:
    return next(r for r in admin(ports.admin, "SHOW INSTANCES") if r["instance"] == address)


def http_call(port: int, method: str, path: str, body: object = None,
              headers: dict[str, str] | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        payload = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        if headers is None:
            headers = {"Content-Type": "application/json"} if payload else {}
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_http_controls_faults(proxy: RunningProxy, ports: OpsPorts) -> None:
    status, fault = http_call(ports.http, "POST", "/faults", {"kind": "error", "code": "57014", "cluster": "main",
                                                         "match": "^select 42", "for": "1m"})
    assert status == 201 and fault["kind"] == "error" and fault["argument"] == "57014"
    with psycopg.connect(conninfo(ports.writer), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT 42")
        assert conn.execute("SELECT 41").fetchone() == (41,)
    assert http_call(ports.http, "GET", "/faults") == (200, [{**fault, "fired": 1, "expires_in": pytest.approx(
        fault["expires_in"], abs=30)}])
    assert http_call(ports.http, "POST", "/faults", {"kind": "latency"})[0] == 400
    assert http_call(ports.http, "POST", "/faults", b"{not json")[0] == 400
    assert http_call(ports.http, "POST", "/faults", {"kind": "drop", "cluster": "nope"}) == (
        400, {"error": "no cluster named 'nope' (clusters: main)"})
    assert http_call(ports.http, "DELETE", f"/faults/{fault['id']}") == (200, {"cleared": 1})
    assert http_call(ports.http, "DELETE", f"/faults/{fault['id']}")[0] == 404
    assert http_call(ports.http, "GET", "/faults") == (200, [])
    assert injected(ports, "error") >= 1


def test_http_refuses_cross_site_fault_requests(proxy: RunningProxy, ports: OpsPorts) -> None:
    """A browser page can POST text/plain to a loopback listener without a preflight: it must not add a fault."""
    blackhole = {"kind": "blackhole", "instance": "primary"}
    text = json.dumps(blackhole).encode()
    assert http_call(ports.http, "POST", "/faults", text, {"Content-Type": "text/plain"})[0] == 415
    assert http_call(ports.http, "POST", "/faults", text, {})[0] == 415
    assert http_call(ports.http, "POST", "/faults", text, {"Content-Type": "application/json",
                                                            "Origin": "http://evil.example"})[0] == 403
    assert http_call(ports.http, "GET", "/faults") == (200, [])
    status, fault = http_call(ports.http, "POST", "/faults", {"kind": "error", "code": "40001", "for": "1m"},
                              {"Content-Type": "application/json; charset=utf-8"})
    assert status == 201
    assert http_call(ports.http, "DELETE", "/faults", headers={"Origin": "http://evil.example"})[0] == 403
    assert [row["id"] for row in http_call(ports.http, "GET", "/faults")[1]] == [fault["id"]]
    assert http_call(ports.http, "DELETE", "/faults") == (200, {"cleared": 1})


def test_admin_errors(proxy: RunningProxy, ports: OpsPorts) -> None:
    for command, message in [("FAULT ADD latency", "needs a duration"),
                             ("FAULT ADD error '4x'", "invalid error code"),
                             ("FAULT ADD drop ON main/nope", "no endpoint named 'nope'"),
                             ("FAULT ADD blackhole INSTANCE '10.9.9.9:1'", "not an instance of any cluster"),
                             ("FAULT DEL 99", "no fault with id 99"),
                             ("FAULT FROB", "usage: FAULT ADD")]:
        with pytest.raises(AdminError, match=message):
            admin(ports.admin, command)


def test_faults_are_refused_when_off(pg_cluster: PgCluster, tmp_path: Any) -> None:
    ports = OpsPorts.of(free_ports(6))
    with running_proxy(ops_config(pg_cluster, ports, client_auth="md5"), tmp_path, ports.writer):
        with pytest.raises(AdminError, match=r"fault injection is off: set faults = true in the \[server\] section"):
            admin(ports.admin, "FAULT ADD error '40001'")
        status, body = http_call(ports.http, "POST", "/faults", {"kind": "error", "code": "40001"})
        assert status == 403 and "faults = true" in body["error"]
        assert admin(ports.admin, "SHOW FAULTS") == []
        with psycopg.connect(conninfo(ports.writer), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
