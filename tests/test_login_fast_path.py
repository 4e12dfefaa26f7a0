"""In-process, byte-exact: short connections take the login fast paths (SSLRequest, a startup packet
seen before, a whole password message, a lone Terminate) and get exactly what the general path gives."""

from __future__ import annotations

import pytest

from bench.inprocess import FakeTransport, idle_server, one_instance_config, server_parameters_known
from proxy.app import ProxyApp
from proxy.config import parse_config
from proxy.engines.postgres.session import PgClientSession as ClientSession
from proxy.engines.postgres.startup import forget_startups, known_startup
from proxy.engines.postgres.wire import messages as m
from proxy.engines.postgres.wire.auth import md5_password

QUERY = m.query("SELECT 1")
RESPONSE = (m.message(b"T", b"\x00\x01x\x00" + b"\x00" * 18) + m.message(b"D", b"\x00\x01\x00\x00\x00\x011")
            + m.message(b"C", b"SELECT 1\x00") + m.ready_for_query(b"I"))


@pytest.fixture
def app() -> ProxyApp:
    app = ProxyApp(parse_config(one_instance_config(client_auth="md5")))
    cluster = app.clusters["main"]
    instance = cluster.config.instances[0]
    cluster.choose_target = lambda _endpoint, _route, _min_position=None: instance  # no probes here
    login = app.users.get("app")
    assert login is not None
    server_parameters_known(cluster, login, "app")
    return app


def connect(app: ProxyApp) -> tuple[ClientSession, FakeTransport]:
    cluster = app.clusters["main"]
    session = ClientSession(app, cluster, cluster.config.endpoints[0])
    transport = FakeTransport(record=True, peer=("127.0.0.1", 40000))
    session.connection_made(transport)  # type: ignore[arg-type]
    return session, transport


def take(transport: FakeTransport) -> bytes:
    data, transport.data = transport.data, b""
    return data


def log_in(session: ClientSession, transport: FakeTransport, startup: bytes, password: str = "x") -> bytes:
    """SSLRequest, startup, md5 password each in one read, as libpq sends them; what came back."""
    session.data_received(m.ssl_request())
    assert take(transport) == b"N"
    session.data_received(startup)
    challenge = take(transport)
    assert challenge[:9] == b"R\x00\x00\x00\x0c\x00\x00\x00\x05" and len(challenge) == 13
    session.data_received(m.password_message(md5_password("app", password, challenge[9:])))
    return take(transport)


def test_a_repeated_startup_packet_gets_the_same_login_reply(app: ProxyApp) -> None:
    startup = m.startup_message({"user": "app", "database": "app", "application_name": "pgbench"})
    forget_startups()
    replies = []
    for attempt in range(2):
        assert (known_startup(startup) is not None) == (attempt == 1)   # the second one takes the fast path
        session, transport = connect(app)
        reply = log_in(session, transport, startup)
        assert session.gucs.client == {"application_name": "'pgbench'"}
        assert session.app_name == "pgbench" and session.database == "app"
        # AuthenticationOk, the parameters, BackendKeyData (per connection), ReadyForQuery.
        key_at = reply.index(b"K\x00\x00\x00\x0c")
        assert reply.startswith(m.auth_ok()) and reply[key_at:] == (
            m.backend_key_data(session.pid, session.key) + m.ready_for_query(b"I"))
        assert m.parameter_status("application_name", "pgbench") in reply
        replies.append(reply[:key_at])
        session.connection_lost(None)
    assert replies[0] == replies[1]


def test_the_shared_startup_settings_are_not_changed_by_a_client(app: ProxyApp) -> None:
    startup = m.startup_message({"user": "app", "database": "app", "application_name": "a"})
    first, transport = connect(app)
    log_in(first, transport, startup)
    first.gucs.client["search_path"] = "x"      # what a SET does to the client's own copy
    second, transport = connect(app)
    log_in(second, transport, startup)
    assert second.gucs.client == {"application_name": "'a'"}


@pytest.mark.parametrize("params, message", [
    ({"user": "app", "replication": "true"}, "replication connections are not supported"),
    ({"user": "app", "options": "-x"}, "invalid startup options"),
    ({"user": "nobody"}, 'password authentication failed for user "nobody"'),
    ({"database": "app"}, "no PostgreSQL user name specified"),
])
def test_a_refused_startup_packet_is_refused_again(app: ProxyApp, params: dict[str, str], message: str) -> None:
    startup = m.startup_message(params)
    for _ in range(2):
        session, transport = connect(app)
        session.data_received(startup)
        assert transport.closed
        assert transport.data.startswith(b"E") and message.encode() in transport.data
        session.connection_lost(None)
    assert app.clusters["main"].clients == 0


def test_a_wrong_password_is_refused(app: ProxyApp) -> None:
    startup = m.startup_message({"user": "app", "database": "app"})
    session, transport = connect(app)
    reply = log_in(session, transport, startup, password="wrong")
    assert reply.startswith(b"E") and b"28P01" in reply and transport.closed


async def test_a_password_in_pieces_and_a_pipelined_query(app: ProxyApp) -> None:
    cluster = app.clusters["main"]
    login = app.users.get("app")
    assert login is not None
    server = idle_server(cluster, cluster.config.instances[0], login, "app", record=True)
    session, transport = connect(app)
    session.data_received(m.startup_message({"user": "app", "database": "app"}))
    salt = take(transport)[9:]
    password = m.password_message(md5_password("app", "x", salt))
    session.data_received(password[:3])          # a message split over two reads
    assert take(transport) == b""
    session.data_received(password[3:] + QUERY)  # the rest, with the first query behind it
    assert take(transport).endswith(m.ready_for_query(b"I"))
    assert server.transport.data == QUERY  # type: ignore[union-attr]
    server.data_received(RESPONSE)
    assert take(transport) == RESPONSE


async def test_a_lone_terminate_closes_and_keeps_the_server_pooled(app: ProxyApp) -> None:
    cluster = app.clusters["main"]
    login = app.users.get("app")
    assert login is not None
    instance = cluster.config.instances[0]
    server = idle_server(cluster, instance, login, "app", record=True)
    session, transport = connect(app)
    log_in(session, transport, m.startup_message({"user": "app", "database": "app"}))
    session.data_received(QUERY)
    server.data_received(RESPONSE)
    session.data_received(m.terminate())
    assert transport.closed and session._close_reason == "client sent Terminate"
    session.connection_lost(None)
    assert cluster.pool(instance, login.user, "app").idle == [server]
    assert server.transport.data == QUERY  # type: ignore[union-attr]  # Terminate is not forwarded
