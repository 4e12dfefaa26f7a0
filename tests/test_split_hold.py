"""In-process, byte-exact: a write pipelined behind a read on a split endpoint is held, and the hidden
Sync that ends the replica's batch is sent after the read's messages (never before them)."""

from __future__ import annotations

import asyncio

from bench.inprocess import idle_server, logged_in_session
from proxy.app import ProxyApp
from proxy.config import parse_config
from proxy.engines.postgres.wire import messages as m

CONFIG = """
[[users]]
name = "app"
password = "x"
[clusters.main]
engine = "postgres"
instances = ["127.0.0.1:1", "127.0.0.1:2"]
client_auth = "trust"
[[clusters.main.endpoints]]
name = "app"
listen = "127.0.0.1:3"
role = "split"
"""


def parse(name: bytes, sql: str) -> bytes:
    return m.message(b"P", name + b"\x00" + sql.encode() + b"\x00\x00\x00")


def bind() -> bytes:
    return m.message(b"B", b"\x00\x00" + b"\x00\x00" + b"\x00\x00" + b"\x00\x00")


DESCRIBE = m.message(b"D", b"P\x00")
EXECUTE = m.message(b"E", b"\x00\x00\x00\x00\x00")


async def test_the_hidden_sync_follows_the_reads_messages() -> None:
    app = ProxyApp(parse_config(CONFIG))
    cluster = app.clusters["main"]
    primary, replica = cluster.config.instances
    cluster.choose_target = lambda endpoint, route, min_position=None: replica if route == "replica" else primary
    session, login = logged_in_session(app, "main", "app", "app", record=True)
    servers = {address: idle_server(cluster, address, login, "app", record=True) for address in (primary, replica)}

    read = parse(b"", "SELECT 1") + bind() + DESCRIBE + EXECUTE
    write = parse(b"", "INSERT INTO t VALUES (1)") + bind() + DESCRIBE + EXECUTE + m.sync()
    session.data_received(read + write)   # one read from the socket

    on_replica = servers[replica].transport.data  # type: ignore[union-attr]
    assert on_replica == read + m.sync()          # the read, then the hidden Sync, nothing of the write
    assert servers[primary].transport.data == b""  # type: ignore[union-attr]

    # The replica answers the read and the hidden Sync: the read's results reach the client, the
    # ReadyForQuery of the hidden Sync does not, and the write goes to the primary.
    servers[replica].data_received(m.PARSE_COMPLETE + m.BIND_COMPLETE + m.message(b"n")
                                   + m.message(b"C", b"SELECT 1\x00") + m.ready_for_query(b"I"))
    await asyncio.sleep(0)
    assert session.transport.data.endswith(m.message(b"C", b"SELECT 1\x00"))  # type: ignore[union-attr]
    assert servers[primary].transport.data == write  # type: ignore[union-attr]
