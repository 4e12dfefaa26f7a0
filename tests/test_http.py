"""HTTP service against a running proxy: routes, /status, /metrics values moving as clients act,
/readyz flipping when the writer goes away, and the lifecycle around it (JSON logs, reload, drain)."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator

import asyncpg
import pytest
from conftest import REPO_ROOT, ProxyProcess
from e2e_helpers import APP, RunningProxy, async_wait_until, running_proxy, wait_until
from ops_helpers import OpsPorts, admin, http_get, ops_config, scrape

from deploy.pgcluster import HOST, PgCluster, free_ports
from proxy.http.server import BadRequest, Response, body_length, parse_request

SPEC_METRICS = (
    "dbproxy_client_connections", "dbproxy_client_connections_received_total",
    "dbproxy_client_connections_setup_failed_auth_total", "dbproxy_client_connections_tls",
    "dbproxy_database_connections", "dbproxy_database_connections_borrowed",
    "dbproxy_database_connections_in_transaction", "dbproxy_database_connections_pinned",
    "dbproxy_database_connection_setup_failed_total", "dbproxy_database_connection_borrow_seconds",
    "dbproxy_query_requests_total", "dbproxy_query_response_seconds", "dbproxy_instance_up",
    "dbproxy_instance_is_primary", "dbproxy_replica_lag_seconds", "dbproxy_failovers_total",
    "dbproxy_client_waiting",
)


@pytest.fixture(scope="module")
def ports() -> OpsPorts:
    return OpsPorts.of(free_ports(6))


@pytest.fixture(scope="module")
def proxy(pg_cluster: PgCluster, ports: OpsPorts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with running_proxy(ops_config(pg_cluster, ports), tmp_path_factory.mktemp("http"), ports.writer) as running:
        wait_until(lambda: http_get(ports.http, "/readyz").status == 200, what="ready")
        yield running
        running.assert_alive_and_clean()


async def connect(port: int, password: str | None = APP.password, **kwargs: object) -> asyncpg.Connection:
    return await asyncpg.connect(host=HOST, port=port, user="app", password=password, database="app",
                                 **kwargs)  # type: ignore[arg-type]


def labels(**values: str) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in values.items()) + "}"


# ---- sans-IO pieces -----------------------------------------------------------------------------------

def test_parse_request_and_encode_response() -> None:
    request = parse_request(b"GET /status?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert (request.method, request.path, request.headers["host"], request.keep_alive) == ("GET", "/status", "a", False)
    assert parse_request(b"GET / HTTP/1.1\r\n\r\n").keep_alive
    assert not parse_request(b"GET / HTTP/1.0\r\n\r\n").keep_alive
    assert parse_request(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive
    for bad in (b"GET /\r\n\r\n", b"\x16\x03\x01 TLS\r\n\r\n", b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", b"GET / SPDY/3\r\n\r\n"):
        with pytest.raises(BadRequest):
            parse_request(bad)
    # The one route taking a body: POST /faults (fault injection), Content-Length only, at most 64 KB.
    post = parse_request(b"POST /faults HTTP/1.1\r\nContent-Length: 20\r\n\r\n")
    assert (post.method, post.path, body_length(post)) == ("POST", "/faults", 20)
    for bad in (b"POST /faults HTTP/1.1\r\nContent-Length: 70000\r\n\r\n",
                b"POST /faults HTTP/1.1\r\nContent-Length: -1\r\n\r\n"):
        with pytest.raises(BadRequest):
            body_length(parse_request(bad))
    for bad in (b"POST /faults HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"DELETE /faults HTTP/1.1\r\nContent-Length: 5\r\n\r\n"):
        with pytest.raises(BadRequest):
            parse_request(bad)
    response = Response(503, b"not ready\n")
    assert response.encode(head_only=False, keep_alive=True) == (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 10\r\n"
        b"Cache-Control: no-store\r\nConnection: keep-alive\r\n\r\nnot ready\n")
    assert response.encode(head_only=True, keep_alive=False).endswith(b"Connection: close\r\n\r\n")


# ---- routes ----------------------------------------------------------------------------------------

def test_routes(proxy: RunningProxy, ports: OpsPorts) -> None:
    health = http_get(ports.http, "/healthz")
    assert (health.status, health.text) == (200, "ok\n")
    ready = http_get(ports.http, "/readyz")
    assert (ready.status, ready.text) == (200, "ready\n")
    assert http_get(ports.http, "/nope").status == 404
    assert http_get(ports.http, "/status?pretty=1").status == 200
    post = http_get(ports.http, "/status", method="POST")
    assert post.status == 405 and post.headers["allow"] == "GET, HEAD"
    head = http_get(ports.http, "/metrics", method="HEAD")
    assert head.status == 200 and head.body == b"" and int(head.headers["content-length"]) > 1000
    page = http_get(ports.http, "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script>" in page.text and "http://" not in page.text and "https://" not in page.text
    assert all(r.headers["cache-control"] == "no-store" for r in (health, ready, page))
    put = http_get(ports.http, "/faults", method="PUT")
    assert put.status == 405 and put.headers["allow"] == "GET, POST, DELETE"


def test_faults_refuse_browser_style_requests(proxy: RunningProxy, ports: OpsPorts) -> None:
    """POST /faults needs application/json and no Origin (CSRF), checked before the faults-off 403."""
    body = b'{"kind": "blackhole", "instance": "primary"}'
    for headers, status in (({"Content-Type": "text/plain"}, 415), ({}, 415),
                            ({"Content-Type": "application/json", "Origin": "http://evil.example"}, 403),
                            ({"Content-Type": "application/json"}, 403)):
        conn = http.client.HTTPConnection(HOST, ports.http, timeout=10)
        try:
            conn.request("POST", "/faults", body=body, headers=headers)
            response = conn.getresponse()
            answer = json.loads(response.read())
        finally:
            conn.close()
        assert response.status == status, (headers, answer)
        if status == 415:
            assert "application/json" in answer["error"]
        elif "Origin" in headers:
            assert "Origin" in answer["error"]
        else:
            assert "faults" in answer["error"]   # faults are off here: the ordinary refusal


def test_keep_alive_and_bad_requests(proxy: RunningProxy, ports: OpsPorts) -> None:
    with socket.create_connection((HOST, ports.http), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 200 OK") < 2:
            chunk = sock.recv(4096)
            assert chunk, data
            data += chunk
        assert b"ok\n" in data and b"ready\n" in data
    with socket.create_connection((HOST, ports.http), timeout=5) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 400 Bad Request")
    with socket.create_connection((HOST, ports.http), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"a" * 20000 + b"\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 431")
    assert http_get(ports.http, "/healthz").status == 200


def test_status_json(proxy: RunningProxy, ports: OpsPorts, pg_cluster: PgCluster) -> None:
    status = http_get(ports.http, "/status").json()
    assert status["ready"] is True and status["draining"] is False and status["uptime_s"] > 0
    (cluster,) = status["clusters"]
    primary, replica1, replica2 = pg_cluster.instance_addrs()
    assert cluster["name"] == "main" and cluster["engine"] == "postgres" and cluster["topology"] is True
    assert cluster["writer"] == primary
    roles = {i["instance"]: (i["role"], i["state"], i["writer"]) for i in cluster["instances"]}
    assert roles == {primary: ("primary", "up", True), replica1: ("replica", "up", False),
                     replica2: ("replica", "up", False)}
    assert {e["endpoint"] for e in cluster["endpoints"]} == {"writer", "reader", "app", "analytics"}
    assert isinstance(cluster["pools"], list)
    assert any(f"writer none -> {primary}" in c["text"] for c in cluster["role_changes"])
    # Same view as the admin console.
    assert [r["instance"] for r in admin(ports.admin, "SHOW INSTANCES")] == list(roles)


# ---- metrics ----------------------------------------------------------------------------------------

def test_every_spec_metric_is_exported(proxy: RunningProxy, ports: OpsPorts) -> None:
    text = http_get(ports.http, "/metrics").text
    for name in SPEC_METRICS:
        assert re.search(rf"^# TYPE {re.escape(name.removesuffix('_total'))}(_total)? ", text, re.M), name


def test_grafana_dashboard_uses_exported_metrics(proxy: RunningProxy, ports: OpsPorts) -> None:
    dashboard = json.loads((REPO_ROOT / "deploy" / "grafana-dashboard.json").read_text())
    exported = set(re.findall(r"^# TYPE (\S+) ", http_get(ports.http, "/metrics").text, re.M))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    used = {re.sub(r"_(bucket|sum|count)$", "", name) for e in exprs for name in re.findall(r"dbproxy_\w+", e)}
    missing = {name for name in used if name not in exported and name.removesuffix("_total") not in exported}
    assert not missing, f"dashboard queries metrics the proxy does not export: {missing}"
    assert {name.removesuffix("_total") for name in SPEC_METRICS} <= {n.removesuffix("_total") for n in used}


async def test_metrics_move_as_clients_connect_and_query(proxy: RunningProxy, ports: OpsPorts,
                                                         pg_cluster: PgCluster) -> None:
    primary, replica1, _ = pg_cluster.instance_addrs()
    writer = labels(cluster="main", endpoint="writer")
    on_primary = labels(cluster="main", instance=primary)
    requests = 'dbproxy_query_requests_total{cluster="main",endpoint="writer",route="primary"}'
    before = scrape(ports.http)
    assert before[f"dbproxy_instance_up{on_primary}"] == 1
    assert before[f"dbproxy_instance_is_primary{on_primary}"] == 1
    assert before[f"dbproxy_instance_is_primary{labels(cluster='main', instance=replica1)}"] == 0

    clients = [await connect(ports.writer) for _ in range(3)]
    try:
        for client in clients:
            for _ in range(4):
                await client.fetchval("SELECT 1")
        await clients[0].execute("BEGIN")
        await clients[0].fetchval("SELECT 1")
        await clients[1].execute("CREATE TEMP TABLE metrics_pin (x int)")
        during = scrape(ports.http)
    finally:
        await clients[0].execute("ROLLBACK")
        for client in clients:
            await client.close()

    assert during[f"dbproxy_client_connections{writer}"] == before.get(f"dbproxy_client_connections{writer}", 0) + 3
    assert during[f"dbproxy_client_connections_received_total{writer}"] == \
        before.get(f"dbproxy_client_connections_received_total{writer}", 0) + 3
    assert during[requests] >= before.get(requests, 0) + 12
    assert during[f"dbproxy_database_connections_in_transaction{on_primary}"] >= 1
    assert during[f"dbproxy_database_connections_pinned{on_primary}"] >= 1
    assert during[f"dbproxy_database_connections_borrowed{on_primary}"] >= 2   # the transaction + the pin
    assert during[f"dbproxy_database_connections{on_primary}"] >= 2

    after = await async_wait_until(
        lambda: _scrape_when(ports, lambda s: s[f"dbproxy_database_connections_borrowed{on_primary}"] == 0),
        what="server connections returned")
    assert after[f"dbproxy_client_connections{writer}"] == before.get(f"dbproxy_client_connections{writer}", 0)
    assert after[f"dbproxy_database_connections_in_transaction{on_primary}"] == 0
    assert after[f"dbproxy_database_connections_pinned{on_primary}"] == 0


async def _scrape_when(ports: OpsPorts, ok: Callable[[dict[str, float]], bool]) -> dict[str, float] | None:
    samples = await asyncio.to_thread(scrape, ports.http)
    return samples if ok(samples) else None


async def test_metrics_count_auth_failures(proxy: RunningProxy, ports: OpsPorts) -> None:
    key = f"dbproxy_client_connections_setup_failed_auth_total{labels(cluster='main', endpoint='reader')}"
    before = scrape(ports.http).get(key, 0)
    with pytest.raises(asyncpg.PostgresError):
        await connect(ports.reader, password="wrong")
    assert scrape(ports.http)[key] == before + 1


async def test_metrics_count_waiting_clients(proxy: RunningProxy, ports: OpsPorts, pg_cluster: PgCluster) -> None:
    # The pool has 4 connections per instance: hold them all in transactions, then a fifth client waits.
    holders = [await connect(ports.writer) for _ in range(4)]
    waiter = await connect(ports.writer)
    borrow_count = 'dbproxy_database_connection_borrow_seconds_count{cluster="main"}'
    before = scrape(ports.http)
    try:
        for holder in holders:
            await holder.execute("BEGIN")
            await holder.fetchval("SELECT 1")
        query = asyncio.create_task(waiter.fetchval("SELECT 42"))
        waiting = await async_wait_until(
            lambda: _scrape_when(ports, lambda s: s['dbproxy_client_waiting{cluster="main"}'] >= 1),
            what="a waiting client in the metrics")
        assert waiting[f"dbproxy_database_connections_in_transaction{labels(cluster='main', instance=pg_cluster.instance_addrs()[0])}"] == 4
        await holders[0].execute("COMMIT")
        assert await asyncio.wait_for(query, 10) == 42
    finally:
        for holder in holders:
            await holder.close()
        await waiter.close()
    after = scrape(ports.http)
    assert after['dbproxy_client_waiting{cluster="main"}'] == 0
    assert after[borrow_count] > before.get(borrow_count, 0)


# ---- readiness during a failover --------------------------------------------------------------------

async def test_readyz_flips_while_the_cluster_has_no_writer(
        pg_cluster_factory: Callable[..., PgCluster], proxy_factory: Callable[..., ProxyProcess]) -> None:
    pg = pg_cluster_factory(3)
    ports = OpsPorts.of(free_ports(6))
    process = proxy_factory(ops_config(pg, ports, interval="200ms", failure_threshold=2))
    primary, replica1, _ = pg.instance_addrs()
    wait_until(lambda: http_get(ports.http, "/readyz").status == 200, what="ready")
    failovers = 'dbproxy_failovers_total{cluster="main"}'
    assert scrape(ports.http).get(failovers, 0) == 0

    pg.stop_instance(0)
    started = time.monotonic()
    not_ready = wait_until(lambda: _status_is(ports, 503), timeout=10, what="/readyz 503")
    assert not_ready.text == "not ready: cluster main has no writer\n"
    assert time.monotonic() - started < 5
    status = http_get(ports.http, "/status").json()
    assert status["ready"] is False and status["clusters"][0]["writer"] is None
    assert {i["instance"]: i["state"] for i in status["clusters"][0]["instances"]}[primary] == "down"
    assert scrape(ports.http)[f"dbproxy_instance_up{labels(cluster='main', instance=primary)}"] == 0

    pg.promote(1)   # follow mode: whoever reports primary becomes the writer
    wait_until(lambda: _status_is(ports, 200), timeout=15, what="/readyz 200 again")
    status = http_get(ports.http, "/status").json()
    assert status["ready"] is True and status["clusters"][0]["writer"] == replica1
    changes = [c["text"] for c in status["clusters"][0]["role_changes"]]
    assert f"writer {primary} -> none" in changes and f"writer none -> {replica1}" in changes
    assert scrape(ports.http)[failovers] == 1
    assert "Traceback" not in process.log_text()


def _status_is(ports: OpsPorts, code: int):  # type: ignore[no-untyped-def]
    response = http_get(ports.http, "/readyz")
    return response if response.status == code else None


# ---- lifecycle: JSON logs, reload, drain -------------------------------------------------------------

async def test_json_logs_reload_and_drain(pg_cluster: PgCluster,
                                          proxy_factory: Callable[..., ProxyProcess]) -> None:
    ports = OpsPorts.of(free_ports(6))
    config = ops_config(pg_cluster, ports, log_format="json", shutdown_timeout="10s")
    process = proxy_factory(config)
    busy = await connect(ports.writer, server_settings={"application_name": "busy"})
    idle = await connect(ports.writer)
    await idle.fetchval("SELECT 1")
    await busy.execute("BEGIN")
    await busy.fetchval("SELECT 1")

    process.config_path.write_text(config.replace('role = "reader"', 'role = "bogus"'))
    process.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload rejected" in process.log_text(), what="reload rejected")
    process.config_path.write_text(config.replace("max_server_connections = 4", "max_server_connections = 5"))
    process.send_signal(signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in process.log_text(), what="reload applied")
    assert await idle.fetchval("SELECT 2") == 2      # the reloads dropped nobody

    process.send_signal(signal.SIGTERM)
    # Idle clients are closed at once; the transaction in flight may finish.
    await async_wait_until(_closed(idle), timeout=5, what="idle client closed by the drain")
    assert await busy.fetchval("SELECT 3") == 3
    await busy.execute("COMMIT")
    assert process.wait(10) == 0
    assert busy.is_closed() or await _is_closed_after_query(busy)

    entries = [json.loads(line) for line in process.log_text().splitlines() if line.startswith("{")]
    assert entries and all({"ts", "level", "logger", "msg"} <= set(e) for e in entries)
    messages = [e["msg"] for e in entries]
    assert any(re.match(r"client \S+ connected: user=app database=app endpoint=main/writer", m) for m in messages)
    assert any(e["level"] == "error" and "reload rejected: config error" in e["msg"] for e in entries)
    assert any("configuration reloaded from" in m and "pool changed" in m for m in messages)
    reasons = [m for m in messages if re.match(r"client \S+ disconnected: ", m)]
    assert any("shutting down" in r or "shutdown" in r for r in reasons), reasons
    assert "dbproxy stopped" in messages


def _closed(conn: asyncpg.Connection):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        try:
            await conn.fetchval("SELECT 1")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError, OSError):
            return True
        return conn.is_closed()
    return check


async def _is_closed_after_query(conn: asyncpg.Connection) -> bool:
    return await _closed(conn)()
