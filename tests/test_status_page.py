"""The status page in headless Chromium: it shows the writer and both replicas, and updates by itself
within a few seconds when a replica stops. Also saves a screenshot (docs/status-page.png when
DBPROXY_UPDATE_SCREENSHOT=1, the test's tmp directory otherwise)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from cdp import Browser, chromium_binary, screenshot
from conftest import REPO_ROOT, ProxyProcess
from e2e_helpers import APP, wait_until
from ops_helpers import OpsPorts, http_get, ops_config

from deploy.pgcluster import HOST, PgCluster, free_ports

pytestmark = pytest.mark.skipif(chromium_binary() is None,
                                reason="Chromium is not installed (make install runs apt-get install chromium)")

ROWS = """[...document.querySelectorAll('tr[data-instance]')].map(
    r => [r.dataset.instance, r.dataset.role, r.dataset.state, r.dataset.writer])"""
EVENTS = "[...document.querySelectorAll('.events li')].map(li => li.textContent)"


@pytest.fixture
def cluster_and_proxy(pg_cluster_factory: Callable[..., PgCluster],
                      proxy_factory: Callable[..., ProxyProcess]) -> Iterator[tuple[PgCluster, OpsPorts]]:
    pg = pg_cluster_factory(3)   # disposable: this test stops a replica
    ports = OpsPorts.of(free_ports(6))
    process = proxy_factory(ops_config(pg, ports, interval="200ms", failure_threshold=2))
    wait_until(lambda: http_get(ports.http, "/readyz").status == 200, what="proxy ready")
    yield pg, ports
    assert "Traceback" not in process.log_text()


@pytest.fixture
def browser_factory(tmp_path: Path) -> Iterator[Callable[[str], Browser]]:
    browsers: list[Browser] = []

    def start(url: str) -> Browser:
        browser = Browser(url, tmp_path / f"profile-{len(browsers)}", tmp_path / f"chromium-{len(browsers)}.log")
        browsers.append(browser)
        return browser

    yield start
    for browser in browsers:
        browser.close()


async def _some_traffic(ports: OpsPorts) -> list[asyncpg.Connection]:
    clients = []
    for port in (ports.writer, ports.writer, ports.reader, ports.split):
        client = await asyncpg.connect(host=HOST, port=port, user="app", password=APP.password, database="app")
        for _ in range(5):
            await client.fetchval("SELECT 1")
        clients.append(client)
    return clients


async def test_status_page_shows_the_cluster_and_follows_a_replica_stopping(
        cluster_and_proxy: tuple[PgCluster, OpsPorts], browser_factory: Callable[[str], Browser],
        tmp_path: Path) -> None:
    pg, ports = cluster_and_proxy
    primary, replica1, replica2 = pg.instance_addrs()
    url = f"http://{HOST}:{ports.http}/"
    clients = await _some_traffic(ports)
    try:
        browser = browser_factory(url)
        healthy = [[primary, "primary", "up", "true"], [replica1, "replica", "up", "false"],
                   [replica2, "replica", "up", "false"]]
        wait_until(lambda: browser.evaluate(ROWS) == healthy, timeout=15, what="page showing writer + 2 replicas")
        text = browser.evaluate("document.body.innerText")
        assert f"writer {primary}" in text and "primary (writer)" in text
        assert browser.evaluate("document.getElementById('live').dataset.ok") == "true"
        assert browser.evaluate("document.querySelectorAll('tr[data-endpoint]').length") == 4
        assert browser.evaluate("document.querySelectorAll('tr[data-pool]').length") >= 2

        shot = tmp_path / "status-page.png"
        await asyncio.to_thread(screenshot, url, shot, tmp_path / "profile-shot")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
        if os.environ.get("DBPROXY_UPDATE_SCREENSHOT"):
            (REPO_ROOT / "docs").mkdir(exist_ok=True)
            shutil.copyfile(shot, REPO_ROOT / "docs" / "status-page.png")

        updated_before = browser.evaluate("document.body.dataset.updated")
        await asyncio.to_thread(pg.stop_instance, 2)
        stopped = time.monotonic()
        wait_until(lambda: [replica2, "replica", "down", "false"] in browser.evaluate(ROWS), timeout=10,
                   interval=0.1, what="page showing the stopped replica as down")
        elapsed = time.monotonic() - stopped
        assert elapsed < 5, f"the page took {elapsed:.1f}s to show the replica down"
        assert browser.evaluate("document.body.dataset.updated") != updated_before
        rows = browser.evaluate(ROWS)
        assert rows[:2] == healthy[:2]
        assert any(f"instance {replica2} up -> down" in event for event in browser.evaluate(EVENTS))
        reader = browser.evaluate("document.querySelector('tr[data-endpoint=\"reader\"]').innerText")
        assert replica1 in reader and replica2 not in reader
        browser.screenshot(tmp_path / "status-page-replica-down.png")
    finally:
        for client in clients:
            await client.close()
