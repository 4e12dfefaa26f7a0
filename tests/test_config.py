"""Tests for proxy.config and proxy.durations: parsing, every validation rule, secrets, masking, diff."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from proxy.config import (
    Address,
    Config,
    ConfigError,
    EndpointConfig,
    FailoverSettings,
    HealthSettings,
    PoolSettings,
    ServerSettings,
    TlsSettings,
    User,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
)
from proxy.config.diff import ClusterDiff, diff
from proxy.config.display import to_display
from proxy.durations import format_duration, format_size
from proxy.tls.certs import generate

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "dbproxy.example.toml"

BASE = """\
[[users]]
name = "app"
password = "app-secret"

[clusters.main]
engine = "postgres"
instances = ["10.0.0.1:5432", "10.0.0.2:5432", "10.0.0.3:5432"]

[clusters.main.pool]
max_server_connections = 20

[[clusters.main.endpoints]]
name = "writer"
listen = "127.0.0.1:6432"
role = "writer"
"""


def parse(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(text, "f.toml", env={} if env is None else env)


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text, env)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def edit(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def endpoint(**keys: str) -> str:
    body = "".join(f"{key} = {value}\n" for key, value in keys.items())
    return f"\n[[clusters.main.endpoints]]\n{body}"


# --------------------------------------------------------------------------- durations and sizes


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("2s", 2.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("0s", 0.0),
        ("1.5s", 1.5),
        (" 10 s ", 10.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5", 'duration "5" has no unit'),
        ("5 sec", 'unknown unit "sec"'),
        ("-5s", "invalid duration"),
        ("s", "invalid duration"),
        ("", "invalid duration"),
        ("5M", 'unknown unit "M"'),
    ],
)
def test_parse_duration_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [("512B", 512), ("64KB", 65536), ("16MB", 16 * 1024**2), ("1GB", 1024**3), ("2mb", 2 * 1024**2)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["16", "16TB", "1.5MB", "MB", "-1KB"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    "seconds", [0.0, 0.5, 0.0005, 1.0, 1.5, 59.0, 60.0, 90.0, 300.0, 3600.0, 5400.0, 7200.0]
)
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_format_duration_picks_the_largest_exact_unit() -> None:
    assert [format_duration(s) for s in (0, 0.5, 2, 90, 300, 3600)] == [
        "0s",
        "500ms",
        "2s",
        "90s",
        "5m",
        "1h",
    ]
    assert [format_size(n) for n in (0, 512, 2048, 16 * 1024**2, 1024**3)] == [
        "0B",
        "512B",
        "2KB",
        "16MB",
        "1GB",
    ]


# --------------------------------------------------------------------------- addresses


def test_address_parse_and_str() -> None:
    assert Address.parse("127.0.0.1:5432") == Address("127.0.0.1", 5432)
    assert Address.parse("db.example.com:3306") == Address("db.example.com", 3306)
    assert Address.parse("[::1]:6432") == Address("::1", 6432)
    assert str(Address("::1", 6432)) == "[::1]:6432"
    assert str(Address("127.0.0.1", 5432)) == "127.0.0.1:5432"
    assert sorted([Address("b", 1), Address("a", 2), Address("a", 1)]) == [
        Address("a", 1),
        Address("a", 2),
        Address("b", 1),
    ]


@pytest.mark.parametrize(
    "text", ["localhost", "host:", ":5432", "host:0", "host:65536", "host:x", "::1:5432", "a b:1"]
)
def test_address_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid address"):
        Address.parse(text)


# --------------------------------------------------------------------------- valid configs


def test_example_config_parses_to_the_documented_values() -> None:
    config = load_config(str(EXAMPLE))
    assert config.path == str(EXAMPLE)
    assert config.server == ServerSettings(
        admin_listen=Address("127.0.0.1", 6400),
        http_listen=Address("127.0.0.1", 9930),
        log_format="text",
        log_level="info",
        shutdown_timeout=30.0,
        client_login_timeout=15.0,
    )
    assert config.users == (
        User("app", "app-secret", "app", "app-secret", admin=False),
        User("admin", "admin-secret", "admin", "admin-secret", admin=True),
    )
    assert config.user("admin") is config.users[1]
    assert config.user("nobody") is None
    (main,) = config.clusters
    assert config.cluster("main") is main
    assert main.engine == "postgres"
    assert main.instances == tuple(Address("127.0.0.1", port) for port in (5432, 5433, 5434))
    assert main.client_auth == "scram-sha-256"
    assert main.read_only_functions == ("app_report_totals",)
    assert main.tls == TlsSettings("disable")
    assert main.server_tls == TlsSettings("prefer")
    assert main.health == HealthSettings(
        interval=0.5,
        timeout=1.0,
        failure_threshold=3,
        max_replica_lag=10.0,
        user="app",
        password="app-secret",
        database="postgres",
        tls=TlsSettings("prefer"),   # probes and failover actions use server_tls
    )
    assert main.failover == FailoverSettings(mode="follow", promote_after=3.0, borrow_timeout=30.0)
    assert main.pool == PoolSettings()  # the example spells out every default
    assert main.endpoints == (
        EndpointConfig("writer", Address("127.0.0.1", 6432), "writer"),
        EndpointConfig("reader", Address("127.0.0.1", 6433), "reader"),
        EndpointConfig("app", Address("127.0.0.1", 6434), "split", read_your_writes=True),
        EndpointConfig(
            "analytics",
            Address("127.0.0.1", 6435),
            "custom",
            instances=(Address("127.0.0.1", 5434),),
            kind="reader",
        ),
    )


def test_example_commented_mysql_cluster_is_valid_too(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    head, _, block = text.partition("# --- a MariaDB/MySQL cluster")
    uncommented = "\n".join(line[2:] if line.startswith("# ") else "" for line in block.splitlines()[1:])
    config = parse(head + uncommented)
    shop = config.cluster("shop")
    assert shop is not None
    assert (shop.engine, shop.client_auth, shop.pool.max_server_connections) == (
        "mysql",
        "mysql_native_password",
        10,
    )
    assert [e.role for e in shop.endpoints] == ["writer", "reader"]


def test_minimal_config_gets_defaults() -> None:
    config = parse(BASE)
    assert config.server == ServerSettings(None, None, "text", "info", 30.0)
    (main,) = config.clusters
    assert main.client_auth == "scram-sha-256"
    assert main.tls == main.server_tls == TlsSettings()
    assert main.health == HealthSettings(user="app", password="app-secret")  # probes log in as the first user
    assert main.failover == FailoverSettings()
    assert main.pool == PoolSettings()
    assert main.read_only_functions == ()
    assert main.endpoints[0].kind == "reader"


POOL_SETTINGS = """\
mode = "session"
max_server_connections = 5
min_idle = 2
idle_timeout = "10s"
max_lifetime = "2h"
connect_timeout = "250ms"
max_client_connections = 50
client_idle_timeout = "15m"
init_query = "SET statement_timeout = 1000"
prepared_statements = false
max_prepared_statements = 10
notification_queue = 50"""

HEALTH_AND_FAILOVER = """
[clusters.main.health]
interval = "1s"
timeout = "2s"
failure_threshold = 5
max_replica_lag = "0s"

