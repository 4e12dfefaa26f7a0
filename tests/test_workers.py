"""[server] workers = 2 against real servers: pgbench through both workers, SHOW / metrics / status of the
whole proxy, KILL CLIENT and CancelRequest across workers, PAUSE / RESUME and SIGHUP reaching every
worker, kill -9 of a worker (restarted; the other worker's clients unaffected), workers forked from the
template (sharing its pages), and a follow-mode failover switching every worker's writer (disposable cluster).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from conftest import ProxyProcess
from e2e_helpers import RunningProxy, clean_env, running_proxy, send_cancel_request, wait_until
from ops_helpers import OpsPorts, admin, admin_psql, http_get, ops_config, scrape

from deploy.pgcluster import APP_DB, HOST, PgCluster, free_ports, pg_binary

POOL = 4
CLIENTS = 12   # each lands on a worker the kernel picks: all on one of two has odds 2 ** -11


def workers_config(pg: PgCluster, ports: OpsPorts, **kwargs: object) -> str:
    text = ops_config(pg, ports, client_auth="trust", pool_size=POOL, **kwargs)  # type: ignore[arg-type]
    return text.replace("[server]\n", "[server]\nworkers = 2\n", 1)


def worker_pids(log_text: str) -> dict[int, int]:
    """Worker index -> pid, from the latest "worker I of 2 ready (pid P)" line of each."""
    return {int(i): int(p) for i, p in re.findall(r"worker (\d+) of 2 ready \(pid (\d+)\)", log_text)}


def dsn(port: int) -> str:
    return f"postgresql://app@{HOST}:{port}/{APP_DB}"


@pytest.fixture(scope="module")
def ports() -> OpsPorts:
    return OpsPorts.of(free_ports(6))


@pytest.fixture(scope="module")
def proxy(pg_cluster: PgCluster, ports: OpsPorts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    with running_proxy(workers_config(pg_cluster, ports), tmp_path_factory.mktemp("workers"), ports.writer) as proxy:
        wait_until(lambda: len(worker_pids(proxy.log_text())) == 2, what="two workers ready")
        yield proxy
        proxy.assert_alive_and_clean()


async def connect_many(port: int, n: int = CLIENTS) -> list[asyncpg.Connection]:
    return list(await asyncio.gather(*(asyncpg.connect(dsn(port)) for _ in range(n))))


async def by_worker(conns: list[asyncpg.Connection]) -> dict[int, list[asyncpg.Connection]]:
    """Connections by the worker serving them: a worker's client ids are its index modulo the count."""
    out: dict[int, list[asyncpg.Connection]] = {0: [], 1: []}
    for conn in conns:
        out[conn.get_server_pid() % 2].append(conn)
    assert out[0] and out[1], "every client landed on the same worker"
    return out


async def test_pgbench_through_two_workers(proxy: RunningProxy, pg_cluster: PgCluster, tmp_path: Path) -> None:
    script = tmp_path / "select.sql"
    script.write_text("\\set n random(1, 1000)\nSELECT :n, count(*) FROM pg_class WHERE oid > :n;\n")
    argv = [pg_binary("pgbench"), "-n", "-h", HOST, "-p", str(proxy.port), "-U", "app", "-c", "8", "-j", "2",
            "-t", "200", "-f", str(script), "-M", "extended", APP_DB]
    result = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=120,
                                     env=clean_env(PGSSLMODE="disable"), stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "number of transactions actually processed: 1600/1600" in result.stdout, result.stdout
    assert "number of failed transactions: 0" in result.stdout, result.stdout
    stats = {r["endpoint"]: r for r in admin(_admin_port(proxy), "SHOW STATS")}
    assert int(stats["writer"]["transactions"]) >= 1600
    assert int(stats["writer"]["clients_total"]) >= 8


def _admin_port(proxy: RunningProxy) -> int:
    match = re.search(r'admin_listen = "[^:]+:(\d+)"', proxy.process.config_path.read_text())
    assert match
    return int(match[1])


def _http_port(proxy: RunningProxy) -> int:
    match = re.search(r'http_listen = "[^:]+:(\d+)"', proxy.process.config_path.read_text())
    assert match
    return int(match[1])


