"""dbproxy in one process without sockets: fake transports, a logged-in client session, idle servers.

Used by the hot-path micro-benchmark (bench/hotpath.py) and by byte-exact tests that drive a real
ClientSession and ServerConnection message by message (tests/test_split_hold.py).
"""

from __future__ import annotations

from proxy.app import ProxyApp
from proxy.config import Address
from proxy.core.cluster import Cluster
from proxy.core.users import Login
from proxy.engines.postgres.server import ServerConnection
from proxy.engines.postgres.server_login import ServerLogin
from proxy.engines.postgres.session import _READY
from proxy.engines.postgres.session import PgClientSession as ClientSession


def one_instance_config(client_auth: str = "trust", role: str = "writer") -> str:
    """A config with user "app" (password "x") and one cluster "main" of one instance and one endpoint."""
    return f"""
[[users]]
name = "app"
password = "x"
[clusters.main]
engine = "postgres"
instances = ["127.0.0.1:1"]
client_auth = "{client_auth}"
[clusters.main.pool]
max_server_connections = 4
[[clusters.main.endpoints]]
name = "{role}"
listen = "127.0.0.1:2"
role = "{role}"
"""


# What PostgreSQL 15 reports in ParameterStatus messages at login.
SERVER_PARAMETERS = {
    "server_version": "15.19", "server_encoding": "UTF8", "client_encoding": "UTF8", "DateStyle": "ISO, MDY",
    "TimeZone": "UTC", "integer_datetimes": "on", "standard_conforming_strings": "on", "application_name": "",
    "IntervalStyle": "postgres", "is_superuser": "on", "session_authorization": "app",
}


class FakeTransport:
    """Swallows what is written: counts the bytes, and keeps them in `data` when `record` is set.

    `peer` is what get_extra_info("peername") returns (a client socket's address).
    """

    def __init__(self, record: bool = False, peer: tuple[str, int] | None = None) -> None:
        self.written = 0
        self.data = b""
        self._record = record
        self._peer = peer
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += len(data)
        if self._record:
            self.data += data

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> tuple[str, int] | None:
        return self._peer if name == "peername" else None

    def close(self) -> None:
        self.closed = True

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


def server_parameters_known(cluster: Cluster, login: Login, database: str) -> None:
    """As after the first client of (user, database): logins are answered without a server."""
    cluster.engine_state.welcome[(login.user.server_user, database)] = dict(SERVER_PARAMETERS)


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