[clusters.main.failover]
mode = "promote"
promote_after = "10s"
borrow_timeout = "5s"
replay = true
replay_timeout = "3s"
replay_max_bytes = 65536
replay_max_statements = 50
"""


def test_every_setting_is_read() -> None:
    server = '[server]\nlog_format = "json"\nlog_level = "debug"\nshutdown_timeout = "1m"\n'
    split = endpoint(name='"rw"', listen='"127.0.0.1:7000"', role='"split"', read_your_writes="true")
    assert parse(BASE + endpoint(name='"d"', listen='"127.0.0.1:7001"', role='"split"')).clusters[0].endpoints[
        -1].read_your_writes, "read_your_writes is on by default on split endpoints (SPEC §3.4)"
    assert not parse(BASE + endpoint(name='"d"', listen='"127.0.0.1:7001"', role='"split"',
                                     read_your_writes="false")).clusters[0].endpoints[-1].read_your_writes
    custom = endpoint(
        name='"all"', listen='"127.0.0.1:7001"', role='"custom"', exclude='["10.0.0.1:5432"]', kind='"any"'
    )
    text = server + edit("max_server_connections = 20", POOL_SETTINGS) + HEALTH_AND_FAILOVER + split + custom
    config = parse(text)
    assert config.server == ServerSettings(None, None, "json", "debug", 60.0)
    (main,) = config.clusters
    assert main.pool == PoolSettings(
        mode="session",
        max_server_connections=5,
        min_idle=2,
        idle_timeout=10.0,
        max_lifetime=7200.0,
        connect_timeout=0.25,
        max_client_connections=50,
        client_idle_timeout=900.0,
        init_query="SET statement_timeout = 1000",
        prepared_statements=False,
        max_prepared_statements=10,
        notification_queue=50,
    )
    assert main.health == HealthSettings(1.0, 2.0, 5, 0.0, "app", "app-secret")
    assert main.failover == FailoverSettings("promote", 10.0, 5.0, replay=True, replay_timeout=3.0,
                                             replay_max_bytes=65536, replay_max_statements=50)
    assert main.endpoints[1] == EndpointConfig(
        "rw", Address("127.0.0.1", 7000), "split", read_your_writes=True
    )
    assert main.endpoints[2] == EndpointConfig(
        "all", Address("127.0.0.1", 7001), "custom", exclude=(Address("10.0.0.1", 5432),), kind="any"
    )


def test_probe_login_defaults_to_the_first_users_server_credentials() -> None:
    text = edit('password = "app-secret"', 'password = "app-secret"\nserver_user = "svc"\nserver_password = "svc-pw"')
    health = parse(text).clusters[0].health
    assert (health.user, health.password, health.database) == ("svc", "svc-pw", "postgres")


def test_probe_login_can_be_given() -> None:
    text = BASE + '\n[clusters.main.health]\nuser = "monitor"\npassword_env = "MON_PW"\ndatabase = "app"\n'
    health = parse(text, env={"MON_PW": "mon-secret"}).clusters[0].health
    assert (health.user, health.password, health.database) == ("monitor", "mon-secret", "app")
    assert to_display(parse(text, env={"MON_PW": "mon-secret"}))["clusters"]["main"]["health"]["password"] == "********"


def test_probe_user_without_password_means_trust() -> None:
    health = parse(BASE + '\n[clusters.main.health]\nuser = "monitor"\n').clusters[0].health
    assert (health.user, health.password) == ("monitor", None)


def test_probe_password_alone_keeps_the_default_user() -> None:
    health = parse(BASE + '\n[clusters.main.health]\npassword = "other"\n').clusters[0].health
    assert (health.user, health.password) == ("app", "other")


def test_probe_login_problems() -> None:
    text = BASE + '\n[clusters.main.health]\nuser = ""\npassword = "a"\npassword_env = "B"\ndatabase = ""\n'
    assert problems(text) == [
        _e("clusters.main.health.user", "must not be empty"),
        _e("clusters.main.health", "give only one of password, password_env"),
        _e("clusters.main.health.database", "must not be empty"),
    ]


def test_mysql_cluster_defaults_to_native_password() -> None:
    config = parse(edit('engine = "postgres"', 'engine = "mysql"'))
    assert config.clusters[0].client_auth == "mysql_native_password"


def test_trust_allows_users_without_password() -> None:
    text = edit(
        'password = "app-secret"\n',
        "",
        edit('engine = "postgres"', 'engine = "postgres"\nclient_auth = "trust"'),
    )
    config = parse(text)
    assert config.users[0].password is None
    assert config.users[0].server_password is None


def test_read_only_functions_are_lower_cased() -> None:
    config = parse(edit('engine = "postgres"', 'engine = "postgres"\nread_only_functions = ["My_Report"]'))
    assert config.clusters[0].read_only_functions == ("my_report",)


def test_ipv6_and_wildcard_addresses() -> None:
    config = parse(edit('listen = "127.0.0.1:6432"', 'listen = "[::1]:6432"'))
    assert config.clusters[0].endpoints[0].listen == Address("::1", 6432)


# --------------------------------------------------------------------------- one rule, one line


def _e(key: str, what: str) -> str:
    return f"config error: f.toml: {key}: {what}"


RULES: list[tuple[str, str, str]] = [
    # (description, config text, the one expected line)
    (
        "typo in a key",
        edit("max_server_connections = 20", "max_server_conection = 20"),
        _e("clusters.main.pool.max_server_conection", "unknown key (did you mean max_server_connections?)"),
    ),
    ("unknown table", BASE + "\n[database]\nx = 1\n", _e("database", "unknown key")),
    (
        "integer as string",
        edit("max_server_connections = 20", 'max_server_connections = "20"'),
        _e("clusters.main.pool.max_server_connections", 'expected an integer, got string "20"'),
    ),
    (
        "boolean as integer",
        edit("max_server_connections = 20", "max_server_connections = true"),
        _e("clusters.main.pool.max_server_connections", "expected an integer, got boolean true"),
    ),
    (
        "bad engine",
        edit('engine = "postgres"', 'engine = "postgresql"'),
        _e(
            "clusters.main.engine",
            'invalid value "postgresql": expected one of postgres | mysql (did you mean "postgres"?)',
        ),
    ),
    (
        "missing engine",
        edit('engine = "postgres"\n', ""),
        _e("clusters.main.engine", "required key is missing"),
    ),
    (
        "client_auth of the other engine",
        edit('engine = "postgres"', 'engine = "mysql"\nclient_auth = "scram-sha-256"'),
        _e(
            "clusters.main.client_auth",
            'invalid value "scram-sha-256": expected one of mysql_native_password | caching_sha2_password'
            ' for engine = "mysql"',
        ),
    ),
    (
        "bad pool mode",
        edit("max_server_connections = 20", 'mode = "statement"'),
        _e("clusters.main.pool.mode", 'invalid value "statement": expected one of session | transaction'),
    ),
    (
        "bad failover mode",
        BASE + '\n[clusters.main.failover]\nmode = "promot"\n',
        _e(
            "clusters.main.failover.mode",
            'invalid value "promot": expected one of follow | promote | patroni (did you mean "promote"?)',
        ),
    ),
    (
        "bad endpoint role",
        edit('role = "writer"', 'role = "master"'),
        _e(
            "clusters.main.endpoints[0].role",
            'invalid value "master": expected one of writer | reader | split | custom',
        ),
    ),
    (
        "bad endpoint kind",
        BASE
        + endpoint(name='"c"', listen='"127.0.0.1:7000"', role='"custom"', exclude="[]", kind='"primary"'),
        _e("clusters.main.endpoints[1].kind", 'invalid value "primary": expected one of reader | any'),
    ),
    (
        "verify-full is server side only",
        edit('engine = "postgres"', 'engine = "postgres"\ntls = { mode = "verify-full" }'),
        _e(
            "clusters.main.tls.mode",
            'invalid value "verify-full": expected one of disable | prefer | require',
        ),
    ),
    (
        "bad server tls mode",
        edit('engine = "postgres"', 'engine = "postgres"\nserver_tls = { mode = "verify-none" }'),
        _e(
            "clusters.main.server_tls.mode",
            'invalid value "verify-none": expected one of disable | prefer | require | verify-ca | verify-full'
            ' (did you mean "verify-ca"?)',
        ),
    ),
    (
        "bad log format",
        '[server]\nlog_format = "xml"\n' + BASE,
        _e("server.log_format", 'invalid value "xml": expected one of text | json'),
    ),
    (
        "bad log level",
        '[server]\nlog_level = "warn"\n' + BASE,
        _e(
            "server.log_level",
            'invalid value "warn": expected one of debug | info | warning | error (did you mean "warning"?)',
        ),
    ),
    (
        "address without port",
        edit('"10.0.0.2:5432"', '"10.0.0.2"'),
        _e("clusters.main.instances[1]", 'invalid address "10.0.0.2": expected "host:port"'),
    ),
    (
        "address with a bad port",
        '[server]\nhttp_listen = "127.0.0.1:99999"\n' + BASE,
        _e("server.http_listen", 'invalid address "127.0.0.1:99999": port must be a number from 1 to 65535'),
    ),
    (
        "instance listed twice",
        edit('"10.0.0.3:5432"', '"10.0.0.1:5432"'),
        _e("clusters.main.instances[2]", "10.0.0.1:5432 is listed twice"),
    ),
    (
        "listen address used twice",
        BASE + endpoint(name='"reader"', listen='"127.0.0.1:6432"', role='"reader"'),
        _e(
            "clusters.main.endpoints[1].listen",
            "127.0.0.1:6432 is already used by clusters.main.endpoints[0].listen",
        ),
    ),
    (
        "admin listen clashes with an endpoint",
        '[server]\nadmin_listen = "127.0.0.1:6432"\n' + BASE,
        _e("clusters.main.endpoints[0].listen", "127.0.0.1:6432 is already used by server.admin_listen"),
    ),
    (
        "wildcard listen clashes with a specific host",
        '[server]\nhttp_listen = "0.0.0.0:6432"\n' + BASE,
        _e("clusters.main.endpoints[0].listen", "127.0.0.1:6432 is already used by server.http_listen"),
    ),
    (
        "duplicate endpoint name",
        BASE + endpoint(name='"writer"', listen='"127.0.0.1:7000"', role='"reader"'),
        _e("clusters.main.endpoints[1].name", 'duplicate endpoint name "writer" in this cluster'),
    ),
    (
        "endpoint without listen",
        edit('listen = "127.0.0.1:6432"\n', ""),
        _e("clusters.main.endpoints[0].listen", "required key is missing"),
    ),
    (
        "endpoint name with a space",
        edit('name = "writer"', 'name = "the writer"'),
        _e("clusters.main.endpoints[0].name", "endpoint names may only contain letters, digits, '_' and '-'"),
    ),
    (
        "duplicate user",
        BASE + '\n[[users]]\nname = "app"\npassword = "other"\n',
        _e("users[1].name", 'duplicate user "app"'),
    ),
    (
        "user without name",
        edit('name = "app"\n', ""),
        _e("users[0].name", "required key is missing"),
    ),
    (
        "cluster without instances",
        edit('instances = ["10.0.0.1:5432", "10.0.0.2:5432", "10.0.0.3:5432"]', "instances = []"),
        _e("clusters.main.instances", "at least one instance is required"),
    ),
    (
        "cluster without an instances key",
        edit('instances = ["10.0.0.1:5432", "10.0.0.2:5432", "10.0.0.3:5432"]\n', ""),
        _e("clusters.main.instances", "required key is missing"),
    ),
    (
        "cluster without endpoints",
        BASE.partition("[[clusters.main.endpoints]]")[0],
        _e("clusters.main.endpoints", "at least one endpoint is required ([[clusters.main.endpoints]])"),
    ),
    (
        "endpoints written as a single table",
        edit("[[clusters.main.endpoints]]", "[clusters.main.endpoints]"),
        _e(
            "clusters.main.endpoints",
            "expected an array of tables ([[clusters.main.endpoints]]), got a table",
        ),
    ),
    (
        "no clusters",
        BASE.partition("[clusters.main]")[0],
        _e("clusters", "at least one cluster is required ([clusters.<name>])"),
    ),
    (
        "no users",
        "[clusters.main]" + BASE.partition("[clusters.main]")[2],
        _e("users", "at least one [[users]] entry is required"),
    ),
    (
        "empty users array",
        "users = []\n" + "[clusters.main]" + BASE.partition("[clusters.main]")[2],
        _e("users", "at least one [[users]] entry is required"),
    ),
    (
        "users written as a single table",
        BASE.replace("[[users]]", "[users]"),
        _e("users", "expected an array of tables ([[users]]), got a table"),
    ),
    (
        "custom endpoint with neither instances nor exclude",
        BASE + endpoint(name='"c"', listen='"127.0.0.1:7000"', role='"custom"'),
        _e("clusters.main.endpoints[1]", "a custom endpoint needs exactly one of instances or exclude"),
    ),
    (
        "custom endpoint with both instances and exclude",
        BASE
        + endpoint(
            name='"c"',
            listen='"127.0.0.1:7000"',
            role='"custom"',
            instances='["10.0.0.1:5432"]',
            exclude='["10.0.0.2:5432"]',
        ),
        _e("clusters.main.endpoints[1]", "a custom endpoint needs exactly one of instances or exclude"),
    ),
    (
        "custom endpoint over a foreign instance",
        BASE
        + endpoint(name='"c"', listen='"127.0.0.1:7000"', role='"custom"', instances='["10.9.9.9:5432"]'),
        _e("clusters.main.endpoints[1].instances", "10.9.9.9:5432 is not one of the cluster's instances"),
    ),
    (
        "custom endpoint excluding a foreign instance",
        BASE + endpoint(name='"c"', listen='"127.0.0.1:7000"', role='"custom"', exclude='["10.9.9.9:5432"]'),
        _e("clusters.main.endpoints[1].exclude", "10.9.9.9:5432 is not one of the cluster's instances"),
    ),
    (
        "custom endpoint with an empty instance list",
        BASE + endpoint(name='"c"', listen='"127.0.0.1:7000"', role='"custom"', instances="[]"),
        _e(
            "clusters.main.endpoints[1].instances",
            "must not be empty (list at least one instance, or use exclude)",
        ),
    ),
    (
        "custom endpoint excluding everything",
        BASE
        + endpoint(
            name='"c"',
            listen='"127.0.0.1:7000"',
            role='"custom"',
            exclude='["10.0.0.1:5432", "10.0.0.2:5432", "10.0.0.3:5432"]',
        ),
        _e("clusters.main.endpoints[1].exclude", "excludes every instance of the cluster"),
    ),
    (
        "instances on a reader endpoint",
        BASE
        + endpoint(name='"r"', listen='"127.0.0.1:7000"', role='"reader"', instances='["10.0.0.1:5432"]'),
        _e(
            "clusters.main.endpoints[1].instances",
            'only valid for role = "custom" (this endpoint has role = "reader")',
        ),
    ),
    (
        "read_your_writes on a writer endpoint",
        edit('role = "writer"', 'role = "writer"\nread_your_writes = true'),
        _e(
            "clusters.main.endpoints[0].read_your_writes",
            'only valid for role = "split" (this endpoint has role = "writer")',
        ),
    ),
    (
        "no server connections",
        edit("max_server_connections = 20", "max_server_connections = 0"),
        _e("clusters.main.pool.max_server_connections", "must be at least 1 (got 0)"),
    ),
    (
        "no notification queue",
        edit("max_server_connections = 20", "max_server_connections = 20\nnotification_queue = 0"),
        _e("clusters.main.pool.notification_queue", "must be at least 1 (got 0)"),
    ),
    (
        "min_idle above max",
        edit("max_server_connections = 20", "max_server_connections = 2\nmin_idle = 3"),
        _e("clusters.main.pool.min_idle", "must not exceed max_server_connections (3 > 2)"),
    ),
    (
        "failure_threshold zero",
        BASE + "\n[clusters.main.health]\nfailure_threshold = 0\n",
        _e("clusters.main.health.failure_threshold", "must be at least 1 (got 0)"),
    ),
    (
        "zero probe interval",
        BASE + '\n[clusters.main.health]\ninterval = "0ms"\n',
        _e("clusters.main.health.interval", "must be greater than zero"),
    ),
    (
        "duration as a bare number",
        BASE + "\n[clusters.main.health]\ninterval = 500\n",
        _e(
            "clusters.main.health.interval",
            'expected a duration string with a unit (e.g. "500ms", "2s", "5m"), got integer 500',
        ),
    ),
    (
        "duration string without unit",
        BASE + '\n[clusters.main.failover]\nborrow_timeout = "30"\n',
        _e("clusters.main.failover.borrow_timeout", 'duration "30" has no unit: write e.g. "30s" or "30ms"'),
    ),
    (
        "replay not a boolean",
        BASE + '\n[clusters.main.failover]\nreplay = "yes"\n',
        _e("clusters.main.failover.replay", 'expected true or false, got string "yes"'),
    ),
    (
        "zero replay timeout",
        BASE + '\n[clusters.main.failover]\nreplay_timeout = "0s"\n',
        _e("clusters.main.failover.replay_timeout", "must be greater than zero"),
    ),
    (
        "zero replay bound",
        BASE + '\n[clusters.main.failover]\nreplay_max_statements = 0\n',
        _e("clusters.main.failover.replay_max_statements", "must be at least 1 (got 0)"),
    ),
    (
        "user without password under scram",
        edit('password = "app-secret"\n', ""),
        _e(
            "users[0]",
            'user "app" has no password (password, password_env or password_file), '
            'but cluster "main" uses client_auth = "scram-sha-256"',
        ),
    ),
    (
        "empty password",
        edit('password = "app-secret"', 'password = ""'),
        _e("users[0].password", "must not be empty (leave it out for trust authentication)"),
    ),
    (
        "two password sources",
        edit('password = "app-secret"', 'password = "app-secret"\npassword_env = "APP_PW"'),
        _e("users[0]", "give only one of password, password_env"),
    ),
    (
        "password_env not set",
        edit('password = "app-secret"', 'password_env = "DBPROXY_TEST_UNSET"'),
        _e("users[0].password_env", "environment variable DBPROXY_TEST_UNSET is not set"),
    ),
    (
        "server_password_env not set",
        edit(
            'password = "app-secret"', 'password = "app-secret"\nserver_password_env = "DBPROXY_TEST_UNSET"'
        ),
        _e("users[0].server_password_env", "environment variable DBPROXY_TEST_UNSET is not set"),
    ),
    (
        "admin flag as string",
        edit('password = "app-secret"', 'password = "app-secret"\nadmin = "yes"'),
        _e("users[0].admin", 'expected true or false, got string "yes"'),
    ),
    (
        "tls require without cert and key",
        edit('engine = "postgres"', 'engine = "postgres"\ntls = { mode = "require" }'),
        _e(
            "clusters.main.tls",
            'mode "require" needs cert and key (the proxy\'s certificate and private key)',
        ),
    ),
    (
        "cluster name with a dot",
        BASE.replace("clusters.main", 'clusters."a.b"'),
        _e("clusters.a.b", "cluster names may only contain letters, digits, '_' and '-'"),
    ),
]


@pytest.mark.parametrize(("text", "expected"), [case[1:] for case in RULES], ids=[case[0] for case in RULES])
def test_each_rule_reports_one_line(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_toml_syntax_error_is_one_line_with_position() -> None:
    text = BASE + '\n[[clusters.main.endpoints]]\nname = "reader"; listen = "127.0.0.1:6433"\n'
    line = len(BASE.splitlines()) + 3
    assert problems(text) == [
        _e(
            f"line {line}, column 16",
            "invalid TOML: Expected newline or end of document after a statement"
            " (TOML has no ';' separator: put each key = value on its own line)",
        )
    ]


def test_toml_syntax_error_at_end_of_file() -> None:
    (line,) = problems(BASE + '\nx = "unterminated')
    assert line.startswith("config error: f.toml: ")
    assert "invalid TOML" in line


def test_all_problems_are_reported_at_once() -> None:
    text = edit("max_server_connections = 20", "max_server_conection = 20\nmode = 3")
    text = edit('"10.0.0.2:5432"', '"nohost"', text)
    text = '[server]\nlog_level = "loud"\n' + edit(
        'password = "app-secret"', 'password_env = "DBPROXY_TEST_UNSET"', text
    )
    found = problems(text)
    assert found == [
        _e("server.log_level", 'invalid value "loud": expected one of debug | info | warning | error'),
        _e("users[0].password_env", "environment variable DBPROXY_TEST_UNSET is not set"),
        _e("clusters.main.instances[1]", 'invalid address "nohost": expected "host:port"'),
        _e("clusters.main.pool.max_server_conection", "unknown key (did you mean max_server_connections?)"),
        _e("clusters.main.pool.mode", "expected a string, got integer 3"),
    ]
    assert all("\n" not in line for line in found)


def test_load_config_of_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.problems == [f"config error: {path}: cannot read file: No such file or directory"]


def test_load_config_of_a_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"# caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(path))


# --------------------------------------------------------------------------- secrets


def test_password_from_env() -> None:
    text = edit('password = "app-secret"', 'password_env = "APP_PW"\nserver_user = "app_rw"')
    user = parse(text, env={"APP_PW": "from-env"}).users[0]
    assert user == User("app", "from-env", "app_rw", "from-env", admin=False)


def test_empty_env_variable_is_an_error() -> None:
    text = edit('password = "app-secret"', 'password_env = "APP_PW"')
    assert problems(text, env={"APP_PW": ""}) == [
        _e("users[0].password_env", "environment variable APP_PW is empty")
    ]


def test_password_file_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "app.pw").write_text("from-file\n")
    (tmp_path / "server.pw").write_text("server-secret")
    text = edit(
        'password = "app-secret"',
        'password_file = "secrets/app.pw"\nserver_user = "svc"\nserver_password_file = "server.pw"',
    )
    path = tmp_path / "dbproxy.toml"
    path.write_text(text)
    user = load_config(str(path)).users[0]
    assert user == User("app", "from-file", "svc", "server-secret")


def test_unreadable_password_file(tmp_path: Path) -> None:
    path = tmp_path / "dbproxy.toml"
    path.write_text(edit('password = "app-secret"', 'password_file = "missing.pw"'))
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.problems == [
        f"config error: {path}: users[0].password_file: cannot read {tmp_path / 'missing.pw'}: No such file or directory"
    ]


def test_empty_password_file(tmp_path: Path) -> None:
    (tmp_path / "empty.pw").write_text("\n")
    path = tmp_path / "dbproxy.toml"
    path.write_text(edit('password = "app-secret"', 'password_file = "empty.pw"'))
    with pytest.raises(
        ConfigError, match=re.escape(f"users[0].password_file: {tmp_path / 'empty.pw'} is empty")
    ):
        load_config(str(path))


def test_tls_files_are_resolved_and_must_be_readable(tmp_path: Path) -> None:
    certs = generate(tmp_path / "certs")
    shutil.copy(certs / "server.pem", tmp_path / "proxy.crt")
    shutil.copy(certs / "server-key.pem", tmp_path / "proxy.key")
    tls = '\ntls = { mode = "require", cert = "proxy.crt", key = "proxy.key" }\nserver_tls = { mode = "verify-full", ca = "ca.pem" }'
    path = tmp_path / "dbproxy.toml"
    path.write_text(edit('engine = "postgres"', 'engine = "postgres"' + tls))
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.problems == [
        f"config error: {path}: clusters.main.server_tls.ca: cannot read {tmp_path / 'ca.pem'}: No such file or directory"
    ]
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="clusters.main.server_tls: cannot load the certificate, key or CA"):
        load_config(str(path))
    shutil.copy(certs / "ca.pem", tmp_path / "ca.pem")
    cluster = load_config(str(path)).clusters[0]
    assert cluster.tls == TlsSettings("require", str(tmp_path / "proxy.crt"), str(tmp_path / "proxy.key"))
    assert cluster.server_tls == TlsSettings("verify-full", ca=str(tmp_path / "ca.pem"))


def test_tls_cert_without_key() -> None:
    text = edit(
        'engine = "postgres"',
        'engine = "postgres"\nserver_tls = { mode = "require", cert = "' + __file__ + '" }',
    )
    assert problems(text) == [_e("clusters.main.server_tls", "cert and key must be given together")]


def test_to_display_masks_every_secret() -> None:
    text = edit(
        'password = "app-secret"',
        'password_env = "APP_PW"\nserver_user = "svc"\nserver_password = "server-secret"',
    )
    display = to_display(parse(text, env={"APP_PW": "env-secret"}))
    dumped = json.dumps(display)
    for secret in ("env-secret", "server-secret", "APP_PW"):
        assert secret not in dumped
    assert display["users"] == [
        {
            "name": "app",
            "password": "********",
            "server_user": "svc",
            "server_password": "********",
            "admin": False,
        }
    ]


def test_replication_credentials_are_read_from_env_and_masked() -> None:
    text = BASE + '\n[clusters.main.failover]\nreplication_user = "repl"\nreplication_password_env = "REPL_PW"\n'
    config = parse(text, env={"REPL_PW": "repl-secret"})
    failover = config.clusters[0].failover
    assert (failover.replication_user, failover.replication_password) == ("repl", "repl-secret")
    display = to_display(config)
    assert "repl-secret" not in json.dumps(display)
    assert display["clusters"]["main"]["failover"]["replication_password"] == "********"
    assert any("REPL_MISSING is not set" in p for p in problems(
        BASE + '\n[clusters.main.failover]\nreplication_password_env = "REPL_MISSING"\n'))


def test_to_display_shape() -> None:
    display = to_display(load_config(str(EXAMPLE)))
    assert display["server"]["admin_listen"] == "127.0.0.1:6400"
    main = display["clusters"]["main"]
    assert main["instances"] == ["127.0.0.1:5432", "127.0.0.1:5433", "127.0.0.1:5434"]
    assert main["health"] == {
        "interval": "500ms",
        "timeout": "1s",
        "failure_threshold": 3,
        "max_replica_lag": "10s",
        "user": "app",
        "password": "********",
        "database": "postgres",
    }
    assert main["pool"]["idle_timeout"] == "5m"
    assert main["tls"] == {"mode": "disable"}
    assert main["endpoints"][3] == {
        "name": "analytics",
        "listen": "127.0.0.1:6435",
        "role": "custom",
        "instances": ["127.0.0.1:5434"],
        "kind": "reader",
    }
    assert "admin_listen" not in to_display(parse(BASE))["server"]  # absent values are left out


# --------------------------------------------------------------------------- diff


def _changed(old: Config, new: Config) -> ClusterDiff:
    (cluster_diff,) = diff(old, new).clusters_changed
    return cluster_diff


def test_diff_of_identical_configs_is_empty() -> None:
    assert diff(parse(BASE), parse(BASE)).empty
    reordered = edit('"10.0.0.1:5432", "10.0.0.2:5432"', '"10.0.0.2:5432", "10.0.0.1:5432"')
    assert diff(parse(BASE), parse(reordered)).empty


def test_diff_instances_added_and_removed() -> None:
    new = parse(edit('"10.0.0.3:5432"', '"10.0.0.4:5432"'))
    assert _changed(parse(BASE), new) == ClusterDiff(
        "main", instances_added=(Address("10.0.0.4", 5432),), instances_removed=(Address("10.0.0.3", 5432),)
    )


def test_diff_endpoints_added_removed_changed() -> None:
    old = parse(BASE + endpoint(name='"reader"', listen='"127.0.0.1:6433"', role='"reader"'))
    new = parse(
        edit('listen = "127.0.0.1:6432"', 'listen = "127.0.0.1:7432"')
        + endpoint(name='"app"', listen='"127.0.0.1:6434"', role='"split"')
    )
    assert _changed(old, new) == ClusterDiff(
        "main", endpoints_added=("app",), endpoints_removed=("reader",), endpoints_changed=("writer",)
    )
    assert diff(old, new).requires_restart == ()


def test_diff_settings_flags() -> None:
    new = parse(
        edit("max_server_connections = 20", "max_server_connections = 30")
        + '\n[clusters.main.health]\ninterval = "1s"\n[clusters.main.failover]\nmode = "promote"\n'
    )
    assert _changed(parse(BASE), new) == ClusterDiff(
        "main", pool_changed=True, health_changed=True, failover_changed=True
    )
    auth = parse(
        edit('engine = "postgres"', 'engine = "postgres"\nclient_auth = "md5"\nread_only_functions = ["f"]')
    )
    assert _changed(parse(BASE), auth) == ClusterDiff(
        "main", client_auth_changed=True, read_only_functions_changed=True
    )


def test_diff_clusters_added_and_removed() -> None:
    other = (
        BASE.partition("[clusters.main]")[2]
        .replace("clusters.main", "clusters.other")
        .replace("6432", "7432")
    )
    both = parse(BASE + "\n[clusters.other]" + other)
    result = diff(parse(BASE), both)
    assert (result.clusters_added, result.clusters_removed, result.clusters_changed) == (("other",), (), ())
    result = diff(both, parse(BASE))
    assert (result.clusters_added, result.clusters_removed) == ((), ("other",))


def test_diff_users() -> None:
    new = parse(
        edit('password = "app-secret"', 'password = "rotated"')
        + '\n[[users]]\nname = "admin"\npassword = "a"\nadmin = true\n'
    )
    result = diff(parse(BASE), new)
    assert (result.users_added, result.users_removed, result.users_changed) == (("admin",), (), ("app",))
    assert not result.server_changed
    # The probes log in with the first user's server password, so the cluster's health changed too.
    assert [(d.name, d.health_changed) for d in result.clusters_changed] == [("main", True)]
    assert diff(new, parse(BASE)).users_removed == ("admin",)


def test_diff_server_settings_and_restart() -> None:
    old = parse('[server]\nadmin_listen = "127.0.0.1:6400"\nlog_level = "info"\n' + BASE)
    quieter = parse('[server]\nadmin_listen = "127.0.0.1:6400"\nlog_level = "warning"\n' + BASE)
    moved = parse('[server]\nadmin_listen = "127.0.0.1:6401"\nhttp_listen = "127.0.0.1:9930"\n' + BASE)
    assert diff(old, quieter) == dataclasses.replace(diff(old, old), server_changed=True)
    assert diff(old, moved).requires_restart == ("server.admin_listen", "server.http_listen")
    engine = parse(edit('engine = "postgres"', 'engine = "mysql"'))
    assert diff(parse(BASE), engine).requires_restart == ("clusters.main.engine",)


def test_tls_client_certificates_endpoint_override_and_versions(tmp_path: Path) -> None:
    certs = generate(tmp_path)
    tls = f'tls = {{ mode = "prefer", cert = "{certs}/server.pem", key = "{certs}/server-key.pem"'
    assert problems(edit('engine = "postgres"', f'engine = "postgres"\n{tls}, client_cert = "verify" }}')) == [
        _e("clusters.main.tls.client_cert", 'client_cert = "verify" needs ca (the CA that signs client certificates)')]
    assert problems(edit('engine = "postgres"', 'engine = "postgres"\nserver_tls = { mode = "verify-full" }')) == [
        _e("clusters.main.server_tls.ca", 'mode "verify-full" needs ca (the CA that signs the servers\' certificates)')]
    text = edit('role = "writer"', f'role = "writer"\n{tls}, min_version = "1.3", ca = "{certs}/ca.pem", '
                                   'client_cert = "verify" }')
    endpoint = parse(text).clusters[0].endpoints[0]
    assert endpoint.tls == TlsSettings("prefer", f"{certs}/server.pem", f"{certs}/server-key.pem",
                                       f"{certs}/ca.pem", "verify", "1.3")
    assert parse(BASE).clusters[0].endpoints[0].tls is None   # the cluster's tls applies


def test_server_faults_is_off_by_default_and_a_boolean() -> None:
    assert parse(BASE).server.faults is False
    assert parse("[server]\nfaults = true\n" + BASE).server.faults is True
    assert problems("[server]\nfaults = \"yes\"\n" + BASE) == [
        _e("server.faults", 'expected true or false, got string "yes"')]
    assert problems("[server]\nfaults = true\nworkers = 2\n" + BASE) == [
        _e("server.faults", "fault injection needs workers = 1 (workers = 2): the faults live in one process")]



def test_a_memory_cache_needs_one_process() -> None:
    cache = '\n[clusters.main.cache]\nbackend = "{}"\ndefault_ttl = "5s"\n'
    assert problems("[server]\nworkers = 2\n" + BASE + cache.format("memory")) == [
        _e("clusters.main.cache.backend",
           '"memory" keeps entries in each process: with workers = 2 a write through one worker would not '
           "invalidate another's; use a Redis backend (shared by the workers) or workers = 1")]
    assert parse("[server]\nworkers = 2\n" + BASE + cache.format("redis://127.0.0.1:6379/0")).clusters[0].cache
    assert parse("[server]\nworkers = 1\n" + BASE + cache.format("memory")).clusters[0].cache


SHADOW = """
[clusters.shadow]
engine = "postgres"
instances = ["10.0.1.1:5432"]