async def test_show_metrics_and_status_add_up_every_worker(proxy: RunningProxy) -> None:
    conns = await connect_many(proxy.port)
    try:
        await by_worker(conns)
        await asyncio.gather(*(c.fetchval("SELECT 1") for c in conns))
        ids = {c.get_server_pid() for c in conns}
        clients = admin(_admin_port(proxy), "SHOW CLIENTS")
        assert ids <= {int(r["id"]) for r in clients}
        assert len({r["id"] for r in clients}) == len(clients)   # ids do not clash across workers
        pools = [r for r in admin(_admin_port(proxy), "SHOW POOLS") if r["user"] == "app" and r["database"] == APP_DB
                 and r["instance"] == proxy_writer(proxy)]
        assert len(pools) == 1 and int(pools[0]["max_size"]) == POOL   # 2 + 2: one row for the proxy
        endpoints = {r["endpoint"]: r for r in admin(_admin_port(proxy), "SHOW ENDPOINTS")}
        assert int(endpoints["writer"]["clients"]) == CLIENTS
        servers = admin(_admin_port(proxy), "SHOW SERVERS")
        assert len({r["id"] for r in servers}) == len(servers)
        samples = scrape(_http_port(proxy))
        assert samples['dbproxy_client_connections{cluster="main",endpoint="writer"}'] == CLIENTS
        writer = proxy_writer(proxy)
        assert samples[f'dbproxy_instance_is_primary{{cluster="main",instance="{writer}"}}'] == 1
        text = http_get(_http_port(proxy), "/metrics").text
        assert text.count("# TYPE dbproxy_client_connections gauge") == 1   # one set of series, not two
        status = http_get(_http_port(proxy), "/status").json()
        main = next(c for c in status["clusters"] if c["name"] == "main")
        assert main["clients"] == CLIENTS
        assert main["writer"] == proxy_writer(proxy)
    finally:
        await asyncio.gather(*(c.close() for c in conns))


def proxy_writer(proxy: RunningProxy) -> str:
    match = re.search(r'instances = \["([^"]+)"', proxy.process.config_path.read_text())
    assert match
    return match[1]


async def test_kill_client_and_cancel_reach_the_other_worker(proxy: RunningProxy) -> None:
    conns = await connect_many(proxy.port)
    try:
        groups = await by_worker(conns)
        for index in (0, 1):
            victim = groups[index][0]
            admin(_admin_port(proxy), f"KILL CLIENT {victim.get_server_pid()}")
            with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
                await victim.fetchval("SELECT 1")
            assert await groups[index][1].fetchval("SELECT 1") == 1
        # Each CancelRequest comes on a new connection, to a worker the kernel picks: of 8 some reach
        # the other worker (all 8 on the right one: odds 2 ** -8), which passes it on.
        for conn in groups[0][2:6] + groups[1][2:6]:
            query = asyncio.ensure_future(conn.fetchval("SELECT pg_sleep(20)"))
            await asyncio.sleep(0.2)
            protocol = conn._protocol  # type: ignore[attr-defined]
            await send_cancel_request(proxy.port, protocol.backend_pid, protocol.backend_secret)
            with pytest.raises(asyncpg.QueryCanceledError):
                await asyncio.wait_for(query, 3)
            assert await conn.fetchval("SELECT 2") == 2
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


async def test_pause_and_resume_reach_every_worker(proxy: RunningProxy) -> None:
    conns = await connect_many(proxy.port)
    try:
        groups = await by_worker(conns)
        await asyncio.to_thread(admin, _admin_port(proxy), "PAUSE")
        waiting = [asyncio.ensure_future(groups[i][0].fetchval("SELECT 1")) for i in (0, 1)]
        await asyncio.sleep(0.5)
        assert not any(w.done() for w in waiting)
        assert all(r["paused"] == "t" for r in admin(_admin_port(proxy), "SHOW POOLS"))
        await asyncio.to_thread(admin, _admin_port(proxy), "RESUME")
        assert await asyncio.wait_for(asyncio.gather(*waiting), 5) == [1, 1]
    finally:
        await asyncio.gather(*(c.close() for c in conns))


async def test_listeners_are_gathered_and_recording_is_refused(proxy: RunningProxy) -> None:
    """LISTEN clients of both workers show in one SHOW LISTENERS; RECORD needs one process and says so."""
    conns = await connect_many(proxy.port)
    try:
        groups = await by_worker(conns)
        for i in (0, 1):
            await groups[i][0].add_listener(f"workers_ch{i}", lambda *args: None)
        rows = admin(_admin_port(proxy), "SHOW LISTENERS")
        assert len(rows) == 2, rows   # one listening connection in each worker
        refused = admin_psql(_admin_port(proxy), "RECORD START '/tmp/dbproxy-workers.rec'")
        assert refused.returncode != 0 and "RECORD needs [server] workers = 1" in refused.stderr
    finally:
        await asyncio.gather(*(c.close() for c in conns))


