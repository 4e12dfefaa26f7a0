"""Byte-vector and property tests of MySQL packet framing: headers, 16 MiB splits, reassembly, limits."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.engines.mysql.wire.codes import MAX_PACKET_PAYLOAD
from proxy.engines.mysql.wire.packets import (
    HEADER_SIZE,
    PacketReader,
    complete_prefix,
    encode_packet,
    encode_packets,
    packet_header,
    payload_length,
    sequence_id,
)
from proxy.errors import ProtocolViolation

MAX = MAX_PACKET_PAYLOAD
# One buffer the big payloads are sliced from (cheap to slice, not all the same byte).
BIG = bytes(range(256)) * ((2 * MAX + 512) // 256)


def headers(data: bytes) -> list[tuple[int, int]]:
    """(length, seq) of every packet in data."""
    out = []
    pos = 0
    while pos < len(data):
        length = payload_length(data, pos)
        out.append((length, sequence_id(data, pos)))
        pos += HEADER_SIZE + length
    assert pos == len(data)
    return out


def read_all(reader: PacketReader) -> list[tuple[int, bytes]]:
    out = []
    while (item := reader.next()) is not None:
        out.append(item)
    return out


def test_header_is_three_bytes_little_endian_length_and_a_sequence_id() -> None:
    assert encode_packet(b"\x0e", 0) == b"\x01\x00\x00\x00\x0e"
    assert encode_packet(b"x" * 0x012345, 7)[:4] == b"\x45\x23\x01\x07"
    assert packet_header(0xFFFFFE, 255) == b"\xfe\xff\xff\xff"
    assert payload_length(b"\x45\x23\x01\x07") == 0x012345
    assert sequence_id(b"\x45\x23\x01\x07") == 7


def test_next_seq_follows_and_wraps() -> None:
    assert encode_packets(b"abc", 3) == (b"\x03\x00\x00\x03abc", 4)
    assert encode_packets(b"", 255) == (b"\x00\x00\x00\xff", 0)


@pytest.mark.parametrize(("size", "expected"), [
    (MAX - 1, [(MAX - 1, 5)]),
    (MAX, [(MAX, 5), (0, 6)]),                    # exactly 0xFFFFFF: an empty packet follows
    (MAX + 1, [(MAX, 5), (1, 6)]),
    (2 * MAX, [(MAX, 5), (MAX, 6), (0, 7)]),
    (2 * MAX + 3, [(MAX, 5), (MAX, 6), (3, 7)]),
])
def test_big_payloads_are_split_at_0xffffff(size: int, expected: list[tuple[int, int]]) -> None:
    payload = BIG[:size]
    data, next_seq = encode_packets(payload, 5)
    assert headers(data) == expected
    assert next_seq == (5 + len(expected)) & 0xFF
    reader = PacketReader(max_payload=3 * MAX)
    reader.feed(data)
    assert reader.next() == (5, payload)
    assert reader.next_seq == next_seq
    assert reader.next() is None and reader.buffered == 0


def test_split_payload_sequence_ids_wrap_past_255() -> None:
    data, next_seq = encode_packets(BIG[:MAX + 1], 255)
    assert headers(data) == [(MAX, 255), (1, 0)]
    assert next_seq == 1
    reader = PacketReader()
    reader.feed(data)
    assert reader.next() == (255, BIG[:MAX + 1])


def test_reader_waits_for_whole_payloads_fed_byte_by_byte() -> None:
    stream = encode_packet(b"hello", 0) + encode_packet(b"", 1) + encode_packet(b"world!", 2)
    reader = PacketReader()
    got = []
    for i in range(len(stream)):
        reader.feed(stream[i:i + 1])
        got.extend(read_all(reader))
    assert got == [(0, b"hello"), (1, b""), (2, b"world!")]
    assert reader.next_seq == 3 and reader.buffered == 0


def test_reader_reassembles_a_split_payload_fed_in_odd_chunks() -> None:
    payload = BIG[:MAX + 100]
    stream = encode_packet(payload, 0) + encode_packet(b"after", 2)
    reader = PacketReader()
    got = []
    step = 1_000_003
    for i in range(0, len(stream), step):
        reader.feed(stream[i:i + step])
        got.extend(read_all(reader))
    assert got == [(0, payload), (2, b"after")]


def test_limit_is_enforced_from_the_header_alone() -> None:
    reader = PacketReader(max_payload=100)
    reader.feed(packet_header(101, 0))
    with pytest.raises(ProtocolViolation, match="exceeds the limit of 100"):
        reader.next()
    ok = PacketReader(max_payload=100)
    ok.feed(encode_packet(b"x" * 100))
    assert ok.next() == (0, b"x" * 100)


def test_limit_counts_all_packets_of_a_split_payload() -> None:
    reader = PacketReader(max_payload=MAX + 10)
    reader.feed(encode_packet(BIG[:MAX + 11], 0)[:HEADER_SIZE + MAX + HEADER_SIZE])   # up to the 2nd header
    with pytest.raises(ProtocolViolation, match="exceeds"):
        reader.next()


def test_packets_out_of_order_inside_a_split_payload_are_refused() -> None:
    data = bytearray(encode_packet(BIG[:MAX + 1], 0))
    data[HEADER_SIZE + MAX + 3] = 5      # the continuation should be seq 1
    reader = PacketReader()
    reader.feed(bytes(data))
    with pytest.raises(ProtocolViolation, match="out of order"):
        reader.next()


def test_take_rest_returns_unread_bytes_including_a_partial_packet() -> None:
    first = encode_packet(b"one", 0)
    partial = encode_packet(b"two-and-more", 0)[:7]
    reader = PacketReader()
    reader.feed(first + partial)
    assert reader.next() == (0, b"one")
    assert reader.next() is None
    assert reader.buffered == len(partial)
    assert reader.take_rest() == partial
    assert reader.buffered == 0 and reader.next() is None


def test_take_rest_in_the_middle_of_a_split_payload_resets_the_scan() -> None:
    reader = PacketReader()
    data = encode_packet(BIG[:MAX + 5], 0)
    reader.feed(data[:HEADER_SIZE + MAX + 2])
    assert reader.next() is None
    assert reader.take_rest() == data[:HEADER_SIZE + MAX + 2]
    reader.feed(encode_packet(b"fresh", 0))
    assert reader.next() == (0, b"fresh")


def test_complete_prefix_stops_before_an_incomplete_payload() -> None:
    small = encode_packet(b"abc", 0)
    split = encode_packet(BIG[:MAX + 2], 1)
    assert complete_prefix(small + split) == len(small + split)
    assert complete_prefix(small + split[:-1]) == len(small)
    assert complete_prefix(small + split[:HEADER_SIZE + MAX]) == len(small)   # first packet only
    assert complete_prefix(small + small[:3]) == len(small)
    assert complete_prefix(b"xx" + small, 2) == 2 + len(small)


def test_many_small_packets_frame_in_linear_time() -> None:
    # 200k packets in one buffer: compaction must not move the remaining bytes for each packet.
    stream = encode_packet(b"x" * 10, 0) * 200_000
    reader = PacketReader()
    started = time.perf_counter()
    reader.feed(stream)
    count = len(read_all(reader))
    assert count == 200_000
    assert time.perf_counter() - started < 5.0


def test_a_split_payload_fed_in_small_chunks_is_scanned_once() -> None:
    # 16 MiB in 16 KiB feeds, next() after each: stays O(n) (no rescans, no quadratic copies).
    payload = BIG[:MAX + 1]
    data = encode_packet(payload, 0)
    reader = PacketReader()
    started = time.perf_counter()
    step = 16384
    got = []
    for i in range(0, len(data), step):
        reader.feed(data[i:i + step])
        got.extend(read_all(reader))
    assert got == [(0, payload)]
    assert time.perf_counter() - started < 5.0


def _round_trip(sizes: list[int], seq: int, cuts: list[int]) -> None:
    payloads = [BIG[i:i + n] for i, n in enumerate(sizes)]
    stream = bytearray()
    expected = []
    for payload in payloads:
        data, next_seq = encode_packets(payload, seq)
        expected.append((seq, payload))
        stream += data
        seq = next_seq
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    reader = PacketReader()
    got = []
    for a, b in zip(points, points[1:], strict=False):
        reader.feed(bytes(stream[a:b]))
        got.extend(read_all(reader))
    assert got == expected
    assert reader.next_seq == seq and reader.buffered == 0


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(0, 600), min_size=1, max_size=8), seq=st.integers(0, 255),
       cuts=st.lists(st.integers(0, 5000), max_size=10))
def test_framing_round_trip_with_random_chunking(sizes: list[int], seq: int, cuts: list[int]) -> None:
    _round_trip(sizes, seq, cuts)


@settings(max_examples=8, deadline=None)
@given(big=st.sampled_from([MAX - 1, MAX, MAX + 1]), small=st.lists(st.integers(0, 300), max_size=2),
       seq=st.integers(0, 255), cuts=st.lists(st.integers(0, 1 << 25), max_size=4))
def test_framing_round_trip_around_16_mib(big: int, small: list[int], seq: int, cuts: list[int]) -> None:
    _round_trip([*small, big], seq, cuts)


@pytest.mark.parametrize("cut", range(HEADER_SIZE + MAX - 2, 2 * HEADER_SIZE + MAX + 1))   # the payload still incomplete
def test_cut_around_the_continuation_header(cut: int) -> None:
    payload = BIG[:MAX + 1]
    data = encode_packet(payload, 0) + encode_packet(b"z", 2)
    reader = PacketReader()
    reader.feed(data[:cut])
    assert reader.next() is None
    assert reader.next() is None          # asking again changes nothing
    reader.feed(data[cut:])
    assert read_all(reader) == [(0, payload), (2, b"z")]
