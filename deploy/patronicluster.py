"""Launcher for a local Patroni cluster (tests): one etcd and PostgreSQL 15 members under Patroni.

Layout under ``base_dir``::

    etcd/               etcd's data directory; etcd.log
    certs/              with tls=True: ca.pem, server.pem, server-key.pem (`dbproxy gen-cert`)
    pgN/                member N: patroni.yml, patroni.log, data/ (PGDATA, made by Patroni)

Everything listens on 127.0.0.1 on the ports given, runs as the ``postgres`` OS user (Patroni and
PostgreSQL refuse root) and is tuned to fail over fast: ttl 10 s, loop_wait 1 s, retry_timeout 3 s,
primary_start_timeout 0 (a crashed leader fails over at once instead of being restarted).
Roles: postgres (superuser, trust), replicator (replication), app (trust, owner of database ``app``).
Patroni's REST API asks for basic auth (PATRONI_USER / PATRONI_PASSWORD) on POST requests, and with
tls=True serves https with a certificate of a private CA (`ca_file`; members verify each other with it).

Needs the Debian packages patroni and etcd-server (`make install`).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from deploy.pgcluster import HOST, PG_BIN, PG_OS_USER, pg_binary, pid_alive

SCOPE = "dbproxy-test"
PATRONI_USER = "patroni"
PATRONI_PASSWORD = "patroni-secret"
APP_DB = "app"
TTL, LOOP_WAIT, RETRY_TIMEOUT = 10, 1, 3


class PatroniClusterError(RuntimeError):
    """etcd or a Patroni member could not be started or did not get healthy in time."""


class PatroniCluster:
    """etcd plus ``len(pg_ports)`` Patroni members; member i: PostgreSQL on pg_ports[i], REST on api_ports[i]."""

    def __init__(self, base_dir: str | os.PathLike[str], pg_ports: Sequence[int], api_ports: Sequence[int],
                 etcd_ports: Sequence[int], tls: bool = False) -> None:
        if len(pg_ports) != len(api_ports) or len(etcd_ports) != 2:
            raise ValueError("one API port per PostgreSQL port, and two etcd ports (client, peer)")
        self.base_dir = Path(base_dir).resolve()
        self.pg_ports = list(pg_ports)
        self.api_ports = list(api_ports)
        self.etcd_client, self.etcd_peer = etcd_ports
        self.tls = tls
        self.etcd: subprocess.Popen[bytes] | None = None
        self.patroni: list[subprocess.Popen[bytes] | None] = [None] * len(pg_ports)
        self._logs: list[IO[bytes]] = []

    # ---- addresses ----------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self.pg_ports)

    def name(self, i: int) -> str:
        return f"pg{i}"

    def instance_addrs(self) -> list[str]:
        return [f"{HOST}:{port}" for port in self.pg_ports]

    def api_urls(self) -> list[str]:
        scheme = "https" if self.tls else "http"
        return [f"{scheme}://{HOST}:{port}" for port in self.api_ports]

    @property
    def ca_file(self) -> Path:
        return self.base_dir / "certs" / "ca.pem"

    def member_dir(self, i: int) -> Path:
        return self.base_dir / self.name(i)

    # ---- lifecycle ----------------------------------------------------------------------------------

    def start(self, timeout: float = 90) -> None:
        """etcd, then every member; returns once there is a leader and every replica streams."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        _chown(self.base_dir)
        if self.tls:
            self._make_certs()
        self._start_etcd()
        for i in range(self.size):
            self.start_member(i)
        self.wait_healthy(timeout)
        leader = self.leader_index()
        assert leader is not None
        self.sql(leader, "CREATE ROLE app LOGIN")
        self.sql(leader, "CREATE DATABASE app OWNER app")

    def start_member(self, i: int) -> None:
        directory = self.member_dir(i)
        directory.mkdir(exist_ok=True)
        directory.chmod(0o700)
        _chown(directory)
        config = directory / "patroni.yml"
        config.write_text(json.dumps(self._member_config(i), indent=2))   # JSON is YAML
        _chown(config)
        self.patroni[i] = self._spawn(["patroni", str(config)], directory / "patroni.log")

    def _member_config(self, i: int) -> dict[str, Any]:
        directory = self.member_dir(i)
        trust = "trust"
        tls: dict[str, Any] = {}
        if self.tls:
            certs = self.base_dir / "certs"
            tls = {"certfile": str(certs / "server.pem"), "keyfile": str(certs / "server-key.pem")}
        config: dict[str, Any] = {
            "scope": SCOPE, "name": self.name(i),
            "restapi": {"listen": f"{HOST}:{self.api_ports[i]}", "connect_address": f"{HOST}:{self.api_ports[i]}",
                        "authentication": {"username": PATRONI_USER, "password": PATRONI_PASSWORD}},
            "etcd3": {"hosts": f"{HOST}:{self.etcd_client}"},
            "bootstrap": {
                "dcs": {"ttl": TTL, "loop_wait": LOOP_WAIT, "retry_timeout": RETRY_TIMEOUT,
                        "primary_start_timeout": 0, "maximum_lag_on_failover": 64 * 1024 * 1024,
                        "postgresql": {"use_pg_rewind": True, "parameters": {
                            "wal_level": "replica", "hot_standby": "on", "max_wal_senders": 10,
                            "max_replication_slots": 10, "wal_log_hints": "on", "max_connections": 200,
                            "wal_keep_size": "128MB", "fsync": "off", "synchronous_commit": "off",
                            "full_page_writes": "on"}}},
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}],
                "pg_hba": [f"host replication replicator {HOST}/32 {trust}", f"host all all {HOST}/32 {trust}",
                           f"local all all {trust}"],
            },
            "postgresql": {
                "listen": f"{HOST}:{self.pg_ports[i]}", "connect_address": f"{HOST}:{self.pg_ports[i]}",
                "data_dir": str(directory / "data"), "bin_dir": str(PG_BIN), "pgpass": str(directory / "pgpass"),
                "authentication": {"superuser": {"username": "postgres"},
                                   "replication": {"username": "replicator"},
                                   "rewind": {"username": "postgres"}},
                "parameters": {"unix_socket_directories": str(directory), "shared_buffers": "32MB"},
                "pg_hba": [f"host replication replicator {HOST}/32 {trust}", f"host all all {HOST}/32 {trust}",
                           f"local all all {trust}"],
            },
            "tags": {"nofailover": False, "noloadbalance": False},
            "log": {"level": "INFO"},
        }
        if tls:
            config["restapi"].update(tls)
            config["ctl"] = {"cacert": str(self.ca_file)}
        return config

    def _make_certs(self) -> None:
        from proxy.tls.certs import generate

        certs = generate(self.base_dir / "certs")
        certs.chmod(0o755)
        for name in ("ca.pem", "server.pem", "server-key.pem"):
            _chown(certs / name)

    def _start_etcd(self) -> None:
        data = self.base_dir / "etcd"
        data.mkdir(exist_ok=True)
        data.chmod(0o700)
        _chown(data)
        client, peer = f"http://{HOST}:{self.etcd_client}", f"http://{HOST}:{self.etcd_peer}"
        self.etcd = self._spawn(["etcd", "--name", "e0", "--data-dir", str(data), "--listen-client-urls", client,
                                 "--advertise-client-urls", client, "--listen-peer-urls", peer,
                                 "--initial-advertise-peer-urls", peer, "--initial-cluster", f"e0={peer}",
                                 "--log-level", "warn"], self.base_dir / "etcd.log")
        _wait(lambda: _http_get(f"{client}/health") is not None, 20, "etcd to answer /health",
              lambda: (self.base_dir / "etcd.log").read_text(errors="replace")[-2000:])

    def _spawn(self, argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
        log_file = log_path.open("ab")
        self._logs.append(log_file)
        _chown(log_path)
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.base_dir), "LANG": "C.UTF-8"}
        kwargs: dict[str, Any] = {}
        if os.geteuid() == 0:
            entry = pwd.getpwnam(PG_OS_USER)
            kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        return subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=self.base_dir, start_new_session=True, **kwargs)

    def destroy(self) -> None:
        """Kill every Patroni (so that none restarts anything), stop each PostgreSQL in immediate mode,
        kill etcd, delete base_dir. Nothing is kept, so nothing needs a clean shutdown."""
        for proc in self.patroni:
            if proc is not None and proc.poll() is None:
                proc.kill()
        for proc in self.patroni:
            if proc is not None:
                proc.wait(10)
        with ThreadPoolExecutor(self.size) as pool:
            list(pool.map(self.stop_postgres, range(self.size)))
        if self.etcd is not None and self.etcd.poll() is None:
            self.etcd.kill()
            self.etcd.wait(5)
        for log_file in self._logs:
            log_file.close()
        if os.environ.get("DBPROXY_KEEP_PATRONI"):
            print(f"DBPROXY_KEEP_PATRONI: kept {self.base_dir}")
        else:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    # ---- the members' state -------------------------------------------------------------------------

    def cluster_json(self) -> dict[str, Any] | None:
        """GET /cluster from the first member whose API answers."""
        for url in self.api_urls():
            body = _http_get(f"{url}/cluster", ca_file=self.ca_file if self.tls else None)
            if body is not None:
                data: dict[str, Any] = json.loads(body)
                return data
        return None

    def leader_index(self) -> int | None:
        data = self.cluster_json() or {}
        for member in data.get("members", []):
            if member.get("role") == "leader" and member.get("state") == "running":
                return int(member["name"][2:])
        return None

    def healthy(self) -> bool:
        """One running leader, every other member a streaming/running replica with a known, small lag."""
        data = self.cluster_json()
        if data is None or len(data.get("members", [])) != self.size:
            return False
        roles = [m.get("role") for m in data["members"]]
        states = {m.get("state") for m in data["members"]}
        lags_known = all(isinstance(m.get("lag"), int) for m in data["members"] if m.get("role") != "leader")
        return roles.count("leader") == 1 and states <= {"running", "streaming"} and lags_known

    def wait_healthy(self, timeout: float = 60) -> None:
        _wait(self.healthy, timeout, "a leader and every replica streaming", self.logs_tail)

    def wait_new_leader(self, old: int, timeout: float = 40) -> int:
        """The index of a running leader other than `old` (waits for it)."""
        found: list[int] = []

        def elected() -> bool:
            leader = self.leader_index()
            if leader is not None and leader != old:
                found.append(leader)
                return True
            return False

        _wait(elected, timeout, f"a leader other than pg{old}", self.logs_tail)
        return found[-1]

    def postmaster_pid(self, i: int) -> int | None:
        try:
            return int((self.member_dir(i) / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill_postgres(self, i: int) -> None:
        """kill -9 of member i's postmaster (Patroni stays up and notices)."""
        pid = self.postmaster_pid(i)
        if pid is not None and pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            _wait(lambda: not pid_alive(pid), 10, f"postmaster {pid} to die")

    def stop_postgres(self, i: int) -> None:
        """pg_ctl stop -m immediate of member i's PostgreSQL (if it runs), killing it if that fails."""
        pid = self.postmaster_pid(i)
        if pid is None or not pid_alive(pid):
            return
        argv = [pg_binary("pg_ctl"), "stop", "-D", str(self.member_dir(i) / "data"), "-m", "immediate", "-w", "-t", "10"]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", PG_OS_USER, "--", *argv]
        subprocess.run(argv, capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
        if pid_alive(pid):
            self.kill_postgres(i)

    def in_recovery(self, i: int) -> bool:
        return self.sql(i, "SELECT pg_is_in_recovery()") == "t"

    def sql(self, i: int, query: str, db: str = "postgres", user: str = "postgres") -> str:
        argv = [pg_binary("psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", str(self.pg_ports[i]),
                "-U", user, "-d", db, "-c", query]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"PGCONNECT_TIMEOUT": "5"}
        res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30, stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise PatroniClusterError(f"pg{i}: {query!r} failed: {res.stderr.strip()}")
        return res.stdout.strip()

    def logs_tail(self, lines: int = 15) -> str:
        parts = []
        for i in range(self.size):
            path = self.member_dir(i) / "patroni.log"
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            parts.append(f"--- pg{i} patroni.log ---\n" + "\n".join(text))
        return "\n".join(parts)


def _http_get(url: str, timeout: float = 2.0, ca_file: Path | None = None) -> bytes | None:
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:  # noqa: S310 (our URLs)
            body: bytes = answer.read()
            return body
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _wait(done: Callable[[], bool], timeout: float, what: str, detail: Callable[[], str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise PatroniClusterError(f"timed out after {timeout:g}s waiting for {what}"
                                      + (f"\n{detail()}" if detail is not None else ""))
        time.sleep(0.1)


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(PG_OS_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)
