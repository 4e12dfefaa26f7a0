"""In-process micro-benchmark of the transaction-pooling hot path (no sockets): µs of Python per transaction.

Drives a real ClientSession and ServerConnection with fake transports through N simple-query
transactions (Query → RowDescription, DataRow, CommandComplete, ReadyForQuery) and reports the
Python cost per transaction. `--profile` prints a cProfile summary.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time

from bench.inprocess import idle_server, logged_in_session
from proxy.config import parse_config
from proxy.protocol.postgres import messages as m
from proxy.server import ProxyApp

CONFIG = """
[[users]]
name = "app"
password = "x"
[clusters.main]
engine = "postgres"
instances = ["127.0.0.1:1"]
client_auth = "trust"
[clusters.main.pool]
max_server_connections = 4
[[clusters.main.endpoints]]
name = "writer"
listen = "127.0.0.1:2"
role = "writer"
"""

QUERY = m.query("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;")
RESPONSE = (m.message(b"T", b"\x00\x01abalance\x00" + b"\x00" * 18) + m.message(b"D", b"\x00\x01\x00\x00\x00\x010")
            + m.message(b"C", b"SELECT 1\x00") + m.ready_for_query(b"I"))


async def main(n: int, profile: bool, role: str = "writer") -> None:
    config = parse_config(CONFIG.replace('role = "writer"', f'role = "{role}"'))
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
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    run(n)
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - started
    print(f"{n} transactions: {elapsed / n * 1e6:.2f} µs of Python per transaction")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=200_000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--role", default="writer", choices=["writer", "reader", "split"],
                        help="endpoint role (split: each query text gets a new literal, as pgbench -M simple)")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.profile, args.role))
