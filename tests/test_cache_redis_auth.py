"""The Redis backend with a password and TLS (SPEC §11): a private redis-server started with
requirepass and a TLS port, dbproxy logging in with password_env over rediss:// (the CA from
tls_ca_file); the password is never in dbproxy's log nor unmasked in SHOW CONFIG."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_helpers import EndpointSpec, RawClient, data_rows, first_error, routing_config, running_proxy
from redis_helpers import RedisServer

from deploy.pgcluster import HOST, PgCluster
from proxy.cache.backends import BackendDown
from proxy.cache.redis_backend import RedisBackend
from proxy.config import ConfigError, parse_config
from proxy.config.display import to_display
from proxy.config.urls import masked_url, shown_url
from proxy.tls.certs import generate

PASSWORD = "redis-test-secret-7f3a"
ENV = "DBPROXY_TEST_REDIS_PASSWORD"
DB = "cache_redis_auth"


@pytest.fixture(scope="module")
def certs() -> Iterator[Path]:
    out = generate(tempfile.mkdtemp(prefix="dbproxy-redis-certs-"))
    yield out
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def redis(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path_factory.mktemp("redis-auth"), password=PASSWORD, certs=certs)
    server.start()
    yield server
    server.stop()


def cache_section(redis: RedisServer, certs: Path) -> str:
    return f"""
[clusters.main.cache]
backend = "rediss://{HOST}:{redis.port}/0"
password_env = "{ENV}"
tls_ca_file = "{certs / 'ca.pem'}"
rules = [ {{ match = "^SELECT v FROM secret_items", ttl = "60s" }} ]
"""


def test_dbproxy_caches_through_a_redis_with_a_password_over_tls(
        redis: RedisServer, certs: Path, pg_cluster: PgCluster, tmp_path: Path) -> None:
    pg_cluster.sql(0, f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    pg_cluster.sql(0, f"CREATE DATABASE {DB} OWNER app")
    pg_cluster.sql(0, "CREATE TABLE secret_items (id int PRIMARY KEY, v text); INSERT INTO secret_items VALUES (1, 'a')",
                   user="app", db=DB)
    endpoint = EndpointSpec("writer", "writer")
    text = routing_config([pg_cluster.instance_addrs()[0]], [endpoint], interval_ms=200, pool_size=2)
    os.environ[ENV] = PASSWORD
    try:
        with running_proxy(text + cache_section(redis, certs), tmp_path, endpoint.port) as proxy:
            client = RawClient(endpoint.port)
            client.login("app", DB)
            sql = "SELECT v FROM secret_items WHERE id = 1"
            hit, deadline, i = False, time.monotonic() + 20, 0
            while not hit and time.monotonic() < deadline:   # until its TLS connections are made
                first = data_rows(client.query(sql))[0][0]
                time.sleep(0.1)
                first = data_rows(client.query(sql))[0][0]   # stored by now, if the pool is up
                i += 1
                pg_cluster.sql(0, f"UPDATE secret_items SET v = 'direct{i}'", user="app", db=DB)
                hit = data_rows(client.query(sql))[0][0] == first   # a hit, from the Redis behind TLS + AUTH
            assert hit
            assert first_error(client.query("UPDATE secret_items SET v = 'p' WHERE id = 1")) is None
            assert data_rows(client.query(sql))[0][0] == "p"
            client.close()
            log = proxy.process.log_path.read_text()
            assert "down" not in log and PASSWORD not in log, log[-2000:]
    finally:
        os.environ.pop(ENV, None)
        pg_cluster.sql(0, f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


async def test_a_wrong_password_is_a_backend_down(redis: RedisServer, certs: Path) -> None:
    backend = RedisBackend(f"rediss://{HOST}:{redis.port}/0", "main", 2.0, password="wrong", ca_file=str(certs / "ca.pem"))
    try:
        assert not await backend.connect()
        with pytest.raises(BackendDown) as err:
            await backend.lookup("k", ("t",), None)
        assert "wrong" not in str(err.value)
    finally:
        await backend.close()
    plain = RedisBackend(f"rediss://{HOST}:{redis.port}/0", "main", 2.0, password=PASSWORD,
                         ca_file=str(certs / "ca.pem"))
    try:
        assert await plain.connect()
        assert (await plain.lookup("k", ("t",), None)).value is None   # the right one: answered
    finally:
        await plain.close()


BASE = """
[[users]]
name = "app"
password = "secret"
[clusters.main]
engine = "postgres"
instances = ["127.0.0.1:5432"]
[[clusters.main.endpoints]]
name = "w"
listen = "127.0.0.1:16432"
role = "writer"
[clusters.main.cache]
"""


def test_the_backend_url_is_shown_without_userinfo_and_query() -> None:
    """SHOW CONFIG (to_display) and /status, SHOW CACHE, the status page (shown_url) show one form."""
    config = parse_config(BASE + 'backend = "redis://h:6379/2?socket_keepalive=true"\n')
    assert to_display(config)["clusters"]["main"]["cache"]["backend"] == "redis://h:6379/2"
    assert shown_url("redis://u:pw@h:6379/0?password=pw") == "redis://h:6379/0"
    assert shown_url("unix:///run/redis.sock?db=0&password=pw") == "unix:///run/redis.sock"
    assert shown_url("memory") == "memory" and shown_url("rediss://h:6380/1") == "rediss://h:6380/1"
    assert masked_url("http://admin:S3cretPW@10.0.0.1:8008") == "http://***@10.0.0.1:8008"


def test_the_redis_password_in_the_config(tmp_path: Path) -> None:
    secret = tmp_path / "redis.pw"
    secret.write_text(PASSWORD + "\n")
    config = parse_config(BASE + f'backend = "rediss://h:6380/0"\npassword_file = "{secret}"\nusername = "proxy"\n'
                                 'write_functions = { add_order = ["orders"] }\n')
    cache = config.clusters[0].cache
    assert cache is not None and cache.password == PASSWORD and cache.username == "proxy"
    assert cache.write_functions == (("add_order", ("orders",)),)
    assert PASSWORD not in repr(cache) and PASSWORD not in str(to_display(config))
    assert to_display(config)["clusters"]["main"]["cache"]["password"] != PASSWORD
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + f'backend = "redis://:{PASSWORD}@h:6379/0"\n')
    assert "cache.backend" in str(err.value) and PASSWORD not in str(err.value)
    for backend in (f"redis://h:6379/0?password={PASSWORD}", f"redis://h:6379/0?db=1&Username=u&password={PASSWORD}",
                    f"unix:///run/redis.sock?password={PASSWORD}", f"rediss://proxy:{PASSWORD}@h:6380/0",
                    f"redis://h:6379/0?username={PASSWORD}"):
        with pytest.raises(ConfigError) as err:
            parse_config(BASE + f'backend = "{backend}"\n')
        message = str(err.value)
        assert "clusters.main.cache.backend" in message and "not in the URL" in message, message
        assert PASSWORD not in message, message
    with pytest.raises(ConfigError) as err:   # not a Redis URL: quoted, its userinfo and query masked
        parse_config(BASE + f'backend = "http://proxy:{PASSWORD}@h:6379/0?password={PASSWORD}"\n')
    assert 'invalid value "http://***@h:6379/0?***"' in str(err.value) and PASSWORD not in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + 'backend = "memory"\npassword = "x"\ntls_ca_file = "/ca.pem"\n'
                            'write_functions = { f = [] }\n')
    for part in ("cache.password", "cache.tls_ca_file", "cache.write_functions.f"):
        assert part in str(err.value), str(err.value)
