"""In-process, byte-exact: a write pipelined behind a read on a split endpoint is held, and the hidden
Sync that ends the replica's batch is sent after the read's messages (never before them)."""

from __future__ import annotations

import asyncio

from proxy.config import Address, parse_config
from proxy.protocol.postgres import messages as m
from proxy.protocol.postgres.server_login import ServerLogin
from proxy.server import ProxyApp
from proxy.session import _READY, ClientSession
from proxy.transport.pg_server import ServerConnection

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


class Wire:
    """A fake transport that records what was written."""

    def __init__(self) -> None:
        self.sent = b""

    def write(self, data: bytes) -> None:
        self.sent += data

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str) -> None:
        return None

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


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
    endpoint = cluster.config.endpoints[0]
    session = ClientSession(app, cluster, endpoint)
    session.connection_made(Wire())  # type: ignore[arg-type]
    session.login = app.users.get("app")
    session.database = "app"
    session.state = _READY
    assert session.login is not None
    servers = {}
    for address in (primary, replica):
        server = ServerConnection(Address(address.host, address.port), ServerLogin("app", None, "app"))
        server.transport = Wire()  # type: ignore[assignment]
        server._login = None
        pool = cluster.pool(address, session.login.user, "app")
        pool.in_use.add(server)
        pool.release(server)
        servers[address] = server

    read = parse(b"", "SELECT 1") + bind() + DESCRIBE + EXECUTE
    write = parse(b"", "INSERT INTO t VALUES (1)") + bind() + DESCRIBE + EXECUTE + m.sync()
    session.data_received(read + write)   # one read from the socket

    on_replica = servers[replica].transport.sent  # type: ignore[union-attr]
    assert on_replica == read + m.sync()          # the read, then the hidden Sync, nothing of the write
    assert servers[primary].transport.sent == b""  # type: ignore[union-attr]

    # The replica answers the read and the hidden Sync: the read's results reach the client, the
    # ReadyForQuery of the hidden Sync does not, and the write goes to the primary.
    servers[replica].data_received(m.PARSE_COMPLETE + m.BIND_COMPLETE + m.message(b"n")
                                   + m.message(b"C", b"SELECT 1\x00") + m.ready_for_query(b"I"))
    await asyncio.sleep(0)
    assert session.transport.sent.endswith(m.message(b"C", b"SELECT 1\x00"))  # type: ignore[union-attr]
    assert servers[primary].transport.sent == write  # type: ignore[union-attr]
