"""Failover mode "patroni" without servers: the config keys, parsing Patroni's /cluster and /switchover
answers (byte vectors captured from Patroni 3.0.2, garbage via Hypothesis), the Authority rule, and
snapshots built with it (only Patroni's leader is the writer, and only while the probe says primary)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.config import Address, ConfigError, parse_config
from proxy.config.display import to_display
from proxy.topology.health import build_snapshot
from proxy.topology.model import Authority, InstanceState, TopologySnapshot
from proxy.topology.patroni import (
    PatroniCluster,
    PatroniError,
    PatroniMember,
    authority,
    describe,
    parse_cluster,
    read_switchover_answer,
    switchover_request,
    unmatched,
)

A, B, C = Address("127.0.0.1", 20418), Address("127.0.0.1", 21943), Address("127.0.0.1", 24547)

# GET /cluster of a healthy Patroni 3.0.2 cluster (tests/test_patroni.py's), byte for byte.
HEALTHY = (
    b'{"members": [{"name": "pg0", "role": "replica", "state": "running", "api_url": '
    b'"http://127.0.0.1:27878/patroni", "host": "127.0.0.1", "port": 20418, "timeline": 1, "lag": 0}, '
    b'{"name": "pg1", "role": "leader", "state": "running", "api_url": "http://127.0.0.1:29937/patroni", '
    b'"host": "127.0.0.1", "port": 21943, "timeline": 1}, {"name": "pg2", "role": "replica", "state": '
    b'"running", "api_url": "http://127.0.0.1:25984/patroni", "host": "127.0.0.1", "port": 24547, '
    b'"timeline": 1, "lag": 0}]}')
# Right after kill -9 of pg1's postgres: nobody holds the leader key, pg1 is stopped, lag unknown.
UNLOCKED = (
    b'{"members": [{"name": "pg0", "role": "replica", "state": "running", "host": "127.0.0.1", "port": 20418,'
    b' "timeline": 1, "lag": 0}, {"name": "pg1", "role": "replica", "state": "stopped", "host": "127.0.0.1",'
    b' "port": 21943, "lag": "unknown"}, {"name": "pg2", "role": "sync_standby", "state": "streaming", '
    b'"host": "127.0.0.1", "port": 24547, "timeline": 1, "lag": 4096, "tags": {"noloadbalance": true}}], '
    b'"pause": true}')


# --------------------------------------------------------------------------- parsing


def test_parse_a_healthy_cluster() -> None:
    cluster = parse_cluster(HEALTHY)
    assert [m.name for m in cluster.members] == ["pg0", "pg1", "pg2"]
    assert cluster.leader == PatroniMember("pg1", "leader", "running", B, timeline=1, lag=None)
    assert cluster.members[0] == PatroniMember("pg0", "replica", "running", A, timeline=1, lag=0)
    assert cluster.member_at(C) is cluster.members[2]
    assert not cluster.paused
    assert describe(cluster) == "pg0 replica running (lag 0), pg1 leader running, pg2 replica running (lag 0)"


def test_parse_an_unlocked_paused_cluster() -> None:
    cluster = parse_cluster(UNLOCKED)
    assert cluster.leader is None and cluster.paused
    stopped, sync = cluster.members[1], cluster.members[2]
    assert (stopped.state, stopped.lag, stopped.timeline) == ("stopped", None, None)   # "unknown" lag
    assert (sync.role, sync.lag, sync.noloadbalance) == ("sync_standby", 4096, True)


@pytest.mark.parametrize(("body", "message"), [
    (b"", "not JSON"),
    (b"<html>", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[]", 'no "members" array'),
    (b'{"members": {}}', 'no "members" array'),
    (b'{"members": [1]}', "members[0] is not an object"),
    (b'{"members": [{"name": "pg0"}]}', "members[0] has no name or role"),
    (b'{"members": [{"role": "leader"}]}', "members[0] has no name or role"),
    (b" " * (1024 * 1024 + 1), "too large"),
])
def test_parse_rejects_what_patroni_does_not_send(body: bytes, message: str) -> None:
    with pytest.raises(PatroniError, match=re.escape(message)):
        parse_cluster(body)


def test_odd_member_fields_are_tolerated() -> None:
    body = json.dumps({"members": [
        {"name": "a", "role": "leader", "host": "::1", "port": 5432},            # IPv6, no state
        {"name": "b", "role": "replica", "state": 7, "host": "h", "port": "x"},  # bad port: no address
        {"name": "c", "role": "replica", "state": "running", "port": 99999, "host": "h"},
        {"name": "d", "role": "replica", "state": "running", "host": "h"},      # default port
        {"name": "e", "role": "replica", "lag": True, "timeline": "2"},          # booleans/strings are not ints
    ]}).encode()
    a, b, c, d, e = parse_cluster(body).members
    assert (a.address, a.state) == (Address("::1", 5432), "")
    assert (b.address, b.state, c.address) == (None, "", None)
    assert d.address == Address("h", 5432)
    assert (e.lag, e.timeline, e.address) == (None, None, None)


@given(st.binary(max_size=300))
def test_parse_of_garbage_raises_only_patroni_error(body: bytes) -> None:
    try:
        parse_cluster(body)
    except PatroniError:
        pass


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20))
def test_parse_of_any_json_raises_only_patroni_error(value: object) -> None:
    try:
        parse_cluster(json.dumps({"members": [value]}).encode())
    except PatroniError:
        pass


def test_switchover_request_and_answers() -> None:
    assert json.loads(switchover_request("pg1", "pg2")) == {"leader": "pg1", "candidate": "pg2"}
    assert json.loads(switchover_request("pg1", None)) == {"leader": "pg1"}
    done = read_switchover_answer(200, b'Successfully switched over to "pg2"')
    assert (done.ok, done.message, done.retry) == (True, 'Successfully switched over to "pg2"', False)
    refused = read_switchover_answer(412, b"candidate name does not match with sync_standby")
    assert (refused.ok, refused.retry) == (False, False) and "HTTP 412" in refused.message
    unknown = read_switchover_answer(503, b"Switchover status unknown")
    assert (unknown.ok, unknown.retry) == (False, True)
    assert "check patroni_user" in read_switchover_answer(401, b"no auth header received").message
    assert read_switchover_answer(500, b"").message == "HTTP 500 (HTTP 500)"


# --------------------------------------------------------------------------- the rule


def test_authority_of_a_healthy_cluster() -> None:
    said = authority(parse_cluster(HEALTHY), [A, B, C])
    assert said == Authority("Patroni", leader=B, excluded={}, lag_bytes={A: 0, C: 0})


def test_authority_without_leader_excludes_what_patroni_does_not_vouch_for() -> None:
    stranger = Address("10.9.9.9", 5432)
    said = authority(parse_cluster(UNLOCKED), [A, B, C, stranger])
    assert said.leader is None
    assert said.excluded == {B: "Patroni member pg1 is stopped", C: "Patroni member pg2 has the noloadbalance tag",
                             stranger: "not a Patroni member"}
    assert said.lag_bytes == {A: 0, C: 4096}


def test_a_leader_that_is_not_a_configured_instance_is_no_writer() -> None:
    cluster = parse_cluster(HEALTHY)
    assert authority(cluster, [A, C]).leader is None
    assert unmatched(cluster, [A, C]) == [f"pg1 ({B})"]
    assert authority(PatroniCluster(()), [A]).leader is None   # before Patroni's first answer


def test_standby_leader_is_no_writer() -> None:
    cluster = PatroniCluster((PatroniMember("pg0", "standby_leader", "running", A),))
    assert cluster.leader is None and authority(cluster, [A]).leader is None


# --------------------------------------------------------------------------- snapshots with it


def up(address: Address, role: str = "replica", **kw: object) -> InstanceState:
    base = InstanceState(address, state="up", role=role, last_check=1.0, last_ok=1.0, position=100,  # type: ignore[arg-type]
                         timeline=1)
    return replace(base, **kw)  # type: ignore[arg-type]


def snapshot(states: list[InstanceState], said: Authority | None,
             previous: TopologySnapshot | None = None) -> TopologySnapshot:
    return build_snapshot("main", states, previous or TopologySnapshot("main"), 0.0, said)


def test_patroni_leader_is_the_writer_only_when_the_probe_says_primary() -> None:
    said = Authority("Patroni", leader=B)
    promoting = snapshot([up(A), up(B), up(C)], said)          # Patroni's leader still in recovery
    assert promoting.writer is None
    done = snapshot([up(A), up(B, "primary"), up(C)], said, promoting)
    assert done.writer == B and done.usable_replicas == (A, C)
    dead = snapshot([up(A), up(B, "primary", state="down"), up(C)], said, done)
    assert dead.writer is None


def test_a_primary_patroni_does_not_call_leader_is_fenced() -> None:
    old_leader_still_primary = snapshot([up(A, "primary"), up(B, "primary", timeline=2), up(C)],
                                        Authority("Patroni", leader=B))
    assert old_leader_still_primary.writer == B
    assert old_leader_still_primary.get(A).state == "fenced"     # type: ignore[union-attr]
    # Patroni says nobody: the only primary is fenced too (no writer rather than a second one).
    nobody = snapshot([up(A, "primary"), up(B)], Authority("Patroni", leader=None))
    assert nobody.writer is None and nobody.get(A).state == "fenced"    # type: ignore[union-attr]
    # Without Patroni (follow/promote mode) the same instances elect A.
    assert snapshot([up(A, "primary"), up(B)], None).writer == A


def test_excluded_replicas_serve_no_reads_and_show_why() -> None:
    said = Authority("Patroni", leader=A, excluded={B: "Patroni member pg1 is stopped"}, lag_bytes={C: 4096})
    snap = snapshot([up(A, "primary"), up(B), up(C, position=90)], said)
    assert snap.usable_replicas == (C,)
    excluded = snap.get(B)
    assert excluded is not None and (excluded.state, excluded.error, excluded.reachable) == (
        "excluded", "Patroni member pg1 is stopped", True)
    assert snap.get(C).lag_bytes == 4096                             # type: ignore[union-attr]
    # A replica the probe finds dead stays down, whatever Patroni says.
    gone = snapshot([up(A, "primary"), up(B, state="down"), up(C)], Authority("Patroni", leader=A), snap)
    assert gone.usable_replicas == (C,) and gone.get(B).state == "down"    # type: ignore[union-attr]


# --------------------------------------------------------------------------- config


BASE = """\
[[users]]
name = "app"
password = "app-secret"

