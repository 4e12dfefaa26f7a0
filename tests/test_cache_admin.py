"""The query cache seen by operators: SHOW CACHE and FLUSH CACHE through the real admin console (psql on
admin_listen), and the status page's hit ratio (headless Chromium, when installed)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from cdp import Browser, chromium_binary
from conftest import ProxyProcess
from e2e_helpers import APP, wait_until
from ops_helpers import OpsPorts, admin, http_get, ops_config

from deploy.pgcluster import HOST, PgCluster, free_ports

CACHE = """
[clusters.main.cache]
backend = "memory"
rules = [ { match = "^SELECT 'cached'", ttl = "60s" } ]
"""


@pytest.fixture
def ports(pg_cluster: PgCluster, proxy_factory: Callable[..., ProxyProcess]) -> Iterator[OpsPorts]:
    ports = OpsPorts.of(free_ports(6))
    process = proxy_factory(ops_config(pg_cluster, ports) + CACHE)
    wait_until(lambda: http_get(ports.http, "/readyz").status == 200, what="proxy ready")
    yield ports
    assert "Traceback" not in process.log_text()


def _reads(ports: OpsPorts, times: int) -> None:
    conninfo = f"host={HOST} port={ports.writer} user=app password={APP.password} dbname=app sslmode=disable"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for _ in range(times):
            assert conn.execute("SELECT 'cached' || 1 AS v", prepare=False).fetchone() == ("cached1",)


def _cache_row(ports: OpsPorts) -> dict[str, str]:
    (row,) = admin(ports.admin, "SHOW CACHE")
    return row


def test_show_cache_and_flush_cache_in_the_admin_console(ports: OpsPorts) -> None:
    row = _cache_row(ports)
    assert row["cluster"] == "main" and row["backend"] == "memory" and row["state"] == "up"
    assert (row["hits"], row["misses"], row["entries"]) == ("0", "0", "0")
    _reads(ports, 4)
    row = _cache_row(ports)
    assert (row["hits"], row["misses"], row["entries"]) == ("3", "1", "1")
    assert float(row["hit_ratio"]) == pytest.approx(0.75)
    admin(ports.admin, "FLUSH CACHE main")
    row = _cache_row(ports)
    assert row["entries"] == "0" and row["bytes"] == "0"
    _reads(ports, 2)
    row = _cache_row(ports)
    assert (row["hits"], row["misses"], row["entries"]) == ("4", "2", "1")   # a miss after the flush, then a hit
    admin(ports.admin, "FLUSH CACHE")
    assert _cache_row(ports)["entries"] == "0"


@pytest.mark.skipif(chromium_binary() is None, reason="Chromium is not installed")
def test_the_status_page_shows_the_hit_ratio(ports: OpsPorts, tmp_path: Path) -> None:
    _reads(ports, 4)
    browser = Browser(f"http://{HOST}:{ports.http}/", tmp_path / "profile", tmp_path / "chromium.log")
    try:
        shown = "document.querySelector('[data-cluster=main] .cache .hit-ratio')?.textContent"
        wait_until(lambda: browser.evaluate(shown) == "75.0%", timeout=15, what="the page showing the hit ratio")
        text = browser.evaluate("document.querySelector('[data-cluster=main] .cache').textContent")
        assert "query cache up (memory)" in text and "hits 3" in text and "misses 1" in text
    finally:
        browser.close()
