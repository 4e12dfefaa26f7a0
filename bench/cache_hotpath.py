"""In-process micro-benchmark of the query cache on a split endpoint (no sockets): µs and Python calls per transaction.

Drives a real PgClientSession (transaction pooling, split endpoint) and ServerConnection with fake
transports through the pgbench workload of bench/cache.py: point reads `SELECT abalance FROM
pgbench_accounts WHERE aid = <aid>` over --rows rows and (--updates percent) `UPDATE ... SET abalance
= abalance + 1 WHERE aid = <aid>`, each aid picked by a seeded generator so runs compare exactly.
`--mode simple` sends Query messages; `--mode prepared` is pgbench -M prepared (one Parse + Sync per
statement at its first use, then Bind/Describe/Execute/Sync). `--cache memory` answers repeated reads
from the memory backend; `--cache none` relays every statement (the uncached baseline). A hit never
reaches the fake server; a miss or an update gets a canned reply. `--profile` prints a cProfile summary
(and the number of Python calls per transaction, a deterministic measure).

Run: `.venv/bin/python -m bench.cache_hotpath [--mode prepared] [--cache memory|none] [--updates 10]`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import struct
import time

from bench.hotpath import _timed
from bench.inprocess import FakeTransport, idle_server, logged_in_session, one_instance_config
from proxy.app import ProxyApp
from proxy.cache.catalog import CatalogSnapshot, Relation
from proxy.config import parse_config
from proxy.engines.postgres.wire import messages as m

READ = "SELECT abalance FROM pgbench_accounts WHERE aid = {aid};"
WRITE = "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = {aid};"
READ_P = b"SELECT abalance FROM pgbench_accounts WHERE aid = $1;"
WRITE_P = b"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = $1;"
ROW_DESCRIPTION = m.message(b"T", b"\x00\x01abalance\x00" + b"\x00" * 4 + b"\x00\x03" + struct.pack("!IhiH", 23, 4, -1, 0))
READY = m.ready_for_query(b"I")
PARSE_COMPLETE, BIND_COMPLETE, NO_DATA = b"1\x00\x00\x00\x04", b"2\x00\x00\x00\x04", b"n\x00\x00\x00\x04"
CACHE_SECTION = """
[clusters.main.cache]
backend = "memory"
rules   = [ { match = "^SELECT abalance FROM pgbench_accounts", ttl = "60s" } ]
"""


class LastTransport(FakeTransport):
    """A FakeTransport that keeps the bytes of the writes since the last take()."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written += len(data)
        self.chunks.append(data if type(data) is bytes else bytes(data))

    def take(self) -> bytes:
        chunks = self.chunks
        if not chunks:
            return b""
        out = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        return out


def server_reply(sent: bytes, value: int, write: bool) -> bytes:
    """What PostgreSQL answers to the messages in `sent` (Parse, Bind, Describe, Execute, Sync, Query)
    of a point read of a row holding `value`, or of an update (`write`)."""
    out = []
    pos = 0
    row = m.message(b"D", b"\x00\x01" + struct.pack("!I", len(str(value))) + str(value).encode())
    while pos + 5 <= len(sent):
        kind = sent[pos:pos + 1]
        end = pos + 1 + struct.unpack_from("!I", sent, pos + 1)[0]
        body = sent[pos + 5:end]
        if kind == b"Q":
            if body.startswith(b"UPDATE"):
                out += [m.message(b"C", b"UPDATE 1\x00"), READY]
            else:
                out += [ROW_DESCRIPTION, row, m.message(b"C", b"SELECT 1\x00"), READY]
        elif kind == b"P":
            out.append(PARSE_COMPLETE)
        elif kind == b"B":
            out.append(BIND_COMPLETE)
        elif kind == b"D":
            out.append(NO_DATA if write else ROW_DESCRIPTION)
        elif kind == b"E":
            out += [m.message(b"C", b"UPDATE 1\x00")] if write else [row, m.message(b"C", b"SELECT 1\x00")]
        elif kind == b"S":
            out.append(READY)
        pos = end
    return b"".join(out)


def parse(name: bytes, sql: bytes) -> bytes:
    return m.message(b"P", name + b"\x00" + sql + b"\x00\x00\x00") + m.sync()


def bind_execute(name: bytes, aid: int) -> bytes:
    value = str(aid).encode()
    return (m.message(b"B", b"\x00" + name + b"\x00\x00\x00\x00\x01" + struct.pack("!I", len(value)) + value
                      + b"\x00\x00") + m.message(b"D", b"P\x00") + m.message(b"E", b"\x00\x00\x00\x00\x00")
            + m.sync())


