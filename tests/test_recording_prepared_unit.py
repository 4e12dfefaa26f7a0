"""Sans-IO: the recording's view of PostgreSQL Parse/Bind/Execute/Close (pg_prepared.py) and the replay's "x" steps."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from proxy.recording.pg_prepared import Bound, Execution, PgTap, decode_bind, parse_types
from proxy.recording.plan import build_scripts, execution_step


def bind_body(portal: bytes, name: bytes, formats: list[int], values: list[bytes | None],
              results: list[int]) -> bytes:
    out = [portal, b"\x00", name, b"\x00", struct.pack(f"!h{len(formats)}h", len(formats), *formats),
           struct.pack("!h", len(values))]
    for v in values:
        out.append(struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v)
    out.append(struct.pack(f"!h{len(results)}h", len(results), *results))
    return b"".join(out)


@given(st.lists(st.one_of(st.none(), st.binary(max_size=20)), max_size=6), st.sampled_from([0, 1]),
       st.lists(st.sampled_from([0, 1]), max_size=3))
def test_decode_bind_round_trip(values: list[bytes | None], fmt: int, results: list[int]) -> None:
    portal, name, formats, got, res = decode_bind(bind_body(b"p", b"s1", [fmt] if values else [], values, results))
    assert (portal, name, got, res) == (b"p", b"s1", tuple(values), tuple(results))
    assert formats == (fmt,) * len(values) if values else formats == ()


def test_tap_hands_each_execution_once_with_its_statement() -> None:
    seen: list[Execution] = []
    audited: list[bytes] = []
    tap = PgTap("session", (lambda _s, b: seen.append(b.execution()),), lambda _s, q: audited.append(q))
    tap.parse(b"P_0", b"UPDATE t SET v = $1 WHERE id = $2", struct.pack("!hII", 2, 23, 0))
    assert parse_types(struct.pack("!hII", 2, 23, 0)) == (23, 0) and audited == [b"UPDATE t SET v = $1 WHERE id = $2"]
    tap.bind(bind_body(b"", b"P_0", [0], [b"5", None], []))
    tap.execute(b"\x00\x00\x00\x00\x00")
    tap.execute(b"\x00\x00\x00\x00\x01")   # continuing a suspended portal: not a new execution
    tap.bind(bind_body(b"", b"unknown", [], [], [1]))   # parsed before the recording started
    tap.execute(b"\x00\x00\x00\x00\x00")
    tap.execute(b"cur\x00\x00\x00\x00\x00")   # a portal bound before the recording started
    tap.close(b"SP_0\x00")
    tap.bind(b"\x00P_0")   # malformed: the server answers it
    assert seen == [Execution(b"UPDATE t SET v = $1 WHERE id = $2", (23, 0), (0, 0), (b"5", None), ()),
                    Execution(None, (), (), (), (1,)), Execution(None, (), (), (), ())]
    assert tap.statements == {}


def test_steps_of_executions() -> None:
    def x(**kw: Any) -> dict[str, Any]:
        return {"e": "x", "s": 1, "t": 0.5, **kw}

    with_values = execution_step(x(q="SELECT $1, $2", p=["7", {"b": "AAAAKg=="}], pf=[0, 1], pt=[23, 23], n=1), 0.5)
    assert with_values.prepared is not None and not with_values.skip and with_values.starts_transaction
    assert with_values.prepared.values == (b"7", b"\x00\x00\x00*") and with_values.prepared.formats == (0, 1)
    assert execution_step(x(q="SELECT 1", np=0), 0.5).prepared is not None   # nothing was left out
    assert execution_step(x(q="SELECT $1", np=1), 0.5).skip.startswith("parameters not recorded")
    assert execution_step(x(q=None, np=1), 0.5).skip == "prepared before the recording started"
    (script,) = build_scripts([{"e": "open", "s": 1, "t": 0.1, "u": "u", "d": "d"}, x(q="SELECT $1", p=["1"])])
    assert [s.sql for s in script.steps] == ["SELECT $1"]


def test_mysql_literals_of_binary_values() -> None:
    from proxy.recording.mysql_prepared import literals
    from proxy.recording.plan import with_literals

    types = bytes([0x08, 0, 0x03, 0x80, 0x05, 0, 0xFD, 0, 0xF6, 0, 0x0C, 0, 0xFC, 0, 0x06, 0])
    values = (struct.pack("<q", -7) + struct.pack("<I", 4000000000) + struct.pack("<d", 1.5)
              + b"\x04it's" + b"\x041.25" + bytes([11]) + struct.pack("<HBBBBBI", 2026, 1, 2, 3, 4, 5, 6)
              + b"\x02\xff\x00")
    payload = b"\x17" + b"\x01\x00\x00\x00" + b"\x00" + b"\x01\x00\x00\x00" + b"\x00" + b"\x01" + types + values
    assert literals(payload, 8, b"") == ["-7", "4000000000", "1.5e0", "'it''s'", "1.25",
                                         "'2026-01-02 03:04:05.000006'", "X'ff00'", "NULL"]
    assert with_literals("SELECT ?, '?', `?` /* ? */, ?", ["1", "'a'"]) == "SELECT 1, '?', `?` /* ? */, 'a'"

    from proxy.recording.mysql_prepared import MysqlBound, MysqlTap

    seen: list[MysqlBound] = []
    tap = MysqlTap("session", (lambda _s, b: seen.append(b),), None)
    tap.execute(b"INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?)", 8, b"", payload, False)
    tap.execute(b"SELECT ?", 1, b"", b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00\x00\x01", False)   # truncated
    tap.execute(b"INSERT INTO b VALUES (?)", 1, bytes([0xFC, 0]), payload[:11] + b"\x00", True)   # long data
    assert seen[0].values() == literals(payload, 8, b"") and seen[0].values() is seen[0].values()
    assert seen[1].values() is None and not seen[1].long_data
    assert seen[2].values() is None and seen[2].long_data and seen[2].count == 1


def test_bound_values_decoded_once_when_asked() -> None:
    """The tap hands on the Bind undecoded (the mirror decodes only what it samples, off the client's path)."""
    bound = Bound(b"SELECT $1", (23,), bind_body(b"", b"s", [1], [b"\x00\x00\x00\x07"], [1]))
    first = bound.execution()
    assert first == Execution(b"SELECT $1", (23,), (1,), (b"\x00\x00\x00\x07",), (1,))
    assert bound.execution() is first and bound.body is None
    assert Bound(b"SELECT $1", (), b"\x00s\x00\x00\x05").execution() is None   # malformed: refused by the server
