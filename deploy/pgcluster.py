"""Launcher for a local PostgreSQL 15 primary plus streaming replicas (tests, demo, benchmarks).

Layout under ``base_dir``::

    cluster.json            ports, users and settings, so another process can stop/inspect it
    node0/                  instance 0 = primary: unix socket lives here
      data/                 PGDATA (postgresql.conf includes dbproxy.conf, written by us)
      postgres.log          server log (pg_ctl -l)
    node1/, node2/ ...      replicas made with pg_basebackup -R

Servers run as the ``postgres`` OS user (through ``runuser`` when we are root), listen on
127.0.0.1 only and are tuned for speed, not durability.

Command line::

    python -m deploy.pgcluster start --dir D --ports 25432,25433,25434 [--set key=value ...]
    python -m deploy.pgcluster stop|status|destroy --dir D
    python -m deploy.pgcluster kill|promote|start-instance|stop-instance --dir D --index I
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)

PG_BIN = Path(os.environ.get("DBPROXY_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_OS_USER = "postgres"
HOST = "127.0.0.1"
STATE_FILE = "cluster.json"
APP_DB = "app"

DEFAULT_SETTINGS: dict[str, str] = {
    "listen_addresses": HOST,
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "400",
    "wal_level": "replica",
    "max_wal_senders": "10",
    "hot_standby": "on",
    "hot_standby_feedback": "on",
    "wal_keep_size": "256MB",
    "shared_buffers": "64MB",
    "wal_receiver_status_interval": "1s",
    "log_line_prefix": "%m [%p] %q%u@%d ",
}

# name -> (password, pg_hba method). An empty password means none is set.
# md5 users get an md5-hashed password, everyone else a SCRAM verifier.
DEFAULT_USERS: dict[str, tuple[str, str]] = {
    "app": ("", "trust"),
    "md5user": ("md5pass", "md5"),
    "scramuser": ("scrampass", "scram-sha-256"),
    "clearuser": ("clearpass", "password"),
}
HBA_METHODS = ("trust", "md5", "scram-sha-256", "password")
_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")


class PgClusterError(RuntimeError):
    """A PostgreSQL instance could not be set up, started, stopped or queried."""


class PgCluster:
    """A primary (instance 0) and ``len(ports) - 1`` streaming replicas under ``base_dir``."""

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        ports: Sequence[int],
        users: Mapping[str, tuple[str, str]] | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        if not ports:
            raise ValueError("PgCluster needs at least one port (the primary's)")
        self.base_dir = Path(base_dir).resolve()
        self.ports = [int(p) for p in ports]
        # Given users are added to (or override) the defaults: tests rely on the default roles.
        self.users = {**DEFAULT_USERS, **(users or {})}
        self.settings = {**DEFAULT_SETTINGS, **(settings or {})}
        for name, (_, method) in self.users.items():
            if not _NAME_RE.match(name):
                raise ValueError(f"user name {name!r}: use lowercase letters, digits and _")
            if method not in HBA_METHODS:
                raise ValueError(f"user {name}: auth method {method!r} is not one of {HBA_METHODS}")

    # ----------------------------------------------------------------- whole cluster

    @classmethod
    def load(cls, base_dir: str | os.PathLike[str]) -> PgCluster:
        """The cluster previously started in ``base_dir`` (reads ``cluster.json``)."""
        state_path = Path(base_dir) / STATE_FILE
        try:
            state = json.loads(state_path.read_text())
        except FileNotFoundError:
            raise PgClusterError(f"{state_path} not found: no cluster was started in {base_dir}") from None
        users = {name: (pw, method) for name, (pw, method) in state.get("users", {}).items()}
        return cls(base_dir, state["ports"], users=users, settings=state.get("settings"))

    def start(self, timeout: float = 60) -> None:
        """Create what is missing, start every instance and wait until every replica streams."""
        self._prepare_base_dir()
        if not (self.data_dir(0) / "PG_VERSION").exists():
            self._initdb()
        self.start_instance(0)
        if self.in_recovery(0):
            log.warning("node0 is not the primary (promoted elsewhere?); leaving roles and replicas alone")
            for i in range(1, len(self.ports)):
                self.start_instance(i)
            return
        self._ensure_roles()
        _parallel(self._start_replica, range(1, len(self.ports)))
        self.wait_streaming(timeout=timeout)

    def stop(self) -> None:
        """Fast stop of every instance, replicas first; instances already stopped are skipped."""
        _parallel(self.stop_instance, range(1, len(self.ports)))
        self.stop_instance(0)

    def destroy(self) -> None:
        """Stop everything (killing what will not stop) and delete ``base_dir``."""
        try:
            self.stop()
        except PgClusterError as exc:
            log.warning("stop failed, killing instead: %s", exc)
        for i in range(len(self.ports)):
            self.kill_instance(i)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def instance_addrs(self) -> list[str]:
        return [f"{HOST}:{port}" for port in self.ports]

    def primary_index(self) -> int | None:
        """Index of the running instance that is not in recovery, if there is one."""
        for i in range(len(self.ports)):
            if self.is_running(i) and not self.in_recovery(i):
                return i
        return None

    def wait_streaming(self, primary: int = 0, timeout: float = 30) -> None:
        """Wait until every running standby is listed as streaming in the primary's pg_stat_replication."""
        expected = {
            f"node{i}"
            for i in range(len(self.ports))
            if i != primary and self.is_running(i) and (self.data_dir(i) / "standby.signal").exists()
        }
        query = "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'"
        deadline = time.monotonic() + timeout
        streaming: set[str] = set()
        while True:
            streaming = set(self.sql(primary, query).split())
            if expected <= streaming:
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        missing = sorted(expected - streaming)
        tails = "\n".join(
            f"--- node{name[4:]} log tail ---\n{self.log_tail(int(name[4:]))}" for name in missing
        )
        raise PgClusterError(f"replicas {missing} not streaming from node{primary} after {timeout}s\n{tails}")

    # -------------------------------------------------------------- single instances

    def instance_dir(self, i: int) -> Path:
        return self.base_dir / f"node{i}"

    def data_dir(self, i: int) -> Path:
        return self.instance_dir(i) / "data"

    def log_path(self, i: int) -> Path:
        return self.instance_dir(i) / "postgres.log"

    def log_tail(self, i: int, lines: int = 40) -> str:
        try:
            text = self.log_path(i).read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def postmaster_pid(self, i: int) -> int | None:
        """PID from ``postmaster.pid`` if that process is alive, else None."""
        try:
            first_line = (self.data_dir(i) / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first_line)
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def is_running(self, i: int) -> bool:
        return self.postmaster_pid(i) is not None

    def start_instance(self, i: int, timeout: float = 60) -> None:
        """Start instance ``i`` (no-op if running) and wait until it accepts connections."""
        if self.is_running(i):
            return
        self._configure(i)
        # Lock files left by a killed postmaster: PostgreSQL itself would take an unreaped
        # zombie (PID 1 here may never reap orphans) for a live postmaster and refuse to start.
        for lock in (
            self.data_dir(i) / "postmaster.pid",
            self.instance_dir(i) / f".s.PGSQL.{self.ports[i]}.lock",
        ):
            lock.unlink(missing_ok=True)
        res = self._run_pg(
            [
                "pg_ctl",
                "-D",
                str(self.data_dir(i)),
                "-l",
                str(self.log_path(i)),
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            timeout=timeout + 10,
        )
        if res.returncode != 0:
            raise self._instance_error(i, "failed to start", res)

    def stop_instance(self, i: int, mode: str = "fast") -> None:
        """Stop instance ``i`` with pg_ctl's ``mode`` (smart | fast | immediate); no-op if stopped."""
        if not self.is_running(i):
            return
        res = self._run_pg(
            ["pg_ctl", "-D", str(self.data_dir(i)), "-m", mode, "-w", "-t", "60", "stop"], timeout=70
        )
        if res.returncode != 0 and self.is_running(i):
            raise self._instance_error(i, f"failed to stop ({mode})", res)

    def kill_instance(self, i: int, timeout: float = 10) -> None:
        """Crash instance ``i``: SIGKILL its postmaster (from postmaster.pid) and all its children."""
        pid = self.postmaster_pid(i)
        if pid is None:
            return
        os.kill(pid, signal.SIGSTOP)  # freeze it so it forks no new child while we collect them
        victims = [pid, *_child_pids(pid)]
        for victim in victims:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while any(pid_alive(v) for v in victims):
            if time.monotonic() > deadline:
                raise PgClusterError(f"node{i}: processes {victims} survived SIGKILL for {timeout}s")
            time.sleep(0.02)

    def promote(self, i: int, timeout: float = 60) -> None:
        """Promote standby ``i`` and wait until it accepts writes."""
        res = self._run_pg(
            ["pg_ctl", "-D", str(self.data_dir(i)), "-w", "-t", str(int(timeout)), "promote"],
            timeout=timeout + 10,
        )
        if res.returncode != 0:
            raise self._instance_error(i, "failed to promote", res)

    def follow(self, i: int, primary: int) -> None:
        """Re-point running standby ``i`` at instance ``primary`` (after a promotion)."""
        conninfo = self._primary_conninfo(i, primary)
        self.sql(i, f"ALTER SYSTEM SET primary_conninfo = {_literal(conninfo)}")
        self.sql(i, "SELECT pg_reload_conf()")

    def rebuild_replica(self, i: int, source: int = 0) -> None:
        """Throw away instance ``i`` and re-create it as a streaming replica of ``source``."""
        self.kill_instance(i)
        shutil.rmtree(self.data_dir(i), ignore_errors=True)
        self._basebackup(i, source)
        self.start_instance(i)

    def wait_ready(self, i: int, timeout: float = 30) -> None:
        """Wait until instance ``i`` accepts connections (fails at once if it is not running)."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.is_running(i):
                raise PgClusterError(f"node{i} is not running\n--- log tail ---\n{self.log_tail(i)}")
            res = _run([pg_binary("pg_isready"), "-q", "-h", HOST, "-p", str(self.ports[i]), "-t", "1"])
            if res.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise PgClusterError(
                    f"node{i} not ready after {timeout}s\n--- log tail ---\n{self.log_tail(i)}"
                )
            time.sleep(0.05)

    def sql(
        self,
        i: int,
        query: str,
        user: str = "postgres",
        db: str = "postgres",
        password: str | None = None,
        timeout: float = 60,
    ) -> str:
        """Run ``query`` with ``psql -At`` over TCP on instance ``i``; returns stripped stdout."""
        argv = [pg_binary("psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1"]
        argv += ["-h", HOST, "-p", str(self.ports[i]), "-U", user, "-d", db, "-c", query]
        env = {"PGCONNECT_TIMEOUT": "5"}
        if password is not None:
            env["PGPASSWORD"] = password
        res = _run(argv, env=env, timeout=timeout)
        if res.returncode != 0:
            raise PgClusterError(f"node{i} ({user}@{db}): {query!r} failed: {res.stderr.strip()}")
        return res.stdout.strip()

    # ---------------------------------------------------------------------- internals

    def _prepare_base_dir(self) -> None:
        state_path = self.base_dir / STATE_FILE
        if state_path.exists():
            old_ports = json.loads(state_path.read_text()).get("ports")
            if old_ports != self.ports and (self.data_dir(0) / "PG_VERSION").exists():
                raise PgClusterError(
                    f"{self.base_dir} holds a cluster on ports {old_ports}, not {self.ports}; destroy it first"
                )
        self.base_dir.mkdir(parents=True, exist_ok=True)
        for i in range(len(self.ports)):
            self.instance_dir(i).mkdir(exist_ok=True)
            self.instance_dir(i).chmod(0o755)
            _chown_to_pg(self.instance_dir(i))
        _chown_to_pg(self.base_dir)
        state = {"ports": self.ports, "users": self.users, "settings": self.settings}
        state_path.write_text(json.dumps(state, indent=2) + "\n")
        if os.geteuid() == 0:
            res = _run(["runuser", "-u", PG_OS_USER, "--", "test", "-w", str(self.base_dir)])
            if res.returncode != 0:
                raise PgClusterError(
                    f"the {PG_OS_USER} OS user cannot write to {self.base_dir}: every parent directory must be "
                    "searchable by it (put the cluster under /tmp or a world-readable directory)"
                )

    def _initdb(self) -> None:
        data = self.data_dir(0)
        if data.exists():  # half-made by an earlier failed attempt
            shutil.rmtree(data)
        argv = ["initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"]
        res = self._run_pg([*argv, "--no-sync", "--no-instructions"], timeout=120)
        if res.returncode != 0:
            raise PgClusterError(f"initdb {data} failed:\n{res.stdout}{res.stderr}")

    def _configure(self, i: int) -> None:
        """(Re)write this instance's dbproxy.conf and pg_hba.conf; postgresql.conf includes the former."""
        data = self.data_dir(i)
        settings = {
            **self.settings,
            "port": str(self.ports[i]),
            "unix_socket_directories": str(self.instance_dir(i)),
            "cluster_name": f"node{i}",
        }
        body = "".join(f"{key} = {_literal(value)}\n" for key, value in settings.items())
        _write_pg_file(data / "dbproxy.conf", "# written by deploy/pgcluster.py on every start\n" + body)
        _write_pg_file(data / "pg_hba.conf", self._hba())
        main_conf = data / "postgresql.conf"
        include = "include 'dbproxy.conf'\n"
        text = main_conf.read_text()
        if include not in text:
            _write_pg_file(main_conf, text + "\n" + include)

    def _hba(self) -> str:
        lines = ["local all all trust", f"host replication all {HOST}/32 trust"]
        lines += [
            f"host all {name} {HOST}/32 {method}"
            for name, (_, method) in self.users.items()
            if method != "trust"
        ]
        lines.append(f"host all all {HOST}/32 trust")
        return "# written by deploy/pgcluster.py; order matters\n" + "\n".join(lines) + "\n"

    def _ensure_roles(self) -> None:
        existing = set(self.sql(0, "SELECT rolname FROM pg_roles").split())
        statements = []
        for name, (password, method) in self.users.items():
            encryption = "md5" if method == "md5" else "scram-sha-256"
            statements.append(f"SET password_encryption = '{encryption}'")
            verb = "ALTER" if name in existing else "CREATE"
            secret = f" PASSWORD {_literal(password)}" if password else ""
            statements.append(f"{verb} ROLE {_ident(name)} LOGIN{secret}")
        self.sql(0, ";\n".join(statements))
        if not self.sql(0, f"SELECT 1 FROM pg_database WHERE datname = {_literal(APP_DB)}"):
            owner = "app" if "app" in self.users else "postgres"
            self.sql(0, f"CREATE DATABASE {_ident(APP_DB)} OWNER {_ident(owner)}")
        roles = ", ".join(_ident(name) for name in self.users)
        self.sql(0, f"GRANT ALL ON DATABASE {_ident(APP_DB)} TO {roles}")
        self.sql(
            0,
            f"GRANT CREATE, USAGE ON SCHEMA public TO PUBLIC; GRANT ALL ON SCHEMA public TO {roles}",
            db=APP_DB,
        )

    def _start_replica(self, i: int) -> None:
        if not (self.data_dir(i) / "PG_VERSION").exists():
            shutil.rmtree(self.data_dir(i), ignore_errors=True)
            self._basebackup(i, 0)
        self.start_instance(i)

    def _primary_conninfo(self, i: int, primary: int) -> str:
        return f"host={HOST} port={self.ports[primary]} user=postgres application_name=node{i}"

    def _basebackup(self, i: int, source: int) -> None:
        argv = ["pg_basebackup", "-D", str(self.data_dir(i)), "-d", self._primary_conninfo(i, source)]
        res = self._run_pg([*argv, "-R", "-X", "stream", "-c", "fast", "--no-sync"], timeout=300)
        if res.returncode != 0:
            raise PgClusterError(
                f"pg_basebackup of node{i} from node{source} failed:\n{res.stdout}{res.stderr}\n"
                f"--- node{source} log tail ---\n{self.log_tail(source)}"
            )

    def in_recovery(self, i: int) -> bool:
        """True if instance ``i`` is a standby (asks the server)."""
        return self.sql(i, "SELECT pg_is_in_recovery()") == "t"

    def _run_pg(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL server binary as the postgres OS user."""
        argv = [pg_binary(argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", PG_OS_USER, "--", *argv]
        return _run(argv, timeout=timeout, cwd=self.base_dir)

    def _instance_error(self, i: int, what: str, res: subprocess.CompletedProcess[str]) -> PgClusterError:
        output = (res.stdout + res.stderr).strip()
        return PgClusterError(
            f"node{i} ({HOST}:{self.ports[i]}) {what}: {output}\n--- {self.log_path(i)} tail ---\n{self.log_tail(i)}"
        )


# -------------------------------------------------------------------------- helpers


def pg_binary(name: str) -> str:
    """Absolute path of a PostgreSQL 15 program (PG_BIN, overridable with $DBPROXY_PG_BIN)."""
    path = PG_BIN / name
    if not path.exists():
        raise PgClusterError(
            f"{path} not found: install PostgreSQL 15 (`make install`) or set DBPROXY_PG_BIN"
        )
    return str(path)


def _run(
    argv: list[str],
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    # Inherited PG* variables (PGHOST, PGSSLMODE, PGPASSWORD...) would change what the tools do.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    clean.update(env or {})
    try:
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=clean,
            timeout=timeout,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise PgClusterError(f"{' '.join(argv)} timed out after {timeout}s") from exc


def _parallel(fn: Callable[[int], None], indexes: range) -> None:
    """Run ``fn(i)`` for every index concurrently; re-raise the first failure."""
    if len(indexes) <= 1:
        for i in indexes:
            fn(i)
        return
    with ThreadPoolExecutor(max_workers=len(indexes)) as pool:
        for future in [pool.submit(fn, i) for i in indexes]:
            future.result()


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (our PID 1 may never reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def _child_pids(ppid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == ppid:
            children.append(int(entry.name))
    return children


def _chown_to_pg(path: Path) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam(PG_OS_USER)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _write_pg_file(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)
    _chown_to_pg(path)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_ports(n: int = 1) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1, never handed out twice by this process.

    Chosen below the kernel's ephemeral range (32768+) so outgoing connections cannot grab them.
    """
    rng = random.Random()
    ports: list[int] = []
    with _handed_out_lock:
        for _ in range(20000):
            if len(ports) == n:
                return ports
            port = rng.randrange(20000, 32700)
            if port not in _handed_out and _port_is_free(port):
                _handed_out.add(port)
                ports.append(port)
        if len(ports) == n:
            return ports
    raise RuntimeError(f"could not find {n} free ports on {HOST}")


def accepts_tcp(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


# ---------------------------------------------------------------------- command line


def _status(cluster: PgCluster) -> str:
    rows = []
    for i, addr in enumerate(cluster.instance_addrs()):
        if not cluster.is_running(i):
            rows.append(f"node{i}  {addr}  stopped")
            continue
        try:
            role = "replica" if cluster.in_recovery(i) else "primary"
        except PgClusterError as exc:
            role = f"unreachable ({exc})"
        rows.append(f"node{i}  {addr}  running  {role}  pid={cluster.postmaster_pid(i)}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.pgcluster", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="create (if needed) and start the cluster")
    start.add_argument("--dir", required=True)
    start.add_argument("--ports", help="comma separated, primary first (default: those in DIR/cluster.json)")
    start.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="server setting")
    for name in ("stop", "status", "destroy"):
        sub.add_parser(name).add_argument("--dir", required=True)
    for name in ("kill", "promote", "start-instance", "stop-instance"):
        one = sub.add_parser(name)
        one.add_argument("--dir", required=True)
        one.add_argument("--index", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        if args.command == "start":
            if args.ports:
                ports = [int(p) for p in args.ports.split(",")]
                settings = dict(item.split("=", 1) for item in args.set)
                cluster = PgCluster(args.dir, ports, settings=settings)
            else:
                cluster = PgCluster.load(args.dir)
            began = time.monotonic()
            cluster.start()
            print(f"started in {time.monotonic() - began:.1f}s")
            print(_status(cluster))
            return 0
        cluster = PgCluster.load(args.dir)
        if args.command == "stop":
            cluster.stop()
        elif args.command == "status":
            print(_status(cluster))
        elif args.command == "destroy":
            cluster.destroy()
        elif args.command == "kill":
            cluster.kill_instance(args.index)
        elif args.command == "promote":
            cluster.promote(args.index)
        elif args.command == "start-instance":
            cluster.start_instance(args.index)
        elif args.command == "stop-instance":
            cluster.stop_instance(args.index)
    except PgClusterError as exc:
        print(f"pgcluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
