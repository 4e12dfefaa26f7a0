"""dbproxy in one process without sockets: fake transports, a logged-in client session, idle servers.

Used by the hot-path micro-benchmark (bench/hotpath.py) and by byte-exact tests that drive a real
ClientSession and ServerConnection message by message (tests/test_split_hold.py).
"""

from __future__ import annotations

from proxy.cluster import Cluster
from proxy.config import Address
from proxy.protocol.postgres.server_login import ServerLogin
from proxy.server import ProxyApp
from proxy.session import _READY, ClientSession
from proxy.transport.pg_server import ServerConnection
from proxy.users import Login


class FakeTransport:
    """Swallows what is written: counts the bytes, and keeps them in `data` when `record` is set."""

    def __init__(self, record: bool = False) -> None:
        self.written = 0
        self.data = b""
        self._record = record

    def write(self, data: bytes) -> None:
        self.written += len(data)
        if self._record:
            self.data += data

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


def logged_in_session(app: ProxyApp, cluster_name: str, user: str, database: str,
                      record: bool = False) -> tuple[ClientSession, Login]:
    """A client of the cluster's first endpoint, past login (ready for queries), on a FakeTransport."""
    cluster = app.clusters[cluster_name]
    session = ClientSession(app, cluster, cluster.config.endpoints[0])
    session.connection_made(FakeTransport(record))  # type: ignore[arg-type]
    login = app.users.get(user)
    assert login is not None, f"no user {user!r} in the config"
    session.login = login
    session.database = database
    session.state = _READY
    return session, login


def idle_server(cluster: Cluster, address: Address, login: Login, database: str,
                record: bool = False) -> ServerConnection:
    """A logged-in server connection on a FakeTransport, idle in its (instance, user, database) pool."""
    server = ServerConnection(Address(address.host, address.port), ServerLogin(login.user.name, None, database))
    server.transport = FakeTransport(record)  # type: ignore[assignment]
    server._login = None
    pool = cluster.pool(address, login.user, database)
    pool.in_use.add(server)
    pool.release(server)
    return server
