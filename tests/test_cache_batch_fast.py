"""The query cache's fixed-offset decoder of an unnamed-portal extended batch agrees with the general one.

`unnamed_portal_batch` (the common shape, decoded without walking the messages) must, whenever it
decides, return exactly what `any_batch` returns; Hypothesis builds batches of every shape the cache
answers and of others (named portals, Describe of a statement, two Executes, a Parse of another name),
then truncates, extends and flips bytes of them.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.engines.postgres.cache_batch import any_batch, extended_batch, unnamed_portal_batch
from proxy.engines.postgres.wire.messages import message
from proxy.errors import ProtocolViolation

_names = st.sampled_from([b"", b"s1", b"P_0", b"x" * 40])
_portals = st.sampled_from([b"", b"", b"", b"c1"])


@st.composite
def batches(draw: st.DrawFn) -> bytes:
    statement = draw(_names)
    portal = draw(_portals)
    parts = []
    if draw(st.booleans()):
        parse_name = statement if draw(st.integers(0, 5)) else draw(_names)
        parts.append(message(b"P", parse_name + b"\x00SELECT v FROM t WHERE id = $1\x00"
                             + draw(st.sampled_from([b"\x00\x00", b"\x00\x01\x00\x00\x00\x17"]))))
    values = draw(st.lists(st.binary(max_size=8), max_size=3))
    bound = b"\x00\x00" + len(values).to_bytes(2, "big") + b"".join(len(v).to_bytes(4, "big") + v for v in values)
    bound += draw(st.sampled_from([b"\x00\x00", b"\x00\x01\x00\x01"]))
    parts.append(message(b"B", portal + b"\x00" + statement + b"\x00" + bound))
    if draw(st.booleans()):
        described = draw(st.sampled_from([b"P" + portal, b"P" + portal, b"S" + statement, b"Pother"]))
        parts.append(message(b"D", described + b"\x00"))
    for _ in range(draw(st.sampled_from([1, 1, 1, 2]))):
        parts.append(message(b"E", draw(st.sampled_from([portal, portal, b"zz"])) + b"\x00"
                             + draw(st.sampled_from([b"\x00\x00\x00\x00", b"\x00\x00\x00\x01"]))))
    parts.append(message(b"S"))
    return b"".join(parts)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(batches()))
    for _ in range(draw(st.integers(0, 3))):
        what = draw(st.sampled_from(["flip", "cut", "grow"]))
        if what == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        elif what == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1))]
        else:
            data.insert(draw(st.integers(0, len(data))), draw(st.integers(0, 255)))
    return bytes(data) + (b"S\x00\x00\x00\x04" if draw(st.booleans()) else b"")


def _general(data: bytes) -> object:
    try:
        return any_batch(data)
    except ProtocolViolation:
        return "violation"


@settings(max_examples=1500, deadline=None)
@given(st.one_of(batches(), mutated()))
def test_the_fixed_offset_decoder_agrees_with_the_general_one(data: bytes) -> None:
    if not data.endswith(b"S\x00\x00\x00\x04"):
        assert extended_batch(data) is None
        return
    general = _general(data)
    try:
        fast = unnamed_portal_batch(data)
    except ProtocolViolation:
        assert general == "violation"
        return
    if fast is not None:
        assert fast == general
    assert (extended_batch(data) if general != "violation" else general) == general


def test_the_common_batches_take_the_fixed_offset_path() -> None:
    bind = message(b"B", b"\x00P_0\x00\x00\x00\x00\x01\x00\x00\x00\x03123\x00\x00")
    describe, execute, sync = message(b"D", b"P\x00"), message(b"E", b"\x00\x00\x00\x00\x00"), message(b"S")
    parse = message(b"P", b"P_0\x00SELECT abalance FROM pgbench_accounts WHERE aid = $1\x00\x00\x00")
    for data in (bind + describe + execute + sync, bind + execute + sync, parse + bind + describe + execute + sync,
                 parse + bind + execute + sync):
        fast = unnamed_portal_batch(data)
        assert fast is not None and fast == any_batch(data)
        assert fast.statement == b"P_0" and fast.described == (describe in data)
    named = message(b"B", b"c1\x00P_0\x00\x00\x00\x00\x00\x00\x00")
    assert unnamed_portal_batch(named + message(b"E", b"c1\x00\x00\x00\x00\x00") + sync) is None
    assert any_batch(named + message(b"E", b"c1\x00\x00\x00\x00\x00") + sync) is not None
