"""End to end: logging in through dbproxy with psql and asyncpg (client auth, server auth, refusals)."""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest
from e2e_helpers import (
    APP,
    CLEAR,
    DB,
    MD5,
    SCRAM,
    ClusterSpec,
    RunningProxy,
    proxy_config,
    psql,
    running_proxy,
)

from deploy.pgcluster import PgCluster, free_ports


@pytest.fixture(scope="module")
def proxies(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningProxy]]:
    """One dbproxy process, three clusters over the same instances: client_auth md5, scram-sha-256, trust."""
    md5_port, scram_port, trust_port = free_ports(3)
    config = proxy_config(pg_cluster, md5_port, client_auth="md5", pool_size=2, more_clusters=[
        ClusterSpec("scram", scram_port, "scram-sha-256", pool_size=2),
        ClusterSpec("trust", trust_port, "trust", pool_size=2),
    ])
    with running_proxy(config, tmp_path_factory.mktemp("login"), md5_port) as proxy:
        yield {
            "md5": proxy,
            "scram-sha-256": RunningProxy(proxy.process, scram_port),
            "trust": RunningProxy(proxy.process, trust_port),
        }
        proxy.assert_alive_and_clean()


@pytest.mark.parametrize("auth", ["md5", "scram-sha-256", "trust"])
def test_psql_logs_in(proxies: dict[str, RunningProxy], auth: str) -> None:
    proxy = proxies[auth]
    password = None if auth == "trust" else APP.password
    res = psql(proxy.port, "app", password, "SELECT current_user, current_database(), 6 * 7")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "app|app|42"


@pytest.mark.parametrize("auth", ["md5", "scram-sha-256"])
def test_psql_without_password_is_refused(proxies: dict[str, RunningProxy], auth: str) -> None:
    res = psql(proxies[auth].port, "app", None, "SELECT 1", extra=["-w"])
    assert res.returncode == 2
    assert "no password supplied" in res.stderr


@pytest.mark.parametrize("auth", ["md5", "scram-sha-256"])
async def test_wrong_password(proxies: dict[str, RunningProxy], auth: str) -> None:
    proxy = proxies[auth]
    res = psql(proxy.port, "app", "wrong", "SELECT 1")
    assert res.returncode == 2
    assert 'FATAL:  password authentication failed for user "app"' in res.stderr
    with pytest.raises(asyncpg.PostgresError) as info:
        await asyncpg.connect(proxy.dsn(APP, password="wrong"))
    assert info.value.sqlstate == "28P01"
    assert 'password authentication failed for user "app"' in proxy.log_text()
    # The proxy carries on.
    assert psql(proxy.port, "app", APP.password, "SELECT 1").stdout.strip() == "1"


@pytest.mark.parametrize("auth", ["md5", "scram-sha-256", "trust"])
async def test_unknown_user(proxies: dict[str, RunningProxy], auth: str) -> None:
    proxy = proxies[auth]
    res = psql(proxy.port, "nobody", "whatever", "SELECT 1")
    assert res.returncode == 2
    assert 'password authentication failed for user "nobody"' in res.stderr
    with pytest.raises(asyncpg.PostgresError) as info:
        await asyncpg.connect(f"postgresql://nobody:whatever@127.0.0.1:{proxy.port}/app")
    assert info.value.sqlstate == "28P01"


@pytest.mark.parametrize("auth", ["md5", "trust"])
async def test_unknown_database(proxies: dict[str, RunningProxy], auth: str) -> None:
    proxy = proxies[auth]
    password = None if auth == "trust" else APP.password
    res = psql(proxy.port, "app", password, "SELECT 1", database="no_such_db")
    assert res.returncode == 2
    assert 'database "no_such_db" does not exist' in res.stderr
    with pytest.raises(asyncpg.PostgresError) as info:
        await asyncpg.connect(proxy.dsn(APP, database="no_such_db"))
    assert info.value.sqlstate == "3D000"
    assert 'database "no_such_db" does not exist' in str(info.value)
    assert psql(proxy.port, "app", password, "SELECT 2").stdout.strip() == "2"


@pytest.mark.parametrize("user", [MD5, SCRAM, CLEAR], ids=["md5", "scram", "cleartext"])
@pytest.mark.parametrize("auth", ["md5", "scram-sha-256"])
async def test_server_side_auth(proxies: dict[str, RunningProxy], auth: str, user) -> None:  # type: ignore[no-untyped-def]
    """pg_hba.conf makes the server ask md5user for md5, scramuser for SCRAM and clearuser for a
    cleartext password: logging in as them through the proxy exercises each server-side method."""
    proxy = proxies[auth]
    res = psql(proxy.port, user.name, user.password, "SELECT current_user")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == user.server_user
    conn = await asyncpg.connect(proxy.dsn(user))
    try:
        assert await conn.fetchval("SELECT current_user") == user.server_user
        assert await conn.fetchval("SELECT $1::int + 1", 41) == 42
    finally:
        await conn.close()


async def test_wrong_server_password_reaches_the_client(proxies: dict[str, RunningProxy]) -> None:
    """A proxy user whose server_password is wrong gets the server's 28P01 (at login or first query).

    Pools are per (cluster, instance, server user, database): proxy users mapped to the same server
    user share connections, so this runs on the "trust" cluster, where no other test opened a
    connection as md5user (otherwise badserver would simply be handed one of those). The pool
    opens its connections with the credentials of whichever proxy user created it, so the reverse
    also holds: md5user must not use this cluster after badserver did.
    """
    proxy = proxies["trust"]
    with pytest.raises(asyncpg.PostgresError) as info:
        conn = await asyncpg.connect(f"postgresql://badserver:bad-secret@127.0.0.1:{proxy.port}/{DB}")
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()
    assert info.value.sqlstate == "28P01"
    assert 'password authentication failed for user "md5user"' in str(info.value)
    assert psql(proxy.port, "app", None, "SELECT 3").stdout.strip() == "3"
