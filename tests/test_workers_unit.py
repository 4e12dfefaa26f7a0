"""Workers without processes: the channel's framing (byte vectors, Hypothesis), the split of limits, the
merge of SHOW tables / status / metric families, the `workers` setting, and a worker's remote topology."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from proxy.admin.commands import Done
from proxy.admin.resultset import Table
from proxy.admin.views import POOL_COLUMNS
from proxy.config import Address, ConfigError, parse_config
from proxy.topology import InstanceState, TopologySnapshot
from proxy.workers.channel import ChannelError, FrameDecoder, Hello, Notice, Reply, Request, encode
from proxy.workers.control import _merge_done
from proxy.workers.merge import TABLE_MERGES, merge_families, merge_status, merge_tables
from proxy.workers.remote_topology import RemoteTopology
from proxy.workers.shares import connect_rate_share, share, worker_config

BASE = """
[server]
{server}
[[users]]
name = "app"
password = "secret"
max_client_connections = 5

[clusters.main]
engine = "postgres"
instances = ["127.0.0.1:5432", "127.0.0.1:5433"]
[clusters.main.pool]
max_server_connections = 7
min_idle = 1
[clusters.main.databases.app]
max_client_connections = 3
[[clusters.main.endpoints]]
name = "rw"
listen = "127.0.0.1:6432"
role = "writer"
"""


def config(server: str = "", path: Path | None = None):  # type: ignore[no-untyped-def]
    return parse_config(BASE.format(server=server), str(path or "/tmp/dbproxy.toml"))


# ---- channel ---------------------------------------------------------------------------------------

def test_a_frame_is_a_length_then_a_pickle() -> None:
    frame = encode(Notice("drain", 3.0))
    assert frame[:4] == struct.pack("!I", len(frame) - 4)
    assert pickle.loads(frame[4:]) == Notice("drain", 3.0)


def test_decoder_waits_for_whole_frames_and_keeps_order() -> None:
    frames = encode(Request(1, "metrics")) + encode(Reply(1, True, [1, 2])) + encode(Notice("ready", 0))
    decoder = FrameDecoder()
    assert decoder.feed(frames[:3]) == []
    assert decoder.feed(frames[3:10]) == []
    assert decoder.feed(frames[10:]) == [Request(1, "metrics"), Reply(1, True, [1, 2]), Notice("ready", 0)]
    assert decoder.buffered == 0


def test_a_frame_over_the_limit_or_undecodable_is_an_error() -> None:
    with pytest.raises(ChannelError, match="over the 100 byte limit"):
        FrameDecoder(max_frame=100).feed(struct.pack("!I", 101))
    with pytest.raises(ChannelError, match="undecodable"):
        FrameDecoder().feed(struct.pack("!I", 3) + b"\x80\x05x")


def test_hello_with_config_and_snapshot_survives_the_channel() -> None:
    snapshot = TopologySnapshot("main", (InstanceState(Address("127.0.0.1", 5432), "up", "primary"),),
                                writer=Address("127.0.0.1", 5432))
    hello = Hello(1, 2, config(), {"main": snapshot}, frozenset({"main"}))
    (back,) = FrameDecoder().feed(encode(hello))
    assert back == hello
    assert back.snapshots["main"].get(Address("127.0.0.1", 5432)).role == "primary"   # derived fields rebuilt


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=300)), max_size=8), st.data())
def test_any_split_of_the_stream_decodes_the_same_messages(messages: list[tuple[str, bytes]], data: st.DataObject) -> None:
    stream = b"".join(encode(Notice(kind, payload)) for kind, payload in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder()
    got = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += decoder.feed(stream[start:end])
    assert got == [Notice(kind, payload) for kind, payload in messages]
    assert decoder.buffered == 0


# ---- shares ----------------------------------------------------------------------------------------

@given(st.integers(0, 10_000), st.integers(1, 64))
def test_shares_add_up_to_the_limit_when_it_is_at_least_the_worker_count(total: int, count: int) -> None:
    parts = [share(total, i, count) for i in range(count)]
    if total == 0:
        assert parts == [0] * count   # no limit stays no limit
    elif total >= count:
        assert sum(parts) == total and max(parts) - min(parts) <= 1
    else:
        assert parts == [1] * count   # never 0 (which would mean "no limit" or "never a connection")


def test_worker_config_splits_the_limits_and_drops_admin_and_http() -> None:
    whole = config('admin_listen = "127.0.0.1:6000"\nhttp_listen = "127.0.0.1:6001"\nworkers = 2')
    first, second = (worker_config(whole, i, 2) for i in range(2))
    assert (first.clusters[0].pool.max_server_connections, second.clusters[0].pool.max_server_connections) == (4, 3)
    assert (first.clusters[0].pool.min_idle, second.clusters[0].pool.min_idle) == (1, 0)
    assert (first.users[0].max_client_connections, second.users[0].max_client_connections) == (3, 2)
    assert (first.clusters[0].databases[0].max_client_connections,
            second.clusters[0].databases[0].max_client_connections) == (2, 1)
    assert first.server.admin_listen is None and first.server.http_listen is None
    assert whole.server.admin_listen is not None   # the control process keeps its own


def test_connect_rate_share() -> None:
    assert connect_rate_share(10, 0, 4) == (2.5, 3)
    assert connect_rate_share(10, 40, 4) == (2.5, 10)
    assert connect_rate_share(1, 1, 2) == (0.5, 1)


# ---- the setting -----------------------------------------------------------------------------------

def test_workers_setting() -> None:
    assert config().server.workers == 1
    assert config("workers = 3").server.workers == 3
    assert config('workers = "auto"').server.workers == len(os.sched_getaffinity(0))
    for bad, shown in (("0", "integer 0"), ("65", "integer 65"), ('"many"', 'string "many"'), ("1.5", "float 1.5")):
        with pytest.raises(ConfigError) as info:
            config(f"workers = {bad}")
        assert info.value.problems == [f'config error: /tmp/dbproxy.toml: server.workers: must be a number from 1 to '
                                       f'64 or "auto" (got {shown})']


# ---- merging ---------------------------------------------------------------------------------------

def _pool_row(open_: int, borrows: int, wait_ms: float, max_size: int, paused: bool = False) -> tuple[object, ...]:
    return ("main", "127.0.0.1:5432", "app", "app", "transaction", open_, open_, 0, 0, 0, 0, 1, max_size, borrows,
            0, 0, wait_ms, 0, paused)


def test_pools_of_two_workers_are_one_row() -> None:
    one = Table.of(POOL_COLUMNS, [_pool_row(2, 10, 1.0, 4)])
    two = Table.of(POOL_COLUMNS, [_pool_row(1, 30, 3.0, 3, paused=True)])
    (row,) = merge_tables(TABLE_MERGES["SHOW POOLS"], [one, two]).as_dicts()
    assert (row["open"], row["max_size"], row["borrows"], row["waiting"]) == (3, 7, 40, 2)
    assert row["avg_wait_ms"] == 2.5   # weighted by borrows
    assert row["paused"] is True


def test_clients_are_concatenated_in_connect_order() -> None:
    columns = (("id", "int"), ("connected_at", "text"))
    merged = merge_tables(TABLE_MERGES["SHOW CLIENTS"], [Table.of(columns, [(2, "b"), (4, "d")]),
                                                          Table.of(columns, [(1, "a"), (3, "c")])])
    assert [r[0] for r in merged.rows] == [1, 2, 3, 4]


def test_instances_keep_the_control_processs_topology_and_add_connections() -> None:
    columns = (("cluster", "text"), ("instance", "text"), ("state", "text"), ("server_connections", "int"))
    control = Table.of(columns, [("main", "a", "up", 0)])
    worker = Table.of(columns, [("main", "a", "unknown", 3)])
    assert merge_tables(TABLE_MERGES["SHOW INSTANCES"], [control, worker, worker]).rows == [("main", "a", "up", 6)]


def test_status_adds_the_workers_clients_to_the_control_document() -> None:
    cluster = {"name": "main", "writer": "a", "clients": 0, "waiting": 0, "paused": False, "cache": None,
               "instances": [{"instance": "a", "state": "up", "server_connections": 0}],
               "endpoints": [{"endpoint": "rw", "clients": 0, "requests_primary": 0, "requests_replica": 0}],
               "pools": []}
    worker = {**cluster, "clients": 2, "waiting": 1,
              "instances": [{"instance": "a", "state": "unknown", "server_connections": 2}],
              "endpoints": [{"endpoint": "rw", "clients": 2, "requests_primary": 5, "requests_replica": 0}]}
    doc = merge_status({"version": "x", "clusters": [cluster]}, [{"clusters": [worker]}, {"clusters": [worker]}])
    (main,) = doc["clusters"]
    assert (main["clients"], main["waiting"]) == (4, 2)
    assert main["instances"] == [{"instance": "a", "state": "up", "server_connections": 4}]
    assert main["endpoints"][0]["clients"] == 4 and main["endpoints"][0]["requests_primary"] == 10


def test_metric_families_are_summed_into_one_set_of_series() -> None:
    def registry(clients: int, up: int) -> CollectorRegistry:
        r = CollectorRegistry()
        Counter("dbproxy_x", "x", ["cluster"], registry=r).labels("main").inc(clients)
        Gauge("dbproxy_cache_up", "up", ["cluster"], registry=r).labels("main").set(up)
        return r
    merged = merge_families([registry(2, 1).collect(), registry(3, 0).collect()])

    class Families:
        def collect(self):  # type: ignore[no-untyped-def]
            return merged
    text = generate_latest(Families()).decode()   # type: ignore[arg-type]
    assert 'dbproxy_x_total{cluster="main"} 5.0' in text
    assert 'dbproxy_cache_up{cluster="main"} 0.0' in text   # a state gauge: the worst
    assert text.count("# TYPE dbproxy_x_total counter") == 1


def test_fanned_out_answers() -> None:
    from proxy.admin.commands import AdminError
    missing = AdminError("42704", "no client with id 7 (see SHOW CLIENTS)")
    assert _merge_done("KILL CLIENT", [missing, Done("KILL", "client 7 disconnected"), missing]).notice == \
        "client 7 disconnected"
    with pytest.raises(AdminError):
        _merge_done("KILL CLIENT", [missing, missing])
    same = Done("PAUSE", "paused main; no transaction running")
    assert _merge_done("PAUSE", [same, same, same]) == same
    merged = _merge_done("PAUSE", [same, Done("PAUSE", "paused main; 1 transaction(s) still running after 3s")])
    assert merged.notice == "paused main; no transaction running; paused main; 1 transaction(s) still running after 3s"


# ---- a worker's topology -----------------------------------------------------------------------------

async def test_remote_topology_applies_snapshots_and_reports_writer_changes() -> None:
    a, b = Address("127.0.0.1", 5432), Address("127.0.0.1", 5433)
    first = TopologySnapshot("main", (InstanceState(a, "up", "primary"), InstanceState(b, "up", "replica")), writer=a)
    config_ = config()
    changes: list[tuple[Address | None, Address | None]] = []
    probes: list[tuple[str, Address]] = []
    seen: list[TopologySnapshot] = []
    remote = RemoteTopology("main", first, config_.clusters[0].health, lambda c, addr: probes.append((c, addr)),
                            on_writer_change=lambda old, new: changes.append((old, new)))
    remote.snapshot_listeners.append(seen.append)
    remote.start()
    await remote.wait_probed(1.0)
    assert remote.snapshot is first
    second = TopologySnapshot("main", (InstanceState(a, "down"), InstanceState(b, "up", "primary")), writer=b)
    remote.apply(second)
    remote.apply(second)
    assert changes == [(a, b)] and seen == [second, second] and remote.snapshot is second
    remote.probe_now(a)
    assert probes == [("main", a)]
    remote.stop()