[clusters.main]
engine = "postgres"
instances = ["10.0.0.1:5432", "10.0.0.2:5432"]

[[clusters.main.endpoints]]
name = "writer"
listen = "127.0.0.1:6432"
role = "writer"

[clusters.main.failover]
"""


def problems(failover: str, engine: str = "postgres", env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE.replace('"postgres"', f'"{engine}"') + failover, "f.toml", env=env or {})
    return [line.removeprefix("config error: f.toml: clusters.main.failover.") for line in info.value.problems]


def test_patroni_settings_are_read_and_masked(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    text = BASE + (f'mode = "patroni"\npatroni = ["http://10.0.0.1:8008", "https://[::1]:8009/"]\n'
                   f'patroni_user = "patroni"\npatroni_password_env = "PATRONI_PW"\npatroni_ca = "{ca}"\n')
    failover = parse_config(text, "f.toml", env={"PATRONI_PW": "s3cret"}).clusters[0].failover
    assert (failover.mode, failover.patroni) == ("patroni", ("http://10.0.0.1:8008", "https://[::1]:8009"))
    assert (failover.patroni_user, failover.patroni_password, failover.patroni_ca) == ("patroni", "s3cret", str(ca))
    shown = to_display(parse_config(text, "f.toml", env={"PATRONI_PW": "s3cret"}))["clusters"]["main"]["failover"]
    assert shown["patroni_password"] == "********" and shown["patroni"] == list(failover.patroni)
    assert "s3cret" not in repr(failover)


@pytest.mark.parametrize(("failover", "expected"), [
    ('mode = "patroni"\n', 'patroni: required with mode = "patroni"'),
    ('mode = "patroni"\npatroni = []\n', "patroni: expected a non-empty array of URLs"),
    ('mode = "patroni"\npatroni = "http://h:8008"\n', 'patroni: expected an array of URLs, got string'),
    ('mode = "patroni"\npatroni = ["h:8008"]\n', 'patroni[0]: invalid URL "h:8008": expected http://host:port'),
    ('mode = "patroni"\npatroni = ["ftp://h:8008"]\n', "patroni[0]: invalid URL"),
    ('mode = "patroni"\npatroni = ["http://h"]\n', "patroni[0]: invalid URL \"http://h\": give the port"),
    ('mode = "patroni"\npatroni = ["http://h:99999"]\n', "patroni[0]: invalid URL \"http://h:99999\": Port out of range"),
    ('mode = "patroni"\npatroni = ["http://u:p@h:8008"]\n', "patroni[0]: invalid URL \"http://***@h:8008\": put credentials in"),
    ('mode = "patroni"\npatroni = ["http://h:8008/cluster"]\n', "without a path"),
    ('mode = "patroni"\npatroni = ["http://h:8008", "http://h:8008/"]\n', "patroni[1]: http://h:8008 is listed twice"),
    ('mode = "patroni"\npatroni = [8008]\n', "patroni[0]: expected a URL string"),
    ('patroni = ["http://h:8008"]\n', 'patroni: only used with mode = "patroni" (mode is "follow")'),
    ('mode = "patroni"\npatroni = ["http://h:8008"]\npatroni_password = "x"\n', "patroni_password: needs patroni_user"),
    ('mode = "patroni"\npatroni = ["http://h:8008"]\npatroni_user = "u"\n', "patroni_user: needs patroni_password"),
    ('mode = "patroni"\npatroni = ["http://h:8008"]\npatroni_user = "u"\npatroni_password_env = "NOPE"\n',
     "patroni_password_env: environment variable NOPE is not set"),
    ('mode = "patroni"\npatroni = ["http://h:8008"]\npatroni_ca = "/nonexistent/ca.pem"\n',
     "patroni_ca: cannot read /nonexistent/ca.pem"),
    ('mode = "patroni"\npatroni_url = ["http://h:8008"]\n', "patroni_url: unknown key"),
])
def test_patroni_settings_problems(failover: str, expected: str) -> None:
    found = problems(failover)
    assert any(line.startswith(expected) or expected in line for line in found), found


@pytest.mark.parametrize("url", ["http://admin:S3cretPW@10.0.0.1:8008", "http://admin:S3cretPW@10.0.0.1",
                                 "http://admin:S3cretPW@10.0.0.1:99999", "ftp://admin:S3cretPW@10.0.0.1:8008",
                                 "http://admin:S3cretPW@10.0.0.1:8008/cluster", "http://admin:S3c@ret/PW@h:8008"])
def test_patroni_url_errors_never_echo_the_password(url: str) -> None:
    found = problems(f'mode = "patroni"\npatroni = ["{url}"]\n')
    assert any("patroni[0]: invalid URL" in line for line in found), found
    assert not any("S3c" in line or "PW" in line for line in found), found
    assert any("***@" in line for line in found), found


def test_patroni_mode_is_for_postgresql_only() -> None:
    assert 'mode: Patroni manages PostgreSQL only (engine is "mysql")' in problems(
        'mode = "patroni"\npatroni = ["http://h:8008"]\n', engine="mysql")
