"""positions.PositionReader against a real PostgreSQL primary: one read for every write committed before it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from deploy.pgcluster import PgCluster
from proxy.config import Address, ClusterConfig, HealthSettings, TlsSettings
from proxy.engines.postgres.positions import PositionReader
from proxy.engines.postgres.sql import parse_lsn


@dataclass
class _Config:
    health: HealthSettings
    instances: tuple[Address, ...]


@dataclass
class _Cluster:
    config: _Config | ClusterConfig
    name: str = "main"
    topology: None = None   # no monitor: the first instance is the writer


async def test_requests_while_a_read_runs_share_the_next_read(pg_cluster: PgCluster) -> None:
    host, port = pg_cluster.instance_addrs()[0].split(":")
    cluster = _Cluster(_Config(HealthSettings(user="postgres", database="postgres", tls=TlsSettings()),
                               (Address(host, int(port)),)))
    reader = PositionReader(cluster)
    before = parse_lsn(pg_cluster.sql(0, "SELECT pg_current_wal_insert_lsn()"))
    got: list[int | None] = []
    for _ in range(5):
        reader.request(got.append)   # five writes committed now: one read covers them
    while len(got) < 5:
        await asyncio.sleep(0.01)
    assert reader.reads == 1 and len(set(got)) == 1
    position = got[0]
    assert position is not None and position >= before
    pg_cluster.sql(0, "CREATE TABLE IF NOT EXISTS positions_probe (x int); INSERT INTO positions_probe VALUES (1)",
                   db="app")
    committed = parse_lsn(pg_cluster.sql(0, "SELECT pg_current_wal_insert_lsn()"))
    reader.request(got.append)
    while len(got) < 6:
        await asyncio.sleep(0.01)
    assert reader.reads == 2 and (got[5] or 0) >= committed > position
    reader.close()


async def test_an_unreachable_writer_answers_none(pg_cluster: PgCluster) -> None:
    cluster = _Cluster(_Config(HealthSettings(user="postgres", timeout=0.5), (Address("127.0.0.1", 1),)))
    reader = PositionReader(cluster)
    got: list[int | None] = []
    reader.request(got.append)
    while not got:
        await asyncio.sleep(0.01)
    assert got == [None]
