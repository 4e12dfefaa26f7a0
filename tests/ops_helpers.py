"""Helpers for the operations tests (admin console, HTTP, status page): configs, admin queries, HTTP GETs.

`ops_config(pg, ports)` writes a proxy config in front of a PgCluster with the admin console and
the HTTP service enabled and four endpoints (writer, reader, split, custom over the last replica).
`admin(port, sql)` runs psql against the admin console and returns the rows as dicts (CSV output).
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import subprocess
from dataclasses import dataclass
from typing import Any

from e2e_helpers import APP, MD5, SCRAM, clean_env

from deploy.pgcluster import HOST, PgCluster, pg_binary

ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin-secret"
SECRETS = (APP.password, MD5.password, MD5.server_password, SCRAM.password, SCRAM.server_password, ADMIN_PASSWORD)


@dataclass(frozen=True)
class OpsPorts:
    admin: int
    http: int
    writer: int
    reader: int
    split: int
    custom: int

    @classmethod
    def of(cls, ports: list[int]) -> OpsPorts:
        return cls(*ports[:6])


def ops_config(pg: PgCluster, ports: OpsPorts, *, client_auth: str = "scram-sha-256", pool_size: int = 4,
               interval: str = "200ms", failure_threshold: int = 2, borrow_timeout: str = "10s",
               shutdown_timeout: str = "3s", log_format: str = "text", mode: str = "follow",
               promote_after: str = "3s", health_user: str | None = None) -> str:
    """health_user: the probes' login; "postgres" (a superuser) for tests that promote or switch over."""
    instances = pg.instance_addrs()
    quoted = ", ".join(f'"{a}"' for a in instances)
    return f"""
[server]
admin_listen = "{HOST}:{ports.admin}"
http_listen = "{HOST}:{ports.http}"
log_format = "{log_format}"
shutdown_timeout = "{shutdown_timeout}"

[[users]]
name = "app"
password = "{APP.password}"
server_user = "app"

[[users]]
name = "md5user"
password = "{MD5.password}"
server_user = "md5user"
server_password = "{MD5.server_password}"

[[users]]
name = "{ADMIN_USER}"
password = "{ADMIN_PASSWORD}"
server_user = "app"
admin = true

[clusters.main]
engine = "postgres"
instances = [{quoted}]
client_auth = "{client_auth}"

[clusters.main.health]
interval = "{interval}"
timeout = "1s"
failure_threshold = {failure_threshold}
{f'user = "{health_user}"' if health_user else ""}

[clusters.main.failover]
mode = "{mode}"
promote_after = "{promote_after}"
borrow_timeout = "{borrow_timeout}"

[clusters.main.pool]
max_server_connections = {pool_size}

[[clusters.main.endpoints]]
name = "writer"
listen = "{HOST}:{ports.writer}"
role = "writer"

[[clusters.main.endpoints]]
name = "reader"
listen = "{HOST}:{ports.reader}"
role = "reader"

[[clusters.main.endpoints]]
name = "app"
listen = "{HOST}:{ports.split}"
role = "split"

[[clusters.main.endpoints]]
name = "analytics"
listen = "{HOST}:{ports.custom}"
role = "custom"
instances = ["{instances[-1]}"]
"""


# ---- admin console -------------------------------------------------------------------------------

class AdminError(Exception):
    def __init__(self, returncode: int, stderr: str) -> None:
        super().__init__(stderr)
        self.returncode = returncode
        self.stderr = stderr


def admin_psql(port: int, sql: str, *, user: str = ADMIN_USER, password: str | None = ADMIN_PASSWORD,
               database: str = "dbproxy", timeout: float = 60, csv_output: bool = True
               ) -> subprocess.CompletedProcess[str]:
    env = clean_env(PGCONNECT_TIMEOUT="5", PGSSLMODE="disable")
    if password is not None:
        env["PGPASSWORD"] = password
    argv = [pg_binary("psql"), "-X", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", str(port), "-U", user,
            "-d", database, *(["--csv"] if csv_output else []), "-c", sql]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def admin(port: int, sql: str, **kwargs: Any) -> list[dict[str, str]]:
    """Rows of an admin command (values as psql prints them: '' for NULL, 't'/'f' for booleans)."""
    res = admin_psql(port, sql, **kwargs)
    if res.returncode != 0:
        raise AdminError(res.returncode, res.stderr)
    return list(csv.DictReader(io.StringIO(res.stdout)))


def admin_columns(port: int, sql: str) -> list[str]:
    res = admin_psql(port, sql)
    assert res.returncode == 0, res.stderr
    return next(csv.reader(io.StringIO(res.stdout)))


# ---- HTTP ------------------------------------------------------------------------------------------

@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


def http_get(port: int, path: str, method: str = "GET", timeout: float = 10) -> HttpResponse:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return HttpResponse(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


def metric_samples(text: str) -> dict[str, float]:
    """Prometheus exposition text as {'name{label="v",...}': value} (label order as exported)."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def scrape(port: int) -> dict[str, float]:
    response = http_get(port, "/metrics")
    assert response.status == 200
    return metric_samples(response.text)