async def test_sighup_reload_reaches_every_worker(proxy: RunningProxy) -> None:
    path = proxy.process.config_path
    original = path.read_text()

    def max_size() -> int:
        rows = [r for r in admin(_admin_port(proxy), "SHOW POOLS") if r["user"] == "app"
                and r["instance"] == proxy_writer(proxy)]
        return sum(int(r["max_size"]) for r in rows)
    try:
        path.write_text(original.replace(f"max_server_connections = {POOL}", "max_server_connections = 7"))
        proxy.process.send_signal(signal.SIGHUP)
        wait_until(lambda: max_size() == 7, what="max_size 4 + 3 after SIGHUP")
    finally:
        path.write_text(original)
        proxy.process.send_signal(signal.SIGHUP)
        wait_until(lambda: max_size() == POOL, what="max_size back to 2 + 2")


async def test_killed_worker_is_restarted_and_the_other_workers_clients_carry_on(proxy: RunningProxy) -> None:
    conns = await connect_many(proxy.port)
    try:
        groups = await by_worker(conns)
        pids = worker_pids(proxy.log_text())
        os.kill(pids[1], signal.SIGKILL)
        wait_until(lambda: worker_pids(proxy.log_text()).get(1) not in (None, pids[1]), timeout=20,
                   what="worker 1 restarted")
        for conn in groups[0]:   # worker 0's clients never noticed
            assert await conn.fetchval("SELECT 3") == 3
        for conn in groups[1]:
            with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError, OSError)):
                await conn.fetchval("SELECT 3")
        fresh = await connect_many(proxy.port)
        try:
            await by_worker(fresh)
            assert await asyncio.gather(*(c.fetchval("SELECT 4") for c in fresh)) == [4] * CLIENTS
        finally:
            await asyncio.gather(*(c.close() for c in fresh))
        assert "exited with code -9; restarting it" in proxy.log_text()
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


@pytest.mark.slow
async def test_follow_mode_failover_switches_every_workers_writer(
        pg_cluster_factory: Callable[..., PgCluster], proxy_factory: Callable[..., ProxyProcess]) -> None:
    pg = pg_cluster_factory()
    ports = OpsPorts.of(free_ports(6))
    proxy = proxy_factory(workers_config(pg, ports, interval="200ms", failure_threshold=2, mode="follow",
                                         health_user="postgres", borrow_timeout="20s"))
    wait_until(lambda: len(worker_pids(proxy.log_text())) == 2, what="two workers ready")
    conns = await connect_many(ports.writer)
    try:
        await by_worker(conns)
        await asyncio.to_thread(pg.kill_instance, 0)
        await asyncio.to_thread(pg.promote, 1)
        await asyncio.to_thread(pg.follow, 2, 1)
        started = time.monotonic()

        async def write(conn: asyncpg.Connection) -> bool:
            while time.monotonic() - started < 30:
                try:
                    return await conn.fetchval("SELECT NOT pg_is_in_recovery()")  # type: ignore[no-any-return]
                except (asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError, OSError):
                    return False   # its server connection was to the killed primary: a connection error
            return False
        fresh = await connect_many(ports.writer)
        groups = await by_worker(fresh)
        answers = await asyncio.gather(*(write(c) for c in groups[0] + groups[1]))
        assert all(answers), answers   # every worker sends writer traffic to the new primary
        await asyncio.gather(*(c.close() for c in fresh))
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


async def test_limits_and_allowlists_hold_across_workers(
        pg_cluster: PgCluster, proxy_factory: Callable[..., ProxyProcess]) -> None:
    """md5user's max_client_connections = 2 is 1 + 1 over two workers: never more than 2 in the proxy,
    whichever worker the kernel picks; an endpoint's allowlist refuses in every worker."""
    ports = OpsPorts.of(free_ports(6))
    text = workers_config(pg_cluster, ports)
    text = text.replace('server_user = "md5user"\n', 'server_user = "md5user"\nmax_client_connections = 2\n', 1)
    text = text.replace('name = "analytics"\n', 'name = "analytics"\nallow = ["10.0.0.0/8"]\n', 1)
    proxy = proxy_factory(text)
    wait_until(lambda: len(worker_pids(proxy.log_text())) == 2, what="two workers ready")
    dsn_md5 = f"postgresql://md5user:md5-secret@{HOST}:{ports.writer}/{APP_DB}"
    conns: list[asyncpg.Connection] = []
    refused = 0
    try:
        for _ in range(12):
            try:
                conns.append(await asyncpg.connect(dsn_md5))
            except asyncpg.TooManyConnectionsError:
                refused += 1
        assert 1 <= len(conns) <= 2 and refused == 12 - len(conns)
        for _ in range(6):   # each new connection goes to a worker the kernel picks
            with pytest.raises((ConnectionError, asyncpg.InterfaceError, OSError)):
                await asyncpg.connect(dsn(ports.custom), timeout=5)
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    assert "not in its allowlist" in proxy.log_text()


