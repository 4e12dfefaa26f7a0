"""Admin console against a running proxy in front of the real primary + 2 replicas: every SHOW command,
PAUSE/RESUME, KILL CLIENT, RELOAD (also under 100 connected clients), FAILOVER, SHUTDOWN, refusals."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from conftest import ProxyProcess
from e2e_helpers import APP, MD5, RunningProxy, async_wait_until, running_proxy, wait_until
from ops_helpers import (
    ADMIN_PASSWORD,
    ADMIN_USER,
    SECRETS,
    AdminError,
    OpsPorts,
    admin,
    admin_columns,
    admin_psql,
    ops_config,
    scrape,
)

from deploy.pgcluster import HOST, PgCluster, free_ports
from proxy.admin import commands
from proxy.admin.commands import COMMANDS
from proxy.admin.resultset import Table, encode_table, text_value

LSN = re.compile(r"^[0-9A-F]+/[0-9A-F]+$")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(scope="module")
def ports() -> OpsPorts:
    return OpsPorts.of(free_ports(6))


@pytest.fixture(scope="module")
def proxy(pg_cluster: PgCluster, ports: OpsPorts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    config = ops_config(pg_cluster, ports)
    with running_proxy(config, tmp_path_factory.mktemp("admin"), ports.writer) as running:
        wait_until(lambda: all(r["state"] == "up" for r in admin(ports.admin, "SHOW INSTANCES")),
                   what="every instance up")
        yield running
        running.assert_alive_and_clean()


async def connect(ports: OpsPorts, port: int | None = None, **kwargs: object) -> asyncpg.Connection:
    return await asyncpg.connect(host=HOST, port=port or ports.writer, user="app", password=APP.password,
                                 database="app", **kwargs)  # type: ignore[arg-type]


def by(rows: list[dict[str, str]], **match: str) -> list[dict[str, str]]:
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


# ---- sans-IO pieces: result-set encoding and command parsing ---------------------------------------

def _messages(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos + 1:pos + 5], "big")
        out.append((data[pos:pos + 1], data[pos + 5:pos + 1 + length]))
        pos += 1 + length
    return out


def test_encode_table() -> None:
    table = Table.of([("name", "text"), ("n", "int"), ("ok", "bool")], [("a", 1, True), (None, 22, False)])
    (t, t_body), (d1, d1_body), (d2, d2_body), (c, c_body) = _messages(encode_table(table))
    assert (t, d1, d2, c) == (b"T", b"D", b"D", b"C")
    assert t_body == (b"\x00\x03"
                      b"name\x00" + bytes.fromhex("00000000" "0000" "00000019" "ffff" "ffffffff" "0000") +
                      b"n\x00" + bytes.fromhex("00000000" "0000" "00000014" "0008" "ffffffff" "0000") +
                      b"ok\x00" + bytes.fromhex("00000000" "0000" "00000010" "0001" "ffffffff" "0000"))
    assert d1_body == b"\x00\x03" + b"\x00\x00\x00\x01a" + b"\x00\x00\x00\x011" + b"\x00\x00\x00\x01t"
    assert d2_body == b"\x00\x03" + b"\xff\xff\xff\xff" + b"\x00\x00\x00\x0222" + b"\x00\x00\x00\x01f"
    assert c_body == b"SHOW\x00"
    assert [text_value(v) for v in (None, 1.5, float("nan"), "é")] == [None, b"1.5", b"NaN", "é".encode()]
    assert table.as_dicts()[1] == {"name": None, "n": 22, "ok": False}


def test_command_parsing() -> None:
    assert commands.tokenize("FAILOVER main TO '127.0.0.1:5433'") == ["FAILOVER", "main", "TO", "127.0.0.1:5433"]
    assert commands.tokenize('pause "My-Cluster"') == ["pause", "My-Cluster"]
    assert commands.split_statements("show pools; SHOW 'a;b' ;; ") == ["show pools", "SHOW 'a;b'"]
    command, args = commands.find_command(["show", "Pools"])
    assert (command.name, args) == ("SHOW POOLS", [])
    command, args = commands.find_command(["KILL", "client", "17"])
    assert (command.name, args) == ("KILL CLIENT", ["17"])
    assert commands.find_command(["pause"])[1] == [] and commands.find_command(["PAUSE", "main"])[1] == ["main"]
    for tokens in (["SHOW"], ["SHOW", "POOLZ"], ["DROP", "TABLE"], ["PAUSE", "a", "b"], ["KILL", "CLIENT"]):
        with pytest.raises(commands.AdminError) as info:
            commands.find_command(tokens)
        assert info.value.sqlstate == "42601" and info.value.hint and "SHOW HELP" in info.value.hint


# ---- SHOW ----------------------------------------------------------------------------------------

def test_show_help_lists_every_command(proxy: RunningProxy, ports: OpsPorts) -> None:
    rows = admin(ports.admin, "SHOW HELP")
    assert [r["command"] for r in rows] == [c.usage for c in COMMANDS]
    assert all(r["description"] for r in rows)
    for usage in ("SHOW POOLS", "SHOW INSTANCES", "PAUSE [cluster]", "RESUME [cluster]", "RELOAD",
                  "FAILOVER cluster [TO 'host:port']", "KILL CLIENT id", "SHUTDOWN"):
        assert usage in [r["command"] for r in rows]


async def test_show_instances(proxy: RunningProxy, ports: OpsPorts, pg_cluster: PgCluster) -> None:
    client = await connect(ports)
    try:
        await client.fetchval("SELECT 1")
        rows = admin(ports.admin, "SHOW INSTANCES")
    finally:
        await client.close()
    columns = admin_columns(ports.admin, "SHOW INSTANCES")
    for column in ("cluster", "instance", "role", "state", "lag_ms", "position", "server_connections", "last_check"):
        assert column in columns
    primary, *replicas = pg_cluster.instance_addrs()
    assert [r["instance"] for r in rows] == pg_cluster.instance_addrs()
    (writer,) = by(rows, instance=primary)
    assert (writer["role"], writer["state"], writer["writer"]) == ("primary", "up", "t")
    assert int(writer["server_connections"]) >= 1 and writer["lag_ms"] == ""
    for row in rows:
        assert row["cluster"] == "main"
        assert LSN.match(row["position"]), row
        assert ISO.match(row["last_check"]), row
        assert row["timeline"] == "1"
    for replica in replicas:
        row = by(rows, instance=replica)[0]
        assert (row["role"], row["state"], row["writer"]) == ("replica", "up", "f")
        assert 0 <= float(row["lag_ms"]) < 10_000
        assert int(row["lag_bytes"]) >= 0
    # Last checks are recent: the health checks run every 200ms.
    newest = max(time.mktime(time.strptime(r["last_check"][:19], "%Y-%m-%dT%H:%M:%S")) for r in rows)
    assert abs(newest - time.mktime(time.gmtime())) < 5


async def test_show_pools_and_servers(proxy: RunningProxy, ports: OpsPorts, pg_cluster: PgCluster) -> None:
    primary = pg_cluster.instance_addrs()[0]
    client = await connect(ports, server_settings={"application_name": "pools-test"})
    try:
        await client.execute("BEGIN")
        backend = await client.fetchval("SELECT pg_backend_pid()")
        pools = by(admin(ports.admin, "SHOW POOLS"), instance=primary, user="app", database="app")
        servers = admin(ports.admin, "SHOW SERVERS")
        clients = by(admin(ports.admin, "SHOW CLIENTS"), application_name="pools-test")
    finally:
        await client.execute("COMMIT")
        await client.close()
    assert len(pools) == 1
    pool = pools[0]
    assert pool["cluster"] == "main" and pool["mode"] == "transaction" and pool["max_size"] == "4"
    assert int(pool["borrowed"]) >= 1 and int(pool["in_transaction"]) >= 1
    assert int(pool["open"]) == int(pool["idle"]) + int(pool["borrowed"])
    assert int(pool["borrows"]) >= 1 and pool["paused"] == "f"
    assert len(clients) == 1
    mine = by(servers, backend_pid=str(backend))
    assert len(mine) == 1, servers
    server = mine[0]
    assert server["instance"] == primary and server["state"] == "active" and server["tx_status"] == "T"
    assert server["client_id"] == clients[0]["id"]
    assert float(server["age_s"]) >= 0 and server["user"] == "app" and server["database"] == "app"


async def test_reconnect_retires_pooled_connections(proxy: RunningProxy, ports: OpsPorts) -> None:
    idle, busy = await connect(ports), await connect(ports)
    try:
        await busy.execute("BEGIN")
        old_busy = await busy.fetchval("SELECT pg_backend_pid()")
        old_idle = await idle.fetchval("SELECT pg_backend_pid()")   # back in the pool after this
        assert old_idle != old_busy
        assert str(old_idle) in {s["backend_pid"] for s in admin(ports.admin, "SHOW SERVERS")}
        with pytest.raises(AdminError, match="no cluster named"):
            admin(ports.admin, "RECONNECT nope")
        admin(ports.admin, "RECONNECT main app")
        servers = {s["backend_pid"] for s in admin(ports.admin, "SHOW SERVERS")}
        assert str(old_idle) not in servers and str(old_busy) in servers   # the borrowed one stays while in use
        assert await busy.fetchval("SELECT pg_backend_pid()") == old_busy
        await busy.execute("COMMIT")
        wait_until(lambda: str(old_busy) not in {s["backend_pid"] for s in admin(ports.admin, "SHOW SERVERS")},
                   timeout=5, what="the borrowed connection closed once given back")
        assert await idle.fetchval("SELECT 1") == 1 and await busy.fetchval("SELECT 1") == 1
    finally:
        await idle.close()
        await busy.close()


async def test_show_clients(proxy: RunningProxy, ports: OpsPorts, pg_cluster: PgCluster) -> None:
    busy = await connect(ports, server_settings={"application_name": "busy-client"})
    idle = await connect(ports, ports.reader, server_settings={"application_name": "idle-client"})
    try:
        await idle.fetchval("SELECT 1")
        await busy.execute("BEGIN")
        await busy.fetchval("SELECT 1")
        rows = admin(ports.admin, "SHOW CLIENTS")
    finally:
        await busy.execute("ROLLBACK")
        await busy.close()
        await idle.close()
    columns = admin_columns(ports.admin, "SHOW CLIENTS")
    assert {"id", "cluster", "endpoint", "user", "database", "peer", "state", "pinned", "transactions",
            "connected_at"} <= set(columns)
    (b,) = by(rows, application_name="busy-client")
    (i,) = by(rows, application_name="idle-client")
    assert (b["endpoint"], b["user"], b["database"], b["state"]) == ("writer", "app", "app", "active")
    assert b["server_instance"] == pg_cluster.instance_addrs()[0] and b["server_id"]
    assert (i["endpoint"], i["state"], i["server_id"], i["pinned"]) == ("reader", "idle", "", "")
    assert int(i["transactions"]) >= 1 and int(i["queries"]) >= 1
    assert re.match(r"^127\.0\.0\.1:\d+$", b["peer"]) and ISO.match(b["connected_at"])
    assert int(b["id"]) > 0 and b["id"] != i["id"]


async def test_show_clients_shows_pins(proxy: RunningProxy, ports: OpsPorts) -> None:
    client = await connect(ports, server_settings={"application_name": "pinned-client"})
    try:
        await client.execute("CREATE TEMP TABLE pin_me (x int)")
        (row,) = by(admin(ports.admin, "SHOW CLIENTS"), application_name="pinned-client")
        pools = admin(ports.admin, "SHOW POOLS")
    finally:
        await client.close()
    assert "temp" in row["pinned"].lower()
    assert sum(int(p["pinned"]) for p in pools) >= 1


async def test_show_endpoints_and_stats(proxy: RunningProxy, ports: OpsPorts, pg_cluster: PgCluster) -> None:
    primary, replica1, replica2 = pg_cluster.instance_addrs()
    before = {r["endpoint"]: r for r in admin(ports.admin, "SHOW STATS")}
    client = await connect(ports, ports.reader)
    try:
        for _ in range(5):
            await client.fetchval("SELECT 1")
        endpoints = {r["endpoint"]: r for r in admin(ports.admin, "SHOW ENDPOINTS")}
    finally:
        await client.close()
    after = {r["endpoint"]: r for r in admin(ports.admin, "SHOW STATS")}
    assert set(endpoints) == {"writer", "reader", "app", "analytics"}
    assert endpoints["writer"]["targets"] == primary and endpoints["writer"]["role"] == "writer"
    assert set(endpoints["reader"]["targets"].split(",")) == {replica1, replica2}
    assert set(endpoints["app"]["targets"].split(",")) == {primary, replica1, replica2}
    assert endpoints["analytics"]["targets"] == replica2 and endpoints["analytics"]["kind"] == "reader"
    assert endpoints["reader"]["clients"] == "1" and endpoints["reader"]["listen"] == f"{HOST}:{ports.reader}"
    assert int(endpoints["reader"]["requests_replica"]) >= 5
    assert int(after["reader"]["transactions"]) - int(before["reader"]["transactions"]) >= 5
    assert int(after["reader"]["clients_total"]) == int(before["reader"]["clients_total"]) + 1
    assert after["reader"]["clients"] == "0"


def test_show_config_masks_secrets(proxy: RunningProxy, ports: OpsPorts) -> None:
    rows = {r["key"]: r["value"] for r in admin(ports.admin, "SHOW CONFIG")}
    assert rows["server.admin_listen"] == f"{HOST}:{ports.admin}"
    assert rows["clusters.main.pool.max_server_connections"] == "4"
    assert rows["clusters.main.endpoints.reader.role"] == "reader"
    assert rows["users.admin.admin"] == "true"
    assert rows["users.app.password"] == "********"
    text = "\n".join(f"{k}={v}" for k, v in rows.items())
    for secret in SECRETS:
        assert secret and secret not in text


def test_show_version(proxy: RunningProxy, ports: OpsPorts) -> None:
    (row,) = admin(ports.admin, "show version;")
    assert re.match(r"^dbproxy \d+\.\d+\.\d+ \(Python 3\.\d+", row["version"])


def test_several_commands_in_one_query(proxy: RunningProxy, ports: OpsPorts) -> None:
    res = admin_psql(ports.admin, "SHOW VERSION; SHOW HELP", csv_output=False)
    assert res.returncode == 0 and "dbproxy" in res.stdout and "SHUTDOWN" in res.stdout


# ---- errors and refusals ----------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["SHOW NOTHING", "SELECT 1", "PAUSE a b", "KILL CLIENT", "FROB"])
def test_unknown_or_malformed_command(proxy: RunningProxy, ports: OpsPorts, command: str) -> None:
    res = admin_psql(ports.admin, command, csv_output=False)
    assert res.returncode == 1
    assert "ERROR:" in res.stderr and "HINT:  SHOW HELP lists the commands" in res.stderr


async def test_errors_carry_sqlstates_and_the_console_carries_on(proxy: RunningProxy, ports: OpsPorts) -> None:
    conn = await asyncpg.connect(host=HOST, port=ports.admin, user=ADMIN_USER, password=ADMIN_PASSWORD,
                                 database="dbproxy")
    try:
        with pytest.raises(asyncpg.PostgresError) as info:
            await conn.execute("SHOW NOTHING")
        assert info.value.sqlstate == "42601"
        with pytest.raises(asyncpg.PostgresError) as info:
            await conn.execute("KILL CLIENT 1")
        assert info.value.sqlstate == "42704"
        with pytest.raises(asyncpg.PostgresError) as info:   # asyncpg's fetch uses the extended protocol
            await conn.fetch("SHOW POOLS")
        assert info.value.sqlstate == "0A000"
        assert await conn.execute("SHOW POOLS") == "SHOW"
    finally:
        await conn.close()


async def test_refusals(proxy: RunningProxy, ports: OpsPorts) -> None:
    async def refused(user: str, password: str, database: str = "dbproxy") -> str:
        with pytest.raises(asyncpg.PostgresError) as info:
            await asyncpg.connect(host=HOST, port=ports.admin, user=user, password=password, database=database)
        return str(info.value.sqlstate)

    assert await refused("app", APP.password or "") == "28000"          # not an admin
    assert await refused(ADMIN_USER, "wrong") == "28P01"
    assert await refused("nobody", "x") == "28P01"
    assert await refused(ADMIN_USER, ADMIN_PASSWORD, "app") == "3D000"  # the console serves "dbproxy" only
    res = admin_psql(ports.admin, "SHOW POOLS", user="app", password=APP.password)
    assert res.returncode == 2 and 'user "app" is not an admin' in res.stderr
    assert 'admin client' in proxy.log_text() and 'is not an admin' in proxy.log_text()


# ---- PAUSE / RESUME / KILL ----------------------------------------------------------------------------

async def test_pause_waits_for_running_transactions_and_holds_new_ones(proxy: RunningProxy,
                                                                        ports: OpsPorts) -> None:
    running = await connect(ports)
    waiting = await connect(ports)
    try:
        await running.execute("BEGIN")
        await running.fetchval("SELECT 1")
        pause = asyncio.create_task(asyncio.to_thread(admin_psql, ports.admin, "PAUSE main", csv_output=False))
        await asyncio.sleep(0.5)
        assert not pause.done(), "PAUSE returned while a transaction was still running"
        assert admin(ports.admin, "SHOW POOLS")[0]["paused"] == "t"
        held = asyncio.create_task(waiting.fetchval("SELECT 2"))
        await async_wait_until(lambda: _waiting_clients(ports, 1), what="the held client counted as waiting")
        # The running transaction goes on and finishes while paused.
        assert await running.fetchval("SELECT 3") == 3
        await running.execute("COMMIT")
        res = await asyncio.wait_for(pause, 10)
        assert res.returncode == 0 and "NOTICE:  paused main; no transaction running" in res.stderr
        await asyncio.sleep(0.5)
        assert not held.done(), "a new transaction ran while the cluster was paused"
        res = admin_psql(ports.admin, "RESUME", csv_output=False)
        assert res.returncode == 0 and "resumed main" in res.stderr
        assert await asyncio.wait_for(held, 10) == 2
    finally:
        admin_psql(ports.admin, "RESUME")
        await running.close()
        await waiting.close()


async def _waiting_clients(ports: OpsPorts, expected: int) -> bool:
    samples = await asyncio.to_thread(scrape, ports.http)
    return samples['dbproxy_client_waiting{cluster="main"}'] == expected


async def test_pause_unknown_cluster(proxy: RunningProxy, ports: OpsPorts) -> None:
    with pytest.raises(AdminError) as info:
        admin(ports.admin, "PAUSE nope")
    assert 'no cluster named "nope"' in info.value.stderr


async def test_kill_client(proxy: RunningProxy, ports: OpsPorts) -> None:
    victim = await connect(ports, server_settings={"application_name": "victim"})
    bystander = await connect(ports)
    try:
        await victim.fetchval("SELECT 1")
        (row,) = by(admin(ports.admin, "SHOW CLIENTS"), application_name="victim")
        res = admin_psql(ports.admin, f"KILL CLIENT {row['id']}", csv_output=False)
        assert res.returncode == 0, res.stderr
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)):
            await victim.fetchval("SELECT 1")
        await async_wait_until(lambda: _no_client(ports, "victim"), what="victim gone from SHOW CLIENTS")
        assert await bystander.fetchval("SELECT 5") == 5
        # Connection lines are written in batches, within 50 ms.
        wait_until(lambda: re.search(r"client \S+ disconnected: killed by admin", proxy.log_text()),
                   what="the disconnect log line")
    finally:
        await victim.close(timeout=1)
        await bystander.close()


async def _no_client(ports: OpsPorts, application_name: str) -> bool:
    rows = await asyncio.to_thread(admin, ports.admin, "SHOW CLIENTS")
    return not by(rows, application_name=application_name)


# ---- FAILOVER ------------------------------------------------------------------------------------------

def test_failover_arguments(proxy: RunningProxy, ports: OpsPorts, pg_cluster: PgCluster) -> None:
    primary = pg_cluster.instance_addrs()[0]
    for command, message in (
            ("FAILOVER main TO '127.0.0.1:1'", "127.0.0.1:1 is not an instance of cluster main"),
            ("FAILOVER main TO 'nonsense'", "invalid instance address"),
            ("FAILOVER main INTO 'x'", "usage: FAILOVER cluster [TO 'host:port']"),
            ("FAILOVER nope", 'no cluster named "nope"'),
            (f"FAILOVER main TO '{primary}'", f"FAILOVER refused: {primary} is already the writer")):
        res = admin_psql(ports.admin, command, csv_output=False)
        assert res.returncode == 1 and message in res.stderr, (command, res.stderr)


async def test_failover_switches_the_writer(pg_cluster_factory: Callable[..., PgCluster],
                                            proxy_factory: Callable[..., ProxyProcess]) -> None:
    pg = pg_cluster_factory(3)   # disposable: the switchover changes the topology
    ports = OpsPorts.of(free_ports(6))
    process = proxy_factory(ops_config(pg, ports, health_user="postgres"))
    primary, replica1, _ = pg.instance_addrs()
    wait_until(lambda: all(r["state"] == "up" for r in admin(ports.admin, "SHOW INSTANCES")), what="all up")
    client = await connect(ports)
    try:
        assert await client.fetchval("SELECT inet_server_port()") == int(primary.rsplit(":", 1)[1])
        res = await asyncio.to_thread(admin, ports.admin, f"FAILOVER main TO '{replica1}'")
        (row,) = res
        assert (row["cluster"], row["old_writer"], row["new_writer"]) == ("main", primary, replica1)
        assert float(row["paused_ms"]) >= 0
        await async_wait_until(lambda: _writer_is(ports, replica1), timeout=15, what="SHOW INSTANCES writer")
        # The same client connection now writes on the new primary.
        assert await client.fetchval("SELECT inet_server_port()") == int(replica1.rsplit(":", 1)[1])
        assert await client.fetchval("SELECT pg_is_in_recovery()") is False
    finally:
        await client.close()
    assert "admin: FAILOVER main" in process.log_text()


async def _writer_is(ports: OpsPorts, instance: str) -> bool:
    rows = await asyncio.to_thread(admin, ports.admin, "SHOW INSTANCES")
    return by(rows, writer="t") == by(rows, instance=instance)


# ---- RELOAD ----------------------------------------------------------------------------------------------

def test_reload_applies_and_rejects(proxy: RunningProxy, ports: OpsPorts) -> None:
    path = proxy.process.config_path
    original = path.read_text()
    try:
        path.write_text(original.replace("max_server_connections = 4", "max_server_connections = 6"))
        res = admin_psql(ports.admin, "RELOAD", csv_output=False)
        assert res.returncode == 0 and "configuration reloaded" in res.stderr
        rows = {r["key"]: r["value"] for r in admin(ports.admin, "SHOW CONFIG")}
        assert rows["clusters.main.pool.max_server_connections"] == "6"
        assert all(p["max_size"] == "6" for p in admin(ports.admin, "SHOW POOLS"))
        assert re.search(r"configuration reloaded from .*: cluster main: pool changed", proxy.log_text())

        path.write_text(original.replace("max_server_connections = 4", "max_server_connections = -1"))
        res = admin_psql(ports.admin, "RELOAD", csv_output=False)
        assert res.returncode == 1
        assert "configuration not reloaded; the running one is kept" in res.stderr
        assert "max_server_connections" in res.stderr   # the problem itself, in the HINT
        assert "reload rejected: config error" in proxy.log_text()
        rows = {r["key"]: r["value"] for r in admin(ports.admin, "SHOW CONFIG")}
        assert rows["clusters.main.pool.max_server_connections"] == "6"
    finally:
        path.write_text(original)
        admin_psql(ports.admin, "RELOAD")
    assert all(p["max_size"] == "4" for p in admin(ports.admin, "SHOW POOLS"))


async def test_reload_opens_closes_and_changes_endpoints(proxy: RunningProxy, ports: OpsPorts,
                                                         pg_cluster: PgCluster) -> None:
    path = proxy.process.config_path
    original = path.read_text()
    extra_port, busy_port = free_ports(2)
    analytics = original[original.index('[[clusters.main.endpoints]]\nname = "analytics"'):]
    changed = original.replace(analytics, f"""[[clusters.main.endpoints]]