async def main(n: int, mode: str, cache: str, updates: int, rows: int, profile: bool) -> None:
    text = one_instance_config(role="split")
    if cache == "memory":
        text += CACHE_SECTION
    app = ProxyApp(parse_config(text))
    cluster = app.clusters["main"]
    instance = cluster.config.instances[0]
    cluster.choose_target = lambda _endpoint, _route, _min_position: instance  # no probes here
    session, login = logged_in_session(app, "main", "app", "app")
    client = LastTransport()
    session.transport = client  # type: ignore[assignment]
    server = idle_server(cluster, instance, login, "app")
    server_transport = LastTransport()
    server.transport = server_transport  # type: ignore[assignment]
    if session._cache is not None:   # the catalog as the reader would have it (pgbench_accounts: aid an int4)
        catalog = session._cache.facts.catalog
        catalog.snapshot("app", 0.0)   # makes the database's entry (its read task is cancelled below)
        state = catalog._databases["app"]
        if state.task is not None:
            state.task.cancel()
            state.task = None
        state.snapshot = CatalogSnapshot({"pgbench_accounts": Relation(False, False, frozenset({"aid", "bid",
                                                                                                "abalance"}))},
                                         1e18)
        state.stale = False
        state.snapshot.loaded_at = time.monotonic() + 1e9
    rng = random.Random(14)
    plan = [(rng.randint(1, rows), rng.randint(1, 100) <= updates) for _ in range(max(n, 2000))]
    values: dict[int, int] = {}
    prepared: set[bytes] = set()
    simple_reads = [m.query(READ.format(aid=aid)) for aid in range(rows + 1)]
    simple_writes = [m.query(WRITE.format(aid=aid)) for aid in range(rows + 1)]
    binds = [bind_execute(b"P_0", aid) for aid in range(rows + 1)], [bind_execute(b"P_1", aid) for aid in range(rows + 1)]
    counts = {"hits": 0, "relayed": 0}
    replies: dict[tuple[bytes, int, bool], bytes] = {}   # the bench's own work kept out of the profile

    def send(data: bytes, aid: int, write: bool) -> bytes:
        session.data_received(data)
        sent = server_transport.take()
        if sent:
            counts["relayed"] += 1
            value = values.get(aid, 0)
            reply = replies.get((sent, value, write))
            if reply is None:
                reply = replies[(sent, value, write)] = server_reply(sent, value, write)
            server.data_received(reply)
        else:
            counts["hits"] += 1
        return client.take()

    def run(count: int, verify: bool = False) -> None:
        for i in range(count):
            aid, write = plan[i % len(plan)]
            if mode == "simple":
                reply = send(simple_writes[aid] if write else simple_reads[aid], aid, write)
            else:
                name = b"P_1" if write else b"P_0"
                if name not in prepared:
                    prepared.add(name)
                    send(parse(name, WRITE_P if write else READ_P), aid, write)
                reply = send(binds[write][aid], aid, write)
            if write:
                values[aid] = values.get(aid, 0) + 1
            elif verify:
                check(reply, values.get(aid, 0))

    run(len(plan), verify=True)   # warm (every row read) and checked: every read returns the row's value
    assert session.server is None and not session._pending
    counts.update(hits=0, relayed=0)
    _timed(n, profile, "transaction", run,
           lambda: f"{counts['hits']} answered from the cache, {counts['relayed']} relayed")
    run(len(plan), verify=True)


def check(reply: bytes, value: int) -> None:
    """The reply to a read holds the row's current value (every read after an update: the new one)."""
    want = str(value).encode()
    pos = 0
    while pos + 5 <= len(reply):
        end = pos + 1 + struct.unpack_from("!I", reply, pos + 1)[0]
        if reply[pos:pos + 1] == b"D":
            got = reply[pos + 11:end]
            if got != want:
                raise AssertionError(f"stale read: {got!r}, the row holds {want!r}")
            return
        pos = end
    raise AssertionError(f"no DataRow in the reply {reply!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--mode", default="prepared", choices=["prepared", "simple"])
    parser.add_argument("--cache", default="memory", choices=["memory", "none"])
    parser.add_argument("--updates", type=int, default=10, help="percent of UPDATEs (default 10)")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.mode, args.cache, args.updates, args.rows, args.profile))
