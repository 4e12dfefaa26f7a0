"""Byte vectors for the sans-IO SplitHold: which messages of a split client on a replica wait for the primary,
and the hidden Sync that ends the replica's open batch."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

import pytest

from bench.inprocess import idle_server, logged_in_session
from proxy.app import ProxyApp
from proxy.config import parse_config
from proxy.engines.postgres.classify import PgClassifier
from proxy.engines.postgres.rewrite import StatementRewriter
from proxy.engines.postgres.split_hold import HIDDEN_SYNC, SplitHold, statement_text
from proxy.engines.postgres.statements import StatementNames, decode_parse
from proxy.engines.postgres.wire import messages as m
from proxy.engines.postgres.wire.responses import BIND, DROP_ALL, PARSE, SYNC, ResponseTracker, Slot
from proxy.errors import ProtocolViolation

QUERY, PARSE_KIND, BIND_KIND, EXECUTE_KIND = 0x51, 0x50, 0x42, 0x45
READ_QUERY = b"SELECT 1\x00"
WRITE_QUERY = b"INSERT INTO t VALUES (1)\x00"
WRITE_PARSE = b"\x00INSERT INTO t VALUES (1)\x00\x00\x00"       # unnamed
NAMED_WRITE_PARSE = b"w1\x00UPDATE t SET a = 1\x00\x00\x00"
NAMED_READ_PARSE = b"r1\x00SELECT a FROM t\x00\x00\x00"
BIND_W1 = b"\x00w1\x00\x00\x00\x00\x00\x00\x00"
BIND_R1 = b"\x00r1\x00\x00\x00\x00\x00\x00\x00"
BIND_UNNAMED = b"\x00\x00\x00\x00\x00\x00\x00\x00"


def fresh() -> tuple[SplitHold, ResponseTracker]:
    return SplitHold(PgClassifier(())), ResponseTracker()


def test_the_hidden_sync_is_a_bare_sync_message() -> None:
    assert HIDDEN_SYNC == b"S\x00\x00\x00\x04" == m.sync()


def test_statement_text_of_query_parse_and_bind() -> None:
    assert statement_text(QUERY, READ_QUERY, None) == b"SELECT 1"
    assert statement_text(PARSE_KIND, WRITE_PARSE, None) == b"INSERT INTO t VALUES (1)"
    assert statement_text(BIND_KIND, BIND_W1, None) is None           # no statement prepared yet
    assert statement_text(EXECUTE_KIND, b"\x00\x00\x00\x00\x00", None) is None
    rewriter = StatementRewriter(StatementNames(), 100)
    rewriter.parse(decode_parse(NAMED_WRITE_PARSE), NAMED_WRITE_PARSE, OrderedDict(), ResponseTracker())
    assert statement_text(BIND_KIND, BIND_W1, rewriter) == b"UPDATE t SET a = 1"
    assert statement_text(BIND_KIND, BIND_UNNAMED, rewriter) is None
    assert statement_text(BIND_KIND, BIND_R1, rewriter) is None       # unknown name


def test_a_read_stays_on_the_replica() -> None:
    split, tracker = fresh()
    assert split.hold(QUERY, READ_QUERY, tracker, None, unsynced=False, keeps_server=False) is None
    assert split.hold(QUERY, READ_QUERY, tracker, None, unsynced=True, keeps_server=False) is None
    assert not tracker.slots


def test_a_write_after_a_synced_batch_is_held_with_nothing_to_send() -> None:
    split, tracker = fresh()
    assert split.hold(QUERY, WRITE_QUERY, tracker, None, unsynced=False, keeps_server=False) == b""
    assert not tracker.slots


def test_a_write_in_an_open_batch_is_held_behind_a_hidden_sync_whose_replies_are_dropped() -> None:
    split, tracker = fresh()
    tracker.push(Slot(PARSE))
    tracker.push(Slot(BIND))    # the read's Parse and Bind, already sent to the replica
    sent = split.hold(PARSE_KIND, WRITE_PARSE, tracker, None, unsynced=True, keeps_server=False)
    assert sent == b"S\x00\x00\x00\x04"
    assert [(s.kind, s.action) for s in tracker.slots] == [(PARSE, 0), (BIND, 0), (SYNC, DROP_ALL)]
    # The replica answers the read's messages and the hidden Sync: the client gets all but ReadyForQuery.
    assert tracker.feed(m.PARSE_COMPLETE + m.BIND_COMPLETE + m.ready_for_query(b"I")) == (
        m.PARSE_COMPLETE + m.BIND_COMPLETE)
    assert tracker.idle


def test_a_bind_of_a_named_write_is_held() -> None:
    split, tracker = fresh()
    rewriter = StatementRewriter(StatementNames(), 100)
    for body in (NAMED_WRITE_PARSE, NAMED_READ_PARSE):
        rewriter.parse(decode_parse(body), body, OrderedDict(), ResponseTracker())
    assert split.hold(BIND_KIND, BIND_R1, tracker, rewriter, unsynced=True, keeps_server=False) is None
    assert split.hold(BIND_KIND, BIND_W1, tracker, rewriter, unsynced=True, keeps_server=False) == HIDDEN_SYNC
    assert split.hold(BIND_KIND, BIND_UNNAMED, tracker, rewriter, unsynced=True, keeps_server=False) is None


def test_inside_a_transaction_block_the_write_stays_for_the_replicas_error() -> None:
    split, tracker = fresh()
    tracker.status = b"T"   # BEGIN READ ONLY ran on the replica
    assert split.hold(QUERY, WRITE_QUERY, tracker, None, unsynced=True, keeps_server=False) is None
    tracker.status = b"E"
    assert split.hold(QUERY, WRITE_QUERY, tracker, None, unsynced=False, keeps_server=False) is None
    assert not tracker.slots


def test_a_client_that_keeps_its_server_is_never_held_but_a_malformed_parse_still_fails() -> None:
    split, tracker = fresh()
    assert split.hold(QUERY, WRITE_QUERY, tracker, None, unsynced=True, keeps_server=True) is None
    assert not tracker.slots
    # The text is read first (as before the move): a malformed Parse is a protocol violation either way.
    with pytest.raises(ProtocolViolation):
        split.hold(PARSE_KIND, b"no terminator", tracker, None, unsynced=True, keeps_server=True)


def test_unknown_text_is_not_held() -> None:
    split, tracker = fresh()
    assert split.hold(BIND_KIND, BIND_W1, tracker, None, unsynced=True, keeps_server=False) is None
    assert split.hold(EXECUTE_KIND, b"\x00\x00\x00\x00\x00", tracker, None, unsynced=True,
                      keeps_server=False) is None


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


async def test_a_simple_query_write_behind_a_read_is_held_without_a_hidden_sync() -> None:
    """The session's side, byte-exact: a synced batch (two simple Queries) needs no hidden Sync."""
    app = ProxyApp(parse_config(CONFIG))
    cluster = app.clusters["main"]
    primary, replica = cluster.config.instances
    cluster.choose_target = lambda endpoint, route, min_position=None: replica if route == "replica" else primary
    session, login = logged_in_session(app, "main", "app", "app", record=True)
    servers = {address: idle_server(cluster, address, login, "app", record=True) for address in (primary, replica)}

    read, write = m.query("SELECT 1"), m.query("INSERT INTO t VALUES (1)")
    session.data_received(read + write)
    assert servers[replica].transport.data == read     # type: ignore[union-attr]
    assert servers[primary].transport.data == b""      # type: ignore[union-attr]

    servers[replica].data_received(m.message(b"C", b"SELECT 1\x00") + m.ready_for_query(b"I"))
    await asyncio.sleep(0)
    assert session.transport.data.endswith(m.message(b"C", b"SELECT 1\x00") + m.ready_for_query(b"I"))  # type: ignore[union-attr]
    assert servers[primary].transport.data == write    # type: ignore[union-attr]


