"""Admission policy without I/O (core/admission.py): allowlists, connect rate, connection counts, log throttle.

Time is a plain number passed in: every rule is checked with a fake clock.
"""

from __future__ import annotations

import pytest

from proxy.config import ConfigError, parse_config
from proxy.core.admission import (
    Allowlist,
    ConnectionCounts,
    ConnectRateLimiter,
    LogThrottle,
    TokenBucket,
    allowlist_for,
    client_host,
    parse_network,
)

# ---- allowlists ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "allowed"), [
    ("10.1.2.3", True),
    ("10.255.255.255", True),
    ("11.0.0.1", False),
    ("127.0.0.1", True),
    ("127.0.0.2", False),
    ("::1", True),
    ("::2", False),
    ("::ffff:10.9.9.9", True),        # an IPv4 client of a dual-stack listener
    ("::ffff:192.168.0.1", False),
    ("fe80::1%eth0", False),          # scoped, not listed
    ("not-an-address", False),
    ("", False),
])
def test_allowlist_matches_networks(host: str, allowed: bool) -> None:
    allow = Allowlist(("10.0.0.0/8", "127.0.0.1/32", "::1/128"))
    assert allow.allows(host) is allowed
    assert allow.allows(host) is allowed   # remembered verdict, same answer


def test_allowlist_for_is_shared_and_none_when_empty() -> None:
    assert allowlist_for(()) is None
    assert allowlist_for(("10.0.0.0/8",)) is allowlist_for(("10.0.0.0/8",))


def test_client_host() -> None:
    assert client_host(("10.0.0.7", 5555)) == "10.0.0.7"
    assert client_host(("::1", 5555, 0, 0)) == "::1"
    assert client_host(None) == ""


@pytest.mark.parametrize(("text", "normalized"), [
    ("10.0.0.0/8", "10.0.0.0/8"), ("127.0.0.1", "127.0.0.1/32"), ("::1", "::1/128"),
    (" 192.168.0.0/16 ", "192.168.0.0/16"), ("2001:db8::/32", "2001:db8::/32")])
def test_parse_network(text: str, normalized: str) -> None:
    assert parse_network(text) == normalized


