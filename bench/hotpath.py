"""In-process micro-benchmark of the transaction-pooling hot path (no sockets): µs of Python per transaction.

Drives a real ClientSession and ServerConnection with fake transports through N simple-query
transactions (Query → RowDescription, DataRow, CommandComplete, ReadyForQuery) and reports the
Python cost per transaction. `--connect` instead runs N whole short connections as pgbench -C
makes them (SSLRequest, startup, md5 password, one query, Terminate, close) and reports the Python
cost per connection; the sockets, the event loop and the kernel are not in it.
`--replay` turns on failover.replay (the transaction is recorded, its results hashed), either engine.
`--engine mysql` runs the same transactions through a MySQL client session and server connection
(COM_QUERY of a sysbench point select → a one-row text result set). `--profile` prints a cProfile summary.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import time
from collections.abc import Callable

from bench.inprocess import (
    FakeTransport,
    idle_server,
    logged_in_session,
    one_instance_config,
    server_parameters_known,
)
from proxy import logs
from proxy.app import ProxyApp
from proxy.config import parse_config
from proxy.engines.postgres.session import PgClientSession as ClientSession
from proxy.engines.postgres.wire import messages as m
from proxy.engines.postgres.wire.auth import md5_password

QUERY = m.query("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;")
RESPONSE = (m.message(b"T", b"\x00\x01abalance\x00" + b"\x00" * 18) + m.message(b"D", b"\x00\x01\x00\x00\x00\x010")
            + m.message(b"C", b"SELECT 1\x00") + m.ready_for_query(b"I"))


def _timed(n: int, profile: bool, what: str, run: Callable[[int], None],
           detail: Callable[[], str] | None = None) -> None:
    """Run `run(n)` once (under cProfile when asked) and print the µs per item (and `detail()` after it)."""
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    run(n)
    if profiler:
        profiler.disable()
    _report(n, time.perf_counter() - started, profiler, what, detail() if detail else "")


def _report(n: int, elapsed: float, profiler: cProfile.Profile | None, what: str, detail: str = "") -> None:
    noun, _, extra = what.partition(" (")
    print(f"{n} {noun}s{' (' + extra if extra else ''}: {elapsed / n * 1e6:.2f} µs of Python per {noun}"
          + (f"; {detail}" if detail else ""))
    if profiler:
        stats = pstats.Stats(profiler)
        calls = sum(v[1] for v in stats.stats.values())  # type: ignore[attr-defined]
        print(f"{calls / n:.1f} Python calls per {noun}")
        stats.sort_stats("tottime").print_stats(25)


async def connections(n: int, profile: bool) -> None:
    """N pgbench -C connections: SSLRequest, startup, md5 password, one query, Terminate, close."""
    config = parse_config(one_instance_config(client_auth="md5"))
    app = ProxyApp(config)
    cluster = app.clusters["main"]
    instance = cluster.config.instances[0]
    endpoint = cluster.config.endpoints[0]
    cluster.choose_target = lambda _endpoint, _route, _min_position: instance  # no probes here
    login = app.users.get("app")
    assert login is not None
    server = idle_server(cluster, instance, login, "app")
    server.gucs["application_name"] = "'pgbench'"   # as every pooled server has after pgbench's first client
    pool = cluster.pool(instance, login.user, "app")
    server_parameters_known(cluster, login, "app")
    logs.setup_logging("text", "info")          # connection lines formatted and batched as in `dbproxy run`
    assert logs._handler is not None
    logs._handler.stream = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the benchmark
    ssl_request = m.ssl_request()
    startup = m.startup_message({"user": "app", "database": "app", "application_name": "pgbench"})
    terminate = m.terminate()

    def run(count: int) -> None:
        for _ in range(count):
            session = ClientSession(app, cluster, endpoint)
            transport = FakeTransport(record=True, peer=("127.0.0.1", 40000))
            session.connection_made(transport)  # type: ignore[arg-type]
            session.data_received(ssl_request)
            session.data_received(startup)
            salt = transport.data[-4:]
            session.data_received(m.password_message(md5_password("app", "x", salt)))
            session.data_received(QUERY)
            server.data_received(RESPONSE)
            session.data_received(terminate)
            session.connection_lost(None)

    run(1000)
    assert pool.idle == [server] and not app.sessions
    assert server.transport.written >= 1000 * len(QUERY)  # type: ignore[union-attr]
    _timed(n, profile, "connection", run)


async def main(n: int, profile: bool, role: str = "writer", replay: bool = False) -> None:
    text = one_instance_config(role=role) + ("[clusters.main.failover]\nreplay = true\n" if replay else "")
    config = parse_config(text)
    app = ProxyApp(config)
    cluster = app.clusters["main"]
    instance = cluster.config.instances[0]
    cluster.choose_target = lambda _endpoint, _route, _min_position: instance  # no probes here
    session, login = logged_in_session(app, "main", "app", "app")
    server = idle_server(cluster, instance, login, "app")
    pool = cluster.pool(instance, login.user, "app")

    queries = [m.query(f"SELECT abalance FROM pgbench_accounts WHERE aid = {i};") for i in range(1000)]

    def run(count: int) -> None:
        for i in range(count):
            session.data_received(queries[i % 1000] if role == "split" else QUERY)
            server.data_received(RESPONSE)

    run(1000)
    assert session.server is None and pool.idle == [server] and not session._pending
    sent = sum(len(queries[i]) for i in range(1000)) if role == "split" else 1000 * len(QUERY)
    assert server.transport.written >= sent  # type: ignore[union-attr]
    _timed(n, profile, "transaction", run)


MYSQL_CONFIG = """
[[users]]
name = "app"
password = "x"
[clusters.main]
engine = "mysql"
instances = ["127.0.0.1:1"]
[clusters.main.pool]
max_server_connections = 4
[[clusters.main.endpoints]]
name = "writer"
listen = "127.0.0.1:2"
role = "writer"
"""


async def mysql_transactions(n: int, profile: bool, replay: bool = False, waiting: bool = False) -> None:
    """N autocommit point selects through a MySQL session (the libmariadb client's capabilities).

    `waiting`: two clients share one server connection, so every other transaction waits in the pool's
    queue (the borrow path of a pool smaller than its clients, as sysbench 16 threads on pool 8)."""
    from proxy.config import Address
    from proxy.core.session import READY
    from proxy.engines.mysql.server import VARIANT_CAPABILITIES, MysqlServerConnection, Variant
    from proxy.engines.mysql.server_login import ServerLogin as MysqlServerLogin
    from proxy.engines.mysql.session import MysqlClientSession
    from proxy.engines.mysql.wire.codes import Capability, Command
    from proxy.engines.mysql.wire.messages import Column, encode_result_set
    from proxy.engines.mysql.wire.packets import encode_packet

    app = ProxyApp(parse_config(MYSQL_CONFIG + ("[clusters.main.failover]\nreplay = true\n" if replay else "")))
    cluster = app.clusters["main"]
    instance = cluster.config.instances[0]
    cluster.choose_target = lambda _endpoint, _route, _min_position: instance  # no probes here
    login = app.users.get("app")
    assert login is not None
    caps = int(Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH
               | Capability.MULTI_RESULTS | Capability.PS_MULTI_RESULTS | Capability.TRANSACTIONS
               | Capability.LONG_PASSWORD | Capability.FOUND_ROWS)
    session = MysqlClientSession(app, cluster, cluster.config.endpoints[0])
    session.connection_made(FakeTransport(peer=("127.0.0.1", 40000)))  # type: ignore[arg-type]
    session.login, session.database, session.state, session.capabilities = login, "app", READY, caps
    session.state_vars.schema = "app"
    session.pool_variant = variant = Variant(caps & VARIANT_CAPABILITIES, 45)
    server = MysqlServerConnection(Address(instance.host, instance.port), MysqlServerLogin("app", None, "app"),
                                   variant)
    server.transport = FakeTransport()  # type: ignore[assignment]
    server._login = None
    pool = cluster.pool(instance, login.user, "app", variant)
    pool.in_use.add(server)
    pool.release(server)
    query = encode_packet(bytes((Command.QUERY,)) + b"SELECT c FROM sbtest1 WHERE id=5021", 0)
    response = encode_result_set([Column("c")], [[b"83868641912-28773972837-60736120486-75162659906"]], caps)

    if waiting:   # a second client shares the one server connection: every other transaction queues
        pool.max_size = 1
        other = MysqlClientSession(app, cluster, cluster.config.endpoints[0])
        other.connection_made(FakeTransport(peer=("127.0.0.1", 40001)))  # type: ignore[arg-type]
        other.login, other.database, other.state, other.capabilities = login, "app", READY, caps
        other.state_vars.schema = "app"
        other.pool_variant = variant

        async def pairs(count: int) -> None:
            for _ in range(count // 2):
                session.data_received(query)
                other.data_received(query)        # the pool is busy: this one waits
                server.data_received(response)    # the first is done: the server goes to the waiter
                while other.server is None:
                    await asyncio.sleep(0)
                server.data_received(response)

        await pairs(1000)
        assert session.server is None and other.server is None and pool.idle == [server]
        assert server.transport.written == 1000 * len(query)  # type: ignore[union-attr]
        profiler = cProfile.Profile() if profile else None
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        await pairs(n)
        if profiler:
            profiler.disable()
        _report(n, time.perf_counter() - started, profiler, "transaction (every other one waits for the server)")
        return
    else:
        def run(count: int) -> None:
            for _ in range(count):
                session.data_received(query)
                server.data_received(response)

    run(1000)
    assert session.server is None and pool.idle == [server] and not session._pending
    assert server.transport.written == 1000 * len(query)  # type: ignore[union-attr]
    _timed(n, profile, "transaction", run)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=200_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--role", default="writer", choices=["writer", "reader", "split"],
                        help="endpoint role (split: each query text gets a new literal, as pgbench -M simple)")
    parser.add_argument("--engine", default="postgres", choices=["postgres", "mysql"])
    parser.add_argument("--replay", action="store_true", help="failover.replay = true")
    parser.add_argument("--waiting", action="store_true",
                        help="mysql: two clients on one server connection, every other transaction waits for it")
    parser.add_argument("--connect", action="store_true",
                        help="whole short connections (pgbench -C) instead of transactions on one connection")
    parser.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"],
                        help="event loop (default uvloop, as `dbproxy run`)")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    if args.engine == "mysql":
        asyncio.run(mysql_transactions(args.n, args.profile, args.replay, args.waiting))
    else:
        asyncio.run(connections(args.n, args.profile) if args.connect else main(args.n, args.profile, args.role,
                                                                                    args.replay))