class _FakePositions:
    """Stands in for positions.PositionReader: keeps the callbacks the sessions hand it."""

    def __init__(self) -> None:
        self.waiting: list[Callable[[int | None], None]] = []

    def request(self, done: Callable[[int | None], None]) -> None:
        self.waiting.append(done)


async def test_read_your_writes_asks_for_the_position_after_commit_and_releases_at_once() -> None:
    """The server connection goes back as soon as COMMIT's ReadyForQuery arrives (the position is read
    elsewhere, positions.py); until it is known the user's reads go to the primary."""
    app = ProxyApp(parse_config(CONFIG))
    cluster = app.clusters["main"]
    primary, replica = cluster.config.instances
    cluster.choose_target = lambda endpoint, route, min_position=None: replica if route == "replica" else primary
    session, login = logged_in_session(app, "main", "app", "app", record=True)
    servers = {address: idle_server(cluster, address, login, "app", record=True) for address in (primary, replica)}
    positions = cluster.engine_state.positions = _FakePositions()  # type: ignore[assignment]
    server = servers[primary]
    for sql, status in (("BEGIN", b"T"), ("INSERT INTO t VALUES (1)", b"T"), ("COMMIT", b"I")):
        session.data_received(m.query(sql))
        assert server.transport.data == m.query(sql)    # type: ignore[union-attr]   nothing of the proxy's
        server.transport.data = b""                      # type: ignore[union-attr]
        server.data_received(m.message(b"C", b"X\x00") + m.ready_for_query(status))
    assert session.server is None and len(positions.waiting) == 1   # released; one position asked for
    assert cluster.writes_pending == {"app": 1}
    assert session._route(m.query("SELECT 1")) == "primary"
    positions.waiting.pop()(0x3000060)
    assert cluster.writes_pending == {} and cluster.write_positions == {"app": 0x3000060}
    assert session.min_position == 0x3000060
    assert session._route(m.query("SELECT 1")) == "replica"   # with min_position: a replica that far