@pytest.mark.parametrize(("text", "words"), [
    ("10.1.2.3/8", 'host bits are set (did you mean "10.0.0.0/8"?)'),
    ("10.0.0.0/33", "invalid network"),
    ("example.com", "invalid network"),
])
def test_parse_network_errors(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        parse_network(text)


CONFIG = """\
[server]
admin_listen = "127.0.0.1:6400"
{server}
[[users]]
name = "app"
password = "x"
{user}
[clusters.main]
engine = "postgres"
instances = ["127.0.0.1:5432"]
{cluster}
[[clusters.main.endpoints]]
name = "writer"
listen = "127.0.0.1:6432"
role = "writer"
{endpoint}
"""


def _config(server: str = "", user: str = "", cluster: str = "", endpoint: str = "") -> str:
    return CONFIG.format(server=server, user=user, cluster=cluster, endpoint=endpoint)


def test_config_reads_allowlists_and_limits() -> None:
    config = parse_config(_config(
        server='admin_allow = ["127.0.0.1"]\nhttp_allow = ["10.0.0.0/8", "::1"]\n'
               'client_connect_rate = 20\nclient_connect_burst = 40\naudit_statements = "ddl"\naudit_log = "stderr"',
        user="max_client_connections = 3",
        cluster="[clusters.main.databases.app]\nmax_client_connections = 7",
        endpoint='allow = ["10.0.0.0/8", "127.0.0.1/32"]'))
    assert config.server.admin_allow == ("127.0.0.1/32",)
    assert config.server.http_allow == ("10.0.0.0/8", "::1/128")
    assert (config.server.client_connect_rate, config.server.client_connect_burst) == (20, 40)
    assert (config.server.audit_log, config.server.audit_statements) == ("stderr", "ddl")
    assert config.users[0].max_client_connections == 3
    cluster = config.clusters[0]
    assert cluster.database_limit("app") == 7 and cluster.database_limit("other") == 0
    assert cluster.endpoints[0].allow == ("10.0.0.0/8", "127.0.0.1/32")


@pytest.mark.parametrize(("pieces", "problem"), [
    ({"endpoint": 'allow = ["10.0.0.0/88"]'}, 'clusters.main.endpoints[0].allow[0]: invalid network "10.0.0.0/88"'),
    ({"endpoint": 'allow = ["10.0.0.1/8"]'}, "clusters.main.endpoints[0].allow[0]: invalid network"),
    ({"endpoint": "allow = []"}, "clusters.main.endpoints[0].allow: must not be empty"),
    ({"server": 'admin_allow = ["localhost"]'}, 'server.admin_allow[0]: invalid network "localhost"'),
    ({"server": "http_allow = [1]"}, "server.http_allow[0]: expected a CIDR"),
    ({"server": 'http_allow = "10.0.0.0/8"'}, "server.http_allow: expected an array of CIDR strings"),
    ({"server": 'audit_statements = "some"'}, 'server.audit_statements: invalid value "some"'),
    ({"server": "client_connect_rate = -1"}, "server.client_connect_rate: must be at least 0"),
    ({"user": "max_client_connections = -2"}, "users[0].max_client_connections: must be at least 0"),
    ({"cluster": "[clusters.main.databases.app]\nmax_clients = 1"},
     "clusters.main.databases.app.max_clients: unknown key (did you mean max_client_connections?)"),
    ({"cluster": "databases = 3"}, "clusters.main.databases: expected a table of databases"),
])
def test_config_errors_name_the_key(pieces: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config(**pieces), "dbproxy.toml")
    assert any(problem in line for line in caught.value.problems), caught.value.problems


# ---- connect rate ---------------------------------------------------------------------------------


def test_token_bucket_refills_with_time() -> None:
    bucket = TokenBucket(rate=2.0, burst=3.0, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(100.4)          # 0.8 token
    assert bucket.take(100.5)              # 1.0 token
    assert not bucket.take(100.5)
    assert bucket.take(200.0) and bucket.take(200.0) and bucket.take(200.0) and not bucket.take(200.0)  # capped


def test_rate_limiter_is_per_address() -> None:
    limiter = ConnectRateLimiter(rate=10, burst=5)
    now = 1000.0
    storm = [limiter.allow("10.0.0.1", now) for _ in range(8)]
    assert storm == [True] * 5 + [False] * 3
    assert limiter.allow("10.0.0.2", now)            # another address is not affected
    assert not limiter.allow("10.0.0.1", now + 0.05)  # half a token
    assert limiter.allow("10.0.0.1", now + 0.1)
    # A steady 10 per second from one address keeps getting in.
    assert all(limiter.allow("10.0.0.3", now + i / 10) for i in range(100))


def test_rate_limiter_bounds_its_table() -> None:
    limiter = ConnectRateLimiter(rate=1, burst=1, max_hosts=100)
    for i in range(100):
        limiter.allow(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(limiter) == 100
    limiter.allow("10.1.0.0", 0.5)            # all others are still refilling: the table starts over
    assert len(limiter) == 1
    for i in range(99):
        limiter.allow(f"10.2.0.{i}", 10.0)
    limiter.allow("10.3.0.0", 20.0)          # every bucket is full by then: forgotten
    assert len(limiter) == 1


# ---- connection counts ----------------------------------------------------------------------------


def test_counts_per_user_and_database() -> None:
    counts = ConnectionCounts()
    assert counts.claim("app", 2, "main", "app", 0) is None
    assert counts.claim("app", 2, "main", "other", 0) is None
    assert counts.claim("app", 2, "main", "app", 0) == "user_limit"
    assert counts.claim("bob", 0, "main", "app", 2) is None
    assert counts.claim("carol", 0, "main", "app", 2) == "database_limit"   # app has 2 (app + bob)
    assert counts.claim("carol", 0, "shop", "app", 2) is None               # per cluster
    counts.release("app", "main", "app")
    assert counts.claim("carol", 0, "main", "app", 2) is None
    assert counts.claim("app", 2, "main", "x", 0) is None   # one of app's two was released
    assert counts.claim("app", 2, "main", "y", 0) == "user_limit"
    for user, cluster, database in (("app", "main", "other"), ("app", "main", "x"), ("bob", "main", "app"),
                                    ("carol", "shop", "app"), ("carol", "main", "app")):
        counts.release(user, cluster, database)
    assert counts.users == {} and counts.databases == {}


def test_counts_without_limits_still_count() -> None:
    counts = ConnectionCounts()
    for _ in range(1000):
        assert counts.claim("app", 0, "main", "app", 0) is None
    assert counts.users["app"] == 1000


# ---- log throttle ---------------------------------------------------------------------------------


def test_log_throttle_one_line_per_key_and_interval() -> None:
    throttle = LogThrottle(interval=10.0, per_second=100.0)
    assert throttle.admit("allowlist 10.0.0.1", 0.0) == 0
    assert [throttle.admit("allowlist 10.0.0.1", t) for t in (1.0, 2.0, 9.9)] == [None, None, None]
    assert throttle.admit("allowlist 10.0.0.2", 1.0) == 0       # another address
    assert throttle.admit("allowlist 10.0.0.1", 10.0) == 3      # says how many were dropped
    assert throttle.admit("allowlist 10.0.0.1", 25.0) == 0


def test_log_throttle_overall_budget() -> None:
    throttle = LogThrottle(interval=10.0, per_second=5.0)
    written = [throttle.admit(f"rate 10.0.{i // 256}.{i % 256}", 50.0) for i in range(1000)]
    assert sum(1 for w in written if w is not None) == 5     # a flood from many addresses: 5 lines
    later = [throttle.admit(f"rate 10.9.0.{i}", 51.0) for i in range(20)]
    assert sum(1 for w in later if w is not None) == 5
