"""Two availability zones simulated on loopback, against the real PostgreSQL and MariaDB test clusters.

The proxy runs in "zone-a" (region "lo"). Replica 1 (reached through a fault-injecting TCP relay, so
that it can be made to look dead without touching the shared cluster) is tagged zone-a, replica 2
zone-b, the primary zone-b. Reads on the reader and split endpoints go to replica 1 only while it
is healthy; when it fails, replica 2 (the other zone, same region) takes every read; when it comes
back, reads return to it. dbproxy_zone_requests_total counts both zone pairs and SHOW TOPOLOGY
says how near each instance is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pymysql
import pytest
from e2e_helpers import running_proxy, wait_until
from faulty_tcp import Fault, FaultyTcpProxy
from ops_helpers import admin, http_get, scrape

from deploy.pgcluster import HOST, free_ports

ADMIN_PASSWORD = "admin-secret"
READS = 30


@dataclass
class Engine:
    name: str
    addresses: list[str]      # primary, replica 1, replica 2
    ports: list[int]
    users: str                # [[users]] TOML
    cluster_keys: str         # client_auth and the health login
    read: Callable[[int, int], list[int]]   # n autocommit reads through the endpoint on a port: the servers' ports


def pg_reads(port: int, n: int) -> list[int]:
    with psycopg.connect(host=HOST, port=port, user="app", dbname="app", autocommit=True, connect_timeout=5) as conn:
        return [int(conn.execute("SELECT inet_server_port()").fetchone()[0]) for _ in range(n)]  # type: ignore[index]


def mysql_reads(port: int, n: int) -> list[int]:
    with closing(pymysql.connect(host=HOST, port=port, user="app", password="app-pass", database="app",
                                 autocommit=True, connect_timeout=5, read_timeout=10)) as conn:
        ports = []
        with conn.cursor() as cur:
            for _ in range(n):
                cur.execute("SELECT @@port")
                ports.append(int(cur.fetchone()[0]))  # type: ignore[index]
        return ports


@pytest.fixture(params=["postgres", "mysql"])
def engine(request: pytest.FixtureRequest) -> Engine:
    if request.param == "postgres":
        pg = request.getfixturevalue("pg_cluster")
        return Engine("postgres", pg.instance_addrs(), list(pg.ports),
                      'name = "app"\nserver_user = "app"\n', 'client_auth = "trust"', pg_reads)
    my = request.getfixturevalue("mysql_cluster")
    return Engine("mysql", list(my.addresses), list(my.ports), 'name = "app"\npassword = "app-pass"\n',
                  'client_auth = "mysql_native_password"\n[clusters.main.health]\nuser = "root"\n'
                  'interval = "100ms"\ntimeout = "500ms"\nfailure_threshold = 2\n', mysql_reads)


@pytest.fixture
def relay(engine: Engine) -> Iterator[FaultyTcpProxy]:
    host, _, port = engine.addresses[1].rpartition(":")
    proxy = FaultyTcpProxy(host, int(port)).start()
    yield proxy
    proxy.stop()


def zones_config(engine: Engine, replica1: str, ports: dict[str, int]) -> str:
    primary, _, replica2 = engine.addresses
    health = "" if engine.name == "mysql" else \
        '\n[clusters.main.health]\ninterval = "100ms"\ntimeout = "500ms"\nfailure_threshold = 2\n'
    return f"""
[server]
zone = "zone-a"
region = "lo"
admin_listen = "{HOST}:{ports['admin']}"
http_listen = "{HOST}:{ports['http']}"
shutdown_timeout = "2s"

[[users]]
{engine.users}
[[users]]
name = "admin"
password = "{ADMIN_PASSWORD}"
admin = true

[clusters.main]
engine = "{engine.name}"
instances = [
  {{ address = "{primary}", zone = "zone-b", region = "lo" }},
  {{ address = "{replica1}", zone = "zone-a", region = "lo" }},
  {{ address = "{replica2}", zone = "zone-b", region = "lo" }},
]
{engine.cluster_keys}
{health}
[clusters.main.failover]
borrow_timeout = "10s"

[[clusters.main.endpoints]]
name = "reader"
listen = "{HOST}:{ports['reader']}"
role = "reader"

[[clusters.main.endpoints]]
name = "app"
listen = "{HOST}:{ports['split']}"
role = "split"
read_your_writes = false
"""


def instance_state(http_port: int, address: str) -> str:
    (cluster,) = http_get(http_port, "/status").json()["clusters"]
    return next(str(i["state"]) for i in cluster["instances"] if i["instance"] == address)


def reads(engine: Engine, port: int) -> Counter[int]:
    return Counter(engine.read(port, READS))


def test_reads_stay_in_the_proxys_zone_until_its_replica_fails(
        engine: Engine, relay: FaultyTcpProxy, tmp_path: Path) -> None:
    names = ("admin", "http", "reader", "split")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    text = zones_config(engine, relay.address, ports)
    local, other = engine.ports[1], engine.ports[2]
    with running_proxy(text, tmp_path, ports["reader"]) as proxy:
        wait_until(lambda: all(instance_state(ports["http"], a) == "up"
                               for a in (engine.addresses[0], relay.address, engine.addresses[2])),
                   timeout=15, what="every instance up")
        assert reads(engine, ports["reader"]) == Counter({local: READS})
        assert reads(engine, ports["split"]) == Counter({local: READS})

        rows = {r["instance"]: r for r in admin(ports["admin"], "SHOW TOPOLOGY", user="admin",
                                                password=ADMIN_PASSWORD)}
        assert (rows[relay.address]["zone"], rows[relay.address]["nearness"]) == ("zone-a", "zone")
        assert (rows[engine.addresses[2]]["nearness"], rows[engine.addresses[2]]["proxy_zone"]) == ("region", "zone-a")
        assert rows[relay.address]["serves_reads"] == "t"

        relay.arm(Fault("reset", times=None))     # the zone-a replica looks dead: probes and clients are reset
        relay.drop_all()
        wait_until(lambda: instance_state(ports["http"], relay.address) == "down", timeout=10,
                   what="the zone-a replica down")
        assert reads(engine, ports["reader"]) == Counter({other: READS})
        assert reads(engine, ports["split"]) == Counter({other: READS})

        relay.clear()
        wait_until(lambda: instance_state(ports["http"], relay.address) == "up", timeout=10,
                   what="the zone-a replica up again")
        assert reads(engine, ports["reader"]) == Counter({local: READS})

        metrics = scrape(ports["http"])
        same = metrics['dbproxy_zone_requests_total{cluster="main",instance_zone="zone-a",proxy_zone="zone-a"}']
        cross = metrics['dbproxy_zone_requests_total{cluster="main",instance_zone="zone-b",proxy_zone="zone-a"}']
        assert same >= 3 * READS and cross >= 2 * READS, metrics
        proxy.assert_alive_and_clean()
