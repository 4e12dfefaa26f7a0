"""Launcher for a local MariaDB 10.11 primary plus GTID replicas (tests, demo, benchmarks).

Layout under ``base_dir``::

    cluster.json            ports, settings, semi-sync and who replicates from whom ("masters")
    node0/                  instance 0 = primary (until a promotion says otherwise)
      my.cnf                written by us on every start; the server reads no other option file
      data/                 datadir: binlogs mariadb-bin.*, relay logs relay-bin.*
      mariadb.log           error log (and the server's stdout/stderr)
      mariadbd.pid          written by the server; launcher.pid is written by us when we spawn it
      mysqld.sock           the unix socket (the launcher's own admin connections)
      tmp/                  the server's tmpdir
    node1/, node2/ ...      replicas: copies of node0's fresh, never started datadir

The first start runs mariadb-install-db once, copies that datadir to every replica, starts
every node at once, creates ``repl`` on each (out of the binlog), points the replicas at node0
with ``MASTER_USE_GTID=slave_pos`` and only then creates database ``app`` and user ``app`` on
the primary, so those reach the replicas through replication. ``root`` logs in over TCP on
127.0.0.1 with no password but without READ_ONLY ADMIN, so replicas refuse its writes too (a
stray write would break GTID strict mode); the launcher itself administers the nodes as
root@localhost over their unix sockets. Servers run as the ``mysql`` OS user when we are root,
listen on 127.0.0.1 only and are tuned for speed, not durability.

Command line::

    python -m deploy.mysqlcluster start --dir D --ports 23306,23307,23308 [--set key=value ...] [--semi-sync]
    python -m deploy.mysqlcluster stop|status|destroy --dir D
    python -m deploy.mysqlcluster kill|promote|start-instance|stop-instance --dir D --index I
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deploy.pgcluster import _parallel, pid_alive

log = logging.getLogger(__name__)

MYSQL_OS_USER = "mysql"
HOST = "127.0.0.1"
STATE_FILE = "cluster.json"
APP_DB = "app"
APP_USER, APP_PASSWORD = "app", "app-pass"
REPL_USER, REPL_PASSWORD = "repl", "repl-pw"
# What dbproxy's probes and failover actions log in as (docs: the privileges they need).
MONITOR_USER, MONITOR_PASSWORD = "dbproxy_monitor", "monitor-pw"
MONITOR_GRANTS = ("READ_ONLY ADMIN, REPLICATION SLAVE ADMIN, REPLICATION MASTER ADMIN, SLAVE MONITOR, BINLOG MONITOR, CONNECTION ADMIN, "
                  "PROCESS, RELOAD")
ERR_READ_ONLY = 1290  # ER_OPTION_PREVENTS_STATEMENT: "running with the --read-only option"

DEFAULT_SETTINGS: dict[str, str] = {
    "bind_address": HOST,
    "skip_name_resolve": "ON",
    "performance_schema": "OFF",
    "max_connections": "500",
    "character_set_server": "utf8mb4",
    "collation_server": "utf8mb4_general_ci",
    "innodb_buffer_pool_size": "64M",
    "innodb_log_file_size": "16M",
    "innodb_flush_log_at_trx_commit": "2",  # survives a SIGKILL of the server, not of the machine
    "innodb_doublewrite": "OFF",
    "sync_binlog": "0",
    "binlog_format": "ROW",
    "gtid_domain_id": "0",
    "gtid_strict_mode": "ON",
    "log_slave_updates": "ON",
    "relay_log_recovery": "ON",
    "slave_net_timeout": "10",
}
# Settings that must be known when the datadir is created (the rest only matter at run time).
INSTALL_SETTINGS = ("innodb_page_size", "innodb_data_file_path", "innodb_log_file_size", "lower_case_table_names")
_ERROR_RE = re.compile(r"^ERROR (\d+) \((\w+)\)", re.M)
_UNESCAPE_RE = re.compile(r"\\([\\nt0])")
_UNESCAPED = {"\\": "\\", "n": "\n", "t": "\t", "0": "\0"}


class MysqlClusterError(RuntimeError):
    """A MariaDB instance could not be set up, started, stopped or queried."""


class MysqlQueryError(MysqlClusterError):
    """The server answered a query with an error; ``errno`` is its MariaDB error number."""

    def __init__(self, message: str, errno: int, sqlstate: str = "") -> None:
        super().__init__(message)
        self.errno = errno
        self.sqlstate = sqlstate


Row = list[str | None]


class MysqlCluster:
    """A primary (instance 0) and ``len(ports) - 1`` GTID replicas of it under ``base_dir``."""

    def __init__(
        self, base_dir: str | os.PathLike[str], ports: Sequence[int], settings: Mapping[str, str] | None = None,
        semi_sync: bool = False,
    ) -> None:
        if not ports:
            raise ValueError("MysqlCluster needs at least one port (the primary's)")
        if 3306 in ports:
            raise ValueError("port 3306 belongs to the system MariaDB; pick free ports (free_ports())")
        self.base_dir = Path(base_dir).resolve()
        if len(str(self.base_dir)) > 80:  # sun_path holds 107 bytes; node9/mysqld.sock needs 18 more
            raise ValueError(f"{self.base_dir}: too long a path for the nodes' unix sockets")
        self.ports = [int(p) for p in ports]
        self.settings = {**DEFAULT_SETTINGS, **{k.replace("-", "_"): v for k, v in (settings or {}).items()}}
        self.semi_sync = semi_sync
        # masters[i] is the index instance i replicates from, None for a primary.
        self.masters: list[int | None] = [None] + [0] * (len(self.ports) - 1)
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    # ----------------------------------------------------------------- whole cluster

    @classmethod
    def load(cls, base_dir: str | os.PathLike[str]) -> MysqlCluster:
        """The cluster previously started in ``base_dir`` (reads ``cluster.json``)."""
        state_path = Path(base_dir) / STATE_FILE
        try:
            state = json.loads(state_path.read_text())
        except FileNotFoundError:
            raise MysqlClusterError(f"{state_path} not found: no cluster was started in {base_dir}") from None
        cluster = cls(base_dir, state["ports"], state.get("settings"), state.get("semi_sync", False))
        cluster.masters = list(state.get("masters", cluster.masters))
        return cluster

    def start(self, timeout: float = 60) -> None:
        """Create what is missing, start every instance, set up replication and users, wait for the replicas."""
        self._prepare_base_dir()
        if not (self.data_dir(0) / "mysql").is_dir():
            self._install_db()
        pristine = not (self.data_dir(0) / "mariadb-bin.index").exists()  # never started since install
        for i in range(1, len(self.ports)):
            if not (self.data_dir(i) / "mysql").is_dir():
                if not pristine:
                    raise MysqlClusterError(
                        f"node{i} has no datadir and node0 has run since it was made: destroy the cluster"
                    )
                self._copy_datadir(0, i)
        # Replication starts once every node is up: a replica that tries first waits out a retry.
        _parallel(lambda i: self.start_instance(i, timeout=timeout, replicate=False), range(len(self.ports)))
        _parallel(self._ensure_repl_user, range(len(self.ports)))
        _parallel(self._ensure_replicating, range(len(self.ports)))
        primaries = [i for i, master in enumerate(self.masters) if master is None]
        if not primaries:
            raise MysqlClusterError(f"no primary in {self.base_dir / STATE_FILE}: masters = {self.masters}")
        # After a failover the old primary may come back as a second one: the setup goes where the replicas are.
        primary = max(primaries, key=self.masters.count)
        if not self.query(primary, f"SHOW DATABASES LIKE {_literal(APP_DB)}"):
            self._create_app(primary, timeout)
        self._ensure_monitor_user(primary)
        self.wait_replicated(timeout=timeout)

    def stop(self, timeout: float = 60) -> None:
        """Clean shutdown of every instance (SIGTERM, SIGKILL after ``timeout``), then of any straggler."""
        _parallel(lambda i: self.stop_instance(i, timeout=timeout), range(len(self.ports)))
        self._kill_everything()

    def destroy(self) -> None:
        """Kill every instance (the data is thrown away anyway) and delete ``base_dir``."""
        self._kill_everything()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    @property
    def addresses(self) -> list[str]:
        return [self.address(i) for i in range(len(self.ports))]

    def address(self, i: int) -> str:
        return f"{HOST}:{self.ports[i]}"

    def primary_index(self) -> int | None:
        """Index of the first running instance that is writable (``read_only`` off), if any."""
        for i in range(len(self.ports)):
            if self.is_running(i) and self.scalar(i, "SELECT @@global.read_only") == "0":
                return i
        return None

    def wait_replicated(self, timeout: float = 30) -> None:
        """Wait until every running replica has applied what its primary had binlogged when called."""
        targets: dict[int, dict[int, int]] = {}
        roots: dict[int, dict[int, int]] = {}
        for i, master in enumerate(self.masters):
            if master is None or not self.is_running(i):
                continue
            root = self._root(i)
            if root not in roots:
                roots[root] = parse_gtid(self.scalar(root, "SELECT @@global.gtid_binlog_pos"))
            targets[i] = roots[root]
        deadline = time.monotonic() + timeout
        while targets:
            for i in list(targets):
                if gtid_covers(parse_gtid(self.scalar(i, "SELECT @@global.gtid_slave_pos")), targets[i]):
                    del targets[i]
            if not targets:
                return
            if time.monotonic() > deadline:
                details = "\n".join(f"node{i}: {self._replication_summary(i)}" for i in sorted(targets))
                raise MysqlClusterError(f"replicas {sorted(targets)} not caught up after {timeout}s\n{details}")
            time.sleep(0.05)

    def server_pids(self) -> list[int]:
        """Every live mariadbd started for this ``base_dir``, found by command line in /proc."""
        needle = f"--defaults-file={self.base_dir}/node".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if entry.name.isdigit() and needle in (entry / "cmdline").read_bytes() and pid_alive(int(entry.name)):
                    pids.append(int(entry.name))
        return pids

    # -------------------------------------------------------------- single instances

    def instance_dir(self, i: int) -> Path:
        return self.base_dir / f"node{i}"

    def data_dir(self, i: int) -> Path:
        return self.instance_dir(i) / "data"

    def tmp_dir(self, i: int) -> Path:
        return self.instance_dir(i) / "tmp"

    def config_path(self, i: int) -> Path:
        return self.instance_dir(i) / "my.cnf"

    def log_path(self, i: int) -> Path:
        return self.instance_dir(i) / "mariadb.log"

    def log_tail(self, i: int, lines: int = 40) -> str:
        try:
            text = self.log_path(i).read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def pid(self, i: int) -> int | None:
        """PID of instance ``i``'s live mariadbd (launcher.pid, else the server's pid file), or None."""
        proc = self._procs.get(i)
        if proc is not None:
            if proc.poll() is None:  # our own child (its /proc cmdline can read empty right after exec)
                return proc.pid
            del self._procs[i]  # it died; poll() reaped it
        for name in ("launcher.pid", "mariadbd.pid"):
            try:
                pid = int((self.instance_dir(i) / name).read_text().strip())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (OSError, ValueError):
                continue
            if str(self.config_path(i)).encode() in cmdline and pid_alive(pid):
                return pid
        return None

    def is_running(self, i: int) -> bool:
        return self.pid(i) is not None

    def start_instance(self, i: int, timeout: float = 60, replicate: bool = True) -> None:
        """Start instance ``i`` (no-op if running) and wait until it answers queries.

        Servers run with skip_slave_start; unless ``replicate`` is false a replica then picks up
        replication where it left off (its master info and GTID position live in its datadir).
        """
        if self.is_running(i):
            return
        self._configure(i)
        for stale in ("launcher.pid", "mariadbd.pid", "mysqld.sock"):
            (self.instance_dir(i) / stale).unlink(missing_ok=True)
        argv = [_binary("mariadbd"), f"--defaults-file={self.config_path(i)}"]
        if os.geteuid() == 0:
            argv.append(f"--user={MYSQL_OS_USER}")
        with self.log_path(i).open("ab") as out:
            # A new session: a Ctrl-C aimed at the CLI or at pytest must not reach the servers.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=self.instance_dir(i), env=_clean_env(), start_new_session=True)
        self._procs[i] = proc
        (self.instance_dir(i) / "launcher.pid").write_text(f"{proc.pid}\n")
        self.wait_ready(i, timeout=timeout)
        if replicate and self.masters[i] is not None and self.slave_status(i):
            self.query(i, "START SLAVE", admin=True)

    def stop_instance(self, i: int, timeout: float = 60) -> None:
        """Clean shutdown of instance ``i`` (SIGTERM); SIGKILL if it has not exited after ``timeout``."""
        pid = self.pid(i)
        if pid is None:
            return
        _signal(pid, signal.SIGTERM)
        if not self._wait_gone(i, [pid], timeout):
            log.warning("node%d (pid %d) did not shut down in %ss; killing it", i, pid, timeout)
            self.kill_instance(i)

    def kill_instance(self, i: int, timeout: float = 10) -> None:
        """Crash instance ``i``: SIGKILL its mariadbd (one process: no children to chase)."""
        pid = self.pid(i)
        if pid is None:
            return
        _signal(pid, signal.SIGKILL)
        if not self._wait_gone(i, [pid], timeout):
            raise MysqlClusterError(f"node{i}: pid {pid} survived SIGKILL for {timeout}s")

    kill = kill_instance

    def wait_ready(self, i: int, timeout: float = 30) -> None:
        """Wait until instance ``i`` answers ``SELECT 1`` over TCP (fails at once if it is not running)."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.is_running(i):
                raise self._error(i, "is not running")
            # The server writes its pid file once it listens: probing earlier could reach a squatter
            # on its port. A bare TCP probe would make the server log "Aborted connection".
            if (self.instance_dir(i) / "mariadbd.pid").exists():
                with contextlib.suppress(MysqlClusterError):
                    self.query(i, "SELECT 1", timeout=10)
                    return
            if time.monotonic() > deadline:
                raise self._error(i, f"not ready after {timeout}s")
            time.sleep(0.03)

    def promote(self, i: int, timeout: float = 30) -> None:
        """Make replica ``i`` a primary: apply what it already received, forget its master, go writable."""
        status = self.slave_status(i)
        if status.get("Slave_SQL_Running") == "Yes":
            self.query(i, "STOP SLAVE IO_THREAD", admin=True)
            io_pos = self.slave_status(i).get("Gtid_IO_Pos", "")
            if io_pos:
                waited = self.scalar(i, f"SELECT MASTER_GTID_WAIT({_literal(io_pos)}, {float(timeout)})")
                if waited != "0":
                    log.warning("node%d: relay log not applied up to %s within %ss", i, io_pos, timeout)
        sql = f"STOP SLAVE; RESET SLAVE ALL; {self._semi_sync_sql(primary=True)}SET GLOBAL read_only = OFF"
        self.query(i, sql, admin=True)
        self.masters[i] = None
        self._save_state()

    def repoint(self, i: int, primary_index: int) -> None:
        """Make instance ``i`` (a replica, or an old primary) replicate from ``primary_index`` by GTID."""
        if i == primary_index:
            raise ValueError(f"node{i} cannot replicate from itself")
        self._change_master(i, primary_index)
        self.masters[i] = primary_index
        self._save_state()

    def set_delay(self, i: int, seconds: int) -> None:
        """Make replica ``i`` apply each event ``seconds`` after the primary wrote it (0: no delay)."""
        # MariaDB refuses CHANGE MASTER while either slave thread runs, so both are stopped.
        self.query(i, f"STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = {int(seconds)}; START SLAVE", admin=True)

    def scalar(self, i: int, sql: str, **kwargs: Any) -> str | None:
        """First column of the first row ``sql`` returns (``query``'s arguments); None if no row or NULL."""
        rows = self.query(i, sql, **kwargs)
        return rows[0][0] if rows and rows[0] else None

    def slave_status(self, i: int) -> dict[str, str]:
        """``SHOW SLAVE STATUS`` of instance ``i`` as a dict (empty if it replicates from nobody)."""
        rows = self.query(i, "SHOW SLAVE STATUS", names=True)
        if len(rows) < 2:
            return {}
        return {str(name): value or "" for name, value in zip(rows[0], rows[1], strict=True)}

    def query(
        self, i: int, sql: str, user: str = "root", password: str = "", db: str | None = None,
        timeout: float = 30, names: bool = False, admin: bool = False,
    ) -> list[Row]:
        """Run ``sql`` (one or more statements) with the ``mariadb`` client over TCP; every result row.

        Values are strings as the client prints them, SQL NULL is None; ``names`` puts the column
        names first. A server (or client) error raises MysqlQueryError with its ``errno``.
        ``admin`` connects as root@localhost over the unix socket instead: unlike root@127.0.0.1
        it has READ_ONLY ADMIN, so it may write on a replica (and change ``read_only``).
        """
        argv = [_binary("mariadb"), "--no-defaults", "--batch", "--connect-timeout=5"]
        if admin:
            user, password = "root", ""
            argv += ["--protocol=SOCKET", f"--socket={self.instance_dir(i) / 'mysqld.sock'}", "-u", user]
        else:
            argv += ["--protocol=TCP", "-h", HOST, "-P", str(self.ports[i]), "-u", user]
        if not names:
            argv.append("--skip-column-names")
        if password:
            argv.append(f"--password={password}")
        if db:
            argv += ["-D", db]
        res = _run([*argv, "-e", sql], timeout=timeout)
        if res.returncode != 0:
            message = res.stderr.strip()
            match = _ERROR_RE.search(message)
            message = message[match.start() :] if match else message  # the client echoes the statement first
            who = "root@localhost (socket)" if admin else f"{user}@{self.address(i)}"
            what = f"node{i} ({who}): {sql!r} failed: {message}"
            if match:
                raise MysqlQueryError(what, int(match.group(1)), match.group(2))
            raise MysqlClusterError(what)
        return [_parse_row(line) for line in res.stdout.split("\n") if line]

    # ---------------------------------------------------------------------- internals

    def _root(self, i: int) -> int:
        """The primary at the top of instance ``i``'s replication chain."""
        for _ in self.ports:
            master = self.masters[i]
            if master is None:
                return i
            i = master
        raise MysqlClusterError(f"replication loop: masters = {self.masters}")

    def _error(self, i: int, what: str) -> MysqlClusterError:
        return MysqlClusterError(f"node{i} ({self.address(i)}) {what}\n--- {self.log_path(i)} tail ---\n{self.log_tail(i)}")

    def _replication_summary(self, i: int) -> str:
        try:
            status = self.slave_status(i)
        except MysqlClusterError as exc:
            return f"unreachable ({exc})"
        keys = ("Slave_IO_Running", "Slave_SQL_Running", "Gtid_IO_Pos", "Last_IO_Error", "Last_SQL_Error")
        return ", ".join(f"{key}={status.get(key, '')!r}" for key in keys) or "not a replica"

    def _prepare_base_dir(self) -> None:
        state_path = self.base_dir / STATE_FILE
        if state_path.exists():
            state = json.loads(state_path.read_text())
            if state.get("ports") != self.ports and (self.data_dir(0) / "mysql").is_dir():
                raise MysqlClusterError(
                    f"{self.base_dir} holds a cluster on ports {state.get('ports')}, not {self.ports}; destroy it first"
                )
            if len(state.get("masters", [])) == len(self.ports):
                self.masters = list(state["masters"])
        self.base_dir.mkdir(parents=True, exist_ok=True)
        _chown_to_mysql(self.base_dir)
        for i in range(len(self.ports)):
            self.instance_dir(i).mkdir(mode=0o755, exist_ok=True)
            self.tmp_dir(i).mkdir(mode=0o755, exist_ok=True)
            self.log_path(i).touch()
            for path in (self.instance_dir(i), self.tmp_dir(i), self.log_path(i)):
                _chown_to_mysql(path)
        self._save_state()
        if os.geteuid() == 0:
            res = _run(["runuser", "-u", MYSQL_OS_USER, "--", "test", "-w", str(self.base_dir)])
            if res.returncode != 0:
                raise MysqlClusterError(
                    f"the {MYSQL_OS_USER} OS user cannot write to {self.base_dir}: every parent directory must be "
                    "searchable by it (put the cluster under /tmp or a world-readable directory)"
                )

    def _save_state(self) -> None:
        state = {"ports": self.ports, "settings": self.settings, "semi_sync": self.semi_sync, "masters": self.masters}
        tmp = self.base_dir / f".{STATE_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.base_dir / STATE_FILE)

    def _install_db(self) -> None:
        """mariadb-install-db into node0/data, without root@hostname (useless and noisy here)."""
        data, tmp = self.data_dir(0), self.instance_dir(0) / "data.new"
        init_sql = self.instance_dir(0) / "init.sql"
        init_sql.write_text(
            "DELETE FROM mysql.global_priv WHERE Host NOT IN ('localhost', '127.0.0.1', '::1', '%');\n"
            "DELETE FROM mysql.proxies_priv WHERE Host NOT IN ('localhost', '127.0.0.1', '::1', '%');\n"
        )
        # Its own tmpdir: bootstraps sharing /tmp now and then lose a temporary table and fail.
        argv = [_binary("mariadb-install-db"), "--no-defaults", f"--datadir={tmp}", f"--tmpdir={self.tmp_dir(0)}"]
        argv += ["--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"]
        argv += [f"--extra-file={init_sql}"]
        argv += [f"--{key.replace('_', '-')}={self.settings[key]}" for key in INSTALL_SETTINGS if key in self.settings]
        if os.geteuid() == 0:
            argv.append(f"--user={MYSQL_OS_USER}")
        for attempt in (1, 2):  # and a second try, should the bootstrap itself crash
            for stale in (data, tmp):
                shutil.rmtree(stale, ignore_errors=True)  # half-made by an earlier failed attempt
            res = _run(argv, timeout=120, cwd=self.instance_dir(0))
            if res.returncode == 0:
                break
            log.warning("mariadb-install-db into %s failed (attempt %d)", tmp, attempt)
        init_sql.unlink(missing_ok=True)
        if res.returncode != 0:
            raise MysqlClusterError(f"mariadb-install-db into {tmp} failed:\n{res.stdout}{res.stderr}")
        tmp.rename(data)

    def _copy_datadir(self, source: int, i: int) -> None:
        tmp = self.instance_dir(i) / "data.new"
        for stale in (self.data_dir(i), tmp):
            shutil.rmtree(stale, ignore_errors=True)
        res = _run(["cp", "-a", "--reflink=auto", str(self.data_dir(source)), str(tmp)], timeout=120)
        if res.returncode != 0:
            raise MysqlClusterError(f"copying node{source}'s datadir to {tmp} failed: {res.stderr.strip()}")
        tmp.rename(self.data_dir(i))

    def _configure(self, i: int) -> None:
        """(Re)write instance ``i``'s my.cnf: shared settings, then what is its own."""
        node = self.instance_dir(i)
        own = {
            "datadir": str(self.data_dir(i)),
            "port": str(self.ports[i]),
            "socket": str(node / "mysqld.sock"),
            "pid_file": str(node / "mariadbd.pid"),
            "log_error": str(self.log_path(i)),
            "tmpdir": str(self.tmp_dir(i)),
            "server_id": str(i + 1),
            "log_bin": "mariadb-bin",
            "log_bin_index": "mariadb-bin.index",
            "relay_log": "relay-bin",
            "read_only": "OFF" if self.masters[i] is None else "ON",
            "skip_slave_start": "ON",
        }
        if self.semi_sync:  # a replica must not be a semi-sync master: it would wait for acks itself
            own |= self._semi_sync_roles(primary=self.masters[i] is None)
        body = "".join(f"{key} = {value}\n" for key, value in {**self.settings, **own}.items())
        self.config_path(i).write_text("# written by deploy/mysqlcluster.py on every start\n[mariadbd]\n" + body)

    def _semi_sync_roles(self, primary: bool) -> dict[str, str]:
        return {"rpl_semi_sync_master_enabled": "ON" if primary else "OFF",
                "rpl_semi_sync_slave_enabled": "OFF" if primary else "ON"}

    def _semi_sync_sql(self, primary: bool) -> str:
        roles = self._semi_sync_roles(primary) if self.semi_sync else {}
        return "".join(f"SET GLOBAL {key} = {value}; " for key, value in roles.items())

    def _ensure_repl_user(self, i: int) -> None:
        """``repl`` on every node, kept out of the binlog: needed before replication can start at all."""
        user = f"{_literal(REPL_USER)}@'%'"
        self.query(
            i,
            "SET SESSION sql_log_bin = 0; "
            f"CREATE USER IF NOT EXISTS {user} IDENTIFIED VIA mysql_native_password "
            f"USING PASSWORD({_literal(REPL_PASSWORD)}); GRANT REPLICATION SLAVE ON *.* TO {user}",
            admin=True,
        )

    def _ensure_replicating(self, i: int) -> None:
        """Point instance ``i`` at its master, or restart the replication it was set up with."""
        master = self.masters[i]
        if master is not None and self.slave_status(i):
            self.query(i, "START SLAVE", admin=True)
        elif master is not None:
            self._change_master(i, master)

    def _create_app(self, primary: int, timeout: float) -> None:
        """Database and user ``app`` on the primary, after replication is set up so that they replicate."""
        if self.semi_sync:
            self._wait_semi_sync_clients(primary, timeout=min(timeout, 15))
        user = f"{_literal(APP_USER)}@'%'"
        self.query(  # binlogged: reaches the replicas by replication
            primary,
            f"CREATE DATABASE IF NOT EXISTS `{APP_DB}`; CREATE USER IF NOT EXISTS {user} IDENTIFIED VIA "
            f"mysql_native_password USING PASSWORD({_literal(APP_PASSWORD)}); GRANT ALL ON `{APP_DB}`.* TO {user}; "

            f"REVOKE READ_ONLY ADMIN ON *.* FROM 'root'@{_literal(HOST)}",  # so replicas refuse root's writes too
            admin=True,
        )

    def _ensure_monitor_user(self, primary: int) -> None:
        """dbproxy's probe and failover user, on every start (clusters made before it existed get it too)."""
        monitor = f"{_literal(MONITOR_USER)}@'%'"
        self.query(  # binlogged: reaches the replicas by replication
            primary,
            f"CREATE USER IF NOT EXISTS {monitor} IDENTIFIED VIA mysql_native_password USING "
            f"PASSWORD({_literal(MONITOR_PASSWORD)}); GRANT {MONITOR_GRANTS} ON *.* TO {monitor}",
            admin=True,
        )

    def _change_master(self, i: int, master: int) -> None:
        # An old primary's own writes are in its binlog but not in gtid_slave_pos: current_pos has both.
        self.query(
            i,
            "STOP SLAVE; SET GLOBAL gtid_slave_pos = @@global.gtid_current_pos; "
            f"CHANGE MASTER TO MASTER_HOST = {_literal(HOST)}, MASTER_PORT = {self.ports[master]}, "
            f"MASTER_USER = {_literal(REPL_USER)}, MASTER_PASSWORD = {_literal(REPL_PASSWORD)}, "
            "MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1; "
            f"SET GLOBAL read_only = ON; {self._semi_sync_sql(primary=False)}START SLAVE",
            admin=True,
        )

    def _wait_semi_sync_clients(self, primary: int, timeout: float) -> None:
        """Wait until the primary's replicas registered as semi-sync, so its next commits do not stall."""
        wanted = sum(1 for i, m in enumerate(self.masters) if m == primary and self.is_running(i))
        deadline = time.monotonic() + timeout
        sql = "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_CLIENTS'"
        while int(self.scalar(primary, sql) or 0) < wanted:
            if time.monotonic() > deadline:
                log.warning("node%d: fewer than %d semi-sync replicas after %ss", primary, wanted, timeout)
                return
            time.sleep(0.05)

    def _wait_gone(self, i: int, pids: list[int], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if not any(pid_alive(pid) for pid in pids):  # a zombie counts as dead...
                proc = self._procs.pop(i, None)
                if proc is not None and proc.pid in pids:
                    proc.wait()  # ...and our own child is reaped at once
                (self.instance_dir(i) / "launcher.pid").unlink(missing_ok=True)
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def _kill_everything(self) -> None:
        """SIGKILL every mariadbd of this cluster: by pid file and by command line (half-started ones)."""
        for i in range(len(self.ports)):
            try:
                self.kill_instance(i)
            except MysqlClusterError as exc:
                log.warning("%s", exc)
        strays = self.server_pids()
        for pid in strays:
            _signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(pid_alive(pid) for pid in strays) and time.monotonic() < deadline:
            time.sleep(0.02)


# -------------------------------------------------------------------------- helpers


def parse_gtid(pos: str | None) -> dict[int, int]:
    """``'0-1-5,1-2-9'`` -> ``{0: 5, 1: 9}`` (domain -> sequence number)."""
    result: dict[int, int] = {}
    for item in (pos or "").replace("\n", "").split(","):
        if item.strip():
            domain, _server, seq = item.strip().split("-")
            result[int(domain)] = max(result.get(int(domain), 0), int(seq))
    return result


def gtid_covers(have: Mapping[int, int], want: Mapping[int, int]) -> bool:
    """True if position ``have`` is at or past ``want`` in every domain of ``want``."""
    return all(have.get(domain, -1) >= seq for domain, seq in want.items())


def _parse_row(line: str) -> Row:
    return [None if f == "NULL" else _UNESCAPE_RE.sub(lambda m: _UNESCAPED[m.group(1)], f) for f in line.split("\t")]


def _binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        raise MysqlClusterError(f"{name} not found: install MariaDB 10.11 (apt-get install mariadb-server)")
    return path


def _clean_env() -> dict[str, str]:
    # MYSQL_HOST, MYSQL_PWD, MYSQL_TCP_PORT... would change what the client does.
    return {k: v for k, v in os.environ.items() if not k.startswith(("MYSQL", "MARIADB"))}


def _run(argv: list[str], timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, env=_clean_env(), timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise MysqlClusterError(f"{' '.join(argv)} timed out after {timeout}s") from exc


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _chown_to_mysql(path: Path) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam(MYSQL_OS_USER)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


# ---------------------------------------------------------------------- command line


def _status(cluster: MysqlCluster) -> str:
    rows = []
    for i, addr in enumerate(cluster.addresses):
        pid = cluster.pid(i)
        if pid is None:
            rows.append(f"node{i}  {addr}  stopped")
            continue
        try:
            status = cluster.slave_status(i)
            gtid = cluster.scalar(i, "SELECT @@global.gtid_binlog_pos") or "-"
            if status:
                role = (f"replica of {status.get('Master_Port')} io={status.get('Slave_IO_Running')} "
                        f"sql={status.get('Slave_SQL_Running')} delay={status.get('SQL_Delay')}")
            else:
                role = "primary" if cluster.scalar(i, "SELECT @@global.read_only") == "0" else "read-only, no master"
            rows.append(f"node{i}  {addr}  running  {role}  gtid={gtid}  pid={pid}")
        except MysqlClusterError as exc:
            rows.append(f"node{i}  {addr}  running  unreachable ({exc})  pid={pid}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.mysqlcluster", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="create (if needed) and start the cluster")
    start.add_argument("--dir", required=True)
    start.add_argument("--ports", help="comma separated, primary first (default: those in DIR/cluster.json)")
    start.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="server setting (my.cnf)")
    start.add_argument("--semi-sync", action="store_true", help="semi-synchronous replication")
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
                cluster = MysqlCluster(args.dir, ports, settings=settings, semi_sync=args.semi_sync)
            else:
                cluster = MysqlCluster.load(args.dir)
            began = time.monotonic()
            cluster.start()
            print(f"started in {time.monotonic() - began:.1f}s")
            print(_status(cluster))
            return 0
        cluster = MysqlCluster.load(args.dir)
        if args.command == "status":
            print(_status(cluster))
        elif args.command in ("stop", "destroy"):
            getattr(cluster, args.command)()
        else:
            getattr(cluster, {"kill": "kill_instance"}.get(args.command, args.command.replace("-", "_")))(args.index)
    except (MysqlClusterError, ValueError) as exc:
        print(f"mysqlcluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