name = "extra"
listen = "{HOST}:{extra_port}"
role = "reader"
""").replace('role = "split"', 'role = "writer"')
    staying = await connect(ports, ports.custom)   # on "analytics", which the reload removes
    try:
        path.write_text(changed)
        res = admin_psql(ports.admin, "RELOAD", csv_output=False)
        assert res.returncode == 0, res.stderr
        endpoints = {r["endpoint"]: r for r in admin(ports.admin, "SHOW ENDPOINTS")}
        assert set(endpoints) == {"writer", "reader", "app", "extra"} and endpoints["app"]["role"] == "writer"
        extra = await connect(ports, extra_port)
        assert await extra.fetchval("SELECT pg_is_in_recovery()") is True
        await extra.close()
        with pytest.raises(OSError):
            await connect(ports, ports.custom)
        assert await staying.fetchval("SELECT 7") == 7      # connected clients of a removed endpoint stay
        split_now_writer = await connect(ports, ports.split)  # new clients get the changed role
        assert await split_now_writer.fetchval("SELECT pg_is_in_recovery()") is False
        await split_now_writer.close()
        assert "endpoint main/analytics closed by reload; its connected clients stay" in proxy.log_text()

        with socket.socket() as taken:
            taken.bind((HOST, busy_port))
            taken.listen()
            path.write_text(changed.replace(f"{HOST}:{extra_port}", f"{HOST}:{busy_port}"))
            res = admin_psql(ports.admin, "RELOAD", csv_output=False)
        assert res.returncode == 1 and "configuration reloaded with problems" in res.stderr
        assert f"endpoint main/extra: cannot listen on {HOST}:{busy_port}" in res.stderr
    finally:
        path.write_text(original)
        admin_psql(ports.admin, "RELOAD")
        await staying.close()
    assert {r["endpoint"] for r in admin(ports.admin, "SHOW ENDPOINTS")} == {"writer", "reader", "app", "analytics"}
    back = await connect(ports, ports.custom)
    assert await back.fetchval("SELECT 8") == 8
    await back.close()


async def test_reload_resizes_pools_under_100_clients_without_dropping_any(
        pg_cluster: PgCluster, proxy_factory: Callable[..., ProxyProcess]) -> None:
    ports = OpsPorts.of(free_ports(6))
    config = ops_config(pg_cluster, ports, pool_size=2, borrow_timeout="30s")
    process = proxy_factory(config)
    primary = pg_cluster.instance_addrs()[0]
    clients = [await connect(ports) for _ in range(100)]
    stop = asyncio.Event()
    done = [0] * len(clients)

    async def load(i: int) -> None:
        while not stop.is_set():
            assert await clients[i].fetchval("SELECT $1::int FROM pg_sleep(0.005)", i) == i
            done[i] += 1

    def primary_pool() -> dict[str, str]:
        return by(admin(ports.admin, "SHOW POOLS"), instance=primary)[0]

    tasks = [asyncio.create_task(load(i)) for i in range(len(clients))]
    try:
        await asyncio.sleep(1.0)
        assert int(primary_pool()["open"]) <= 2 and int(primary_pool()["waiting"]) > 0

        path = Path(process.config_path)
        path.write_text(config.replace("max_server_connections = 2", "max_server_connections = 8"))
        res = await asyncio.to_thread(admin_psql, ports.admin, "RELOAD", csv_output=False)
        assert res.returncode == 0, res.stderr
        peak = await async_wait_until(lambda: _pool_opened(ports, primary, 5), timeout=10,
                                      what="the pool growing past 4 connections")
        assert int(peak["max_size"]) == 8 and int(peak["open"]) <= 8

        path.write_text(config.replace("max_server_connections = 2", "max_server_connections = 3"))
        process.send_signal(1)   # SIGHUP: the same reload
        await async_wait_until(lambda: _pool_opened(ports, primary, 0, at_most=3), timeout=10,
                               what="the pool shrinking to 3 connections")
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, f"{len(errors)} clients failed, first: {errors[0]!r}"
    assert min(done) > 0
    for i, client in enumerate(clients):   # every client is still connected and works
        assert not client.is_closed()
        assert await client.fetchval("SELECT $1::int", i) == i
    assert len(by(admin(ports.admin, "SHOW CLIENTS"), endpoint="writer")) == 100
    for client in clients:
        await client.close()
    disconnect_line = re.compile(r"dbproxy.connections: client \S+ disconnected: (.*) \(transactions")
    # Connection lines are written in batches, within 50 ms.
    wait_until(lambda: len(disconnect_line.findall(process.log_text())) >= 100, what="100 disconnect lines")
    log = process.log_text()
    assert log.count("configuration reloaded from") == 2
    reasons = disconnect_line.findall(log)
    assert len(reasons) == 100 and set(reasons) == {"client sent Terminate"}, set(reasons)
    assert "Traceback" not in log


async def _pool_opened(ports: OpsPorts, instance: str, at_least: int,
                       at_most: int | None = None) -> dict[str, str] | None:
    rows = await asyncio.to_thread(admin, ports.admin, "SHOW POOLS")
    pool = by(rows, instance=instance)[0]
    if int(pool["open"]) < at_least or (at_most is not None and int(pool["open"]) > at_most):
        return None
    return pool


# ---- md5 login, SHUTDOWN ------------------------------------------------------------------------------

def test_md5_admin_login_and_shutdown(pg_cluster: PgCluster, proxy_factory: Callable[..., ProxyProcess]) -> None:
    ports = OpsPorts.of(free_ports(6))
    process = proxy_factory(ops_config(pg_cluster, ports, client_auth="md5"))
    assert admin(ports.admin, "SHOW VERSION")
    res = admin_psql(ports.admin, "SHOW VERSION", user=MD5.name, password=MD5.password)
    assert res.returncode == 2 and "is not an admin" in res.stderr
    res = admin_psql(ports.admin, "SHUTDOWN", csv_output=False)
    assert res.returncode == 0 and "draining" in res.stderr
    assert process.wait(10) == 0
    log = process.log_text()
    assert "admin: SHUTDOWN" in log and "dbproxy stopped" in log