@pytest.mark.slow
async def test_switchover_pauses_and_drains_every_worker(
        pg_cluster_factory: Callable[..., PgCluster], proxy_factory: Callable[..., ProxyProcess]) -> None:
    """Admin FAILOVER with two workers: the control process pauses both, waits for their transactions on
    the old writer, promotes; no write of 8 clients (spread over both workers) fails or is lost."""
    from bench.failover import TABLE, WriteLoad

    pg = pg_cluster_factory()
    pg.sql(0, f"CREATE TABLE {TABLE} (client int, seq int, at timestamptz DEFAULT clock_timestamp(), "
              f"PRIMARY KEY (client, seq)); GRANT ALL ON {TABLE} TO PUBLIC", db=APP_DB)
    ports = OpsPorts.of(free_ports(6))
    proxy = proxy_factory(workers_config(pg, ports, interval="200ms", failure_threshold=3, mode="follow",
                                         health_user="postgres", borrow_timeout="20s"))
    wait_until(lambda: len(worker_pids(proxy.log_text())) == 2, what="two workers ready")
    old, *replicas = pg.instance_addrs()
    writes = WriteLoad(dsn(ports.writer), clients=8)
    await writes.start()
    try:
        await by_worker(writes.conns)   # asyncpg connections of both workers
        deadline = time.monotonic() + 10
        while len(writes.acknowledged()) < 100 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        [row] = await asyncio.to_thread(admin, ports.admin, "FAILOVER main")
        await writes.wait_resumed(time.monotonic(), timeout=10)
        await asyncio.sleep(0.3)
    finally:
        await writes.stop()
    try:
        assert row["old_writer"] == old and row["new_writer"] in replicas
        assert not writes.errors() and not writes.disconnected, writes.errors()[:5]
        new = pg.instance_addrs().index(row["new_writer"])
        assert await writes.conns[0].fetchval("SELECT inet_server_port()") == pg.ports[new]
        assert all(r["paused"] == "f" for r in admin(ports.admin, "SHOW POOLS"))   # resumed in every worker
    finally:
        await writes.close()


async def test_a_cluster_added_by_reload_serves_in_every_worker(proxy: RunningProxy) -> None:
    path = proxy.process.config_path
    original = path.read_text()
    (port,) = free_ports(1)
    instances = re.search(r"instances = (\[[^\]]*\])", original)
    assert instances
    added = (f'\n[clusters.extra]\nengine = "postgres"\ninstances = {instances[1]}\nclient_auth = "trust"\n'
             f'[[clusters.extra.endpoints]]\nname = "writer"\nlisten = "{HOST}:{port}"\nrole = "writer"\n')
    try:
        path.write_text(original + added)
        proxy.process.send_signal(signal.SIGHUP)
        wait_until(lambda: proxy.log_text().count("endpoint extra/writer (writer) listening") == 2,
                   what="the new endpoint listening in both workers")
        conns = await connect_many(port)
        try:
            await by_worker(conns)
            assert await asyncio.gather(*(c.fetchval("SELECT NOT pg_is_in_recovery()") for c in conns)) == \
                [True] * CLIENTS
        finally:
            await asyncio.gather(*(c.close() for c in conns))
    finally:
        path.write_text(original)
        proxy.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "extra" not in {r["cluster"] for r in admin(_admin_port(proxy), "SHOW ENDPOINTS")},
                   what="cluster extra removed again")


def test_workers_are_forked_from_the_template_and_share_its_pages(proxy: RunningProxy) -> None:
    """Each worker is the control process's child (reparented: it subreaps), named dbproxy-worker, and
    most of its resident memory is shared (its PSS well under its RSS), as a fresh interpreter's is not."""
    from bench.idle import process_memory, tree_memory

    control = proxy.process.pid
    names = {m.pid: m.name for m in tree_memory(control)}
    assert "dbproxy-tmpl" in names.values()
    for pid in worker_pids(proxy.log_text()).values():
        stat = Path(f"/proc/{pid}/stat").read_text()
        assert int(stat.rsplit(")", 1)[1].split()[1]) == control
        assert names.get(pid) == "dbproxy-worker"
        memory = process_memory(pid)
        assert memory is not None and memory.uss < 0.6 * memory.rss, memory