[[clusters.shadow.endpoints]]
name = "writer"
listen = "127.0.0.1:6500"
role = "writer"
"""


def test_mirror_settings() -> None:
    text = edit('engine = "postgres"\n', 'engine = "postgres"\nmirror = { cluster = "shadow", sample = 0.1 }\n')
    mirror = parse(text + SHADOW).clusters[0].mirror
    assert mirror is not None and (mirror.cluster, mirror.sample, mirror.reads_only, mirror.compare) == (
        "shadow", 0.1, True, False)
    assert parse(BASE).clusters[0].mirror is None


@pytest.mark.parametrize(("mirror", "expected"), [
    ('{ cluster = "nope" }', _e("clusters.main.mirror.cluster", 'no cluster named "nope" (clusters: main, shadow)')),
    ('{ cluster = "main" }', _e("clusters.main.mirror.cluster", "a cluster cannot mirror to itself")),
    ('{ cluster = "shadow", sample = 0 }', _e("clusters.main.mirror.sample",
                                              "must be greater than 0 and at most 1 (got 0)")),
    ('{ cluster = "shadow", sample = "half" }', _e("clusters.main.mirror.sample", 'expected a number, got string "half"')),
    ('{ cluster = "shadow", reads_only = false, compare = true }',
     _e("clusters.main.mirror.compare", "compare = true needs reads_only = true (each read also runs on the primary)")),
    ('{ sample = 0.5 }', _e("clusters.main.mirror.cluster", "required key is missing")),
    ('{ cluster = "shadow", every = 2 }', _e("clusters.main.mirror.every", "unknown key")),
])
def test_mirror_bad_values(mirror: str, expected: str) -> None:
    text = edit('engine = "postgres"\n', f'engine = "postgres"\nmirror = {mirror}\n')
    assert expected in problems(text + SHADOW)


def test_mirror_to_another_engine() -> None:
    text = edit('engine = "postgres"\n', 'engine = "postgres"\nmirror = { cluster = "shadow" }\n')
    assert problems(text + SHADOW.replace('engine = "postgres"', 'engine = "mysql"')) == [
        _e("clusters.main.mirror.cluster", 'cluster "shadow" uses engine mysql, this one postgres')]
