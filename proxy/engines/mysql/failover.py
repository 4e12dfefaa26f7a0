"""MySQL / MariaDB failover actions: promote a replica, re-point replicas, stop and allow writes (SPEC §5, §12).

Every action opens a fresh connection (no database) with the probe credentials of
`[clusters.<name>.health]` and closes it afterwards. That user needs, on every instance:
`SUPER` or (MariaDB 10.5+) `READ_ONLY ADMIN` + `REPLICATION SLAVE ADMIN` + `SLAVE MONITOR` +
`CONNECTION ADMIN` (to end the transactions a switchover cuts off), and `BINLOG MONITOR`.

- promote:     stop the IO thread, let the SQL thread apply what was received (MASTER_GTID_WAIT on
               Gtid_IO_Pos, bounded), `STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0`.
               A semi-sync replica (rpl_semi_sync_slave_enabled) becomes a semi-sync primary.
- follow:      `STOP SLAVE; CHANGE MASTER TO MASTER_HOST = …, MASTER_PORT = …, MASTER_USE_GTID =
               slave_pos; START SLAVE` — the replication user and password configured on the replica
               stay as they are.
- rejoin:      after a switchover, the old primary replicates from the new one (`CHANGE MASTER TO …,
               MASTER_USER/PASSWORD = failover.replication_user/password, MASTER_USE_GTID = current_pos`);
               without those settings it is left read-only and fenced for the operator.
- stop_writes: `SET GLOBAL read_only = 1`, then end the client threads still inside a transaction (the
               switchover drained dbproxy's own first); returns the position written so far.
- MySQL 8 spells it `STOP REPLICA`, `CHANGE REPLICATION SOURCE TO … SOURCE_AUTO_POSITION = 1`; those are
  used when the server says it is MySQL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ...config import Address, FailoverSettings, HealthSettings, TlsSettings
from ...errors import ProxyError
from ...topology.coordinator import ActionFailed
from ...topology.lease import Lease, parse_rows
from . import sql
from .probe import MARIADB_SQL, MYSQL8_SQL, gtid_position
from .server import MysqlServerConnection
from .sql import QueryFailed

T = TypeVar("T")

LEASE_TABLE = "dbproxy.promote_leases"     # promote leases (topology/lease.py)
_LEASE_ROWS = f"SELECT holder, pid, UNIX_TIMESTAMP(renewed_at) AS at FROM {LEASE_TABLE}"
CONNECT_TIMEOUT = 2.0
STATEMENT_TIMEOUT = 5.0
POLL_SECONDS = 0.02
# What promote, re-point and switchover need (MariaDB 10.11 names), and what SUPER still includes there.
REQUIRED_PRIVILEGES = ("READ_ONLY ADMIN", "REPLICATION SLAVE ADMIN", "SLAVE MONITOR", "CONNECTION ADMIN")
SUPER_COVERS = frozenset(("REPLICATION SLAVE ADMIN", "SLAVE MONITOR", "CONNECTION ADMIN"))
# CURRENT_USER() ('user@host') as information_schema writes a grantee ('\'user\'@\'host\'').
_GRANTEE = "CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')"


class MysqlFailoverActions:
    """The MySQL adapter of coordinator.FailoverActions; see the module docstring."""

    def __init__(self, user: str, password: str | None, replication_user: str | None = None,
                 replication_password: str | None = None, tls: TlsSettings | None = None) -> None:
        self.user = user
        self.password = password
        self.tls = tls or TlsSettings()   # the cluster's server_tls, as the probes use it
        self.replication_user = replication_user
        self.replication_password = replication_password

    @classmethod
    def from_settings(cls, health: HealthSettings, failover: FailoverSettings) -> MysqlFailoverActions:
        return cls(health.user or "root", health.password, failover.replication_user, failover.replication_password,
                   health.tls)

    def describe_position(self, position: int | None) -> str:
        return "unknown" if position is None else f"GTID sequence {position}"

    async def promote(self, address: Address, wait_seconds: int) -> bool:
        """Make a replica the primary; True once it is writable."""

        async def run(conn: MysqlServerConnection) -> bool:
            mysql = sql.is_mysql(conn)
            status = await _replica_status(conn, mysql)
            if status is not None:
                await sql.execute(conn, "STOP REPLICA IO_THREAD" if mysql else "STOP SLAVE IO_THREAD",
                                  STATEMENT_TIMEOUT)
                received = (await _replica_status(conn, mysql) or {}).get("Gtid_IO_Pos")
                if received and not mysql:
                    # Apply what was received from the dead primary before taking writes.
                    await sql.query(conn, f"SELECT MASTER_GTID_WAIT({sql.literal(received)}, {int(wait_seconds)})",
                                    wait_seconds + STATEMENT_TIMEOUT)
                for statement in (("STOP REPLICA", "RESET REPLICA ALL") if mysql else ("STOP SLAVE", "RESET SLAVE ALL")):
                    await sql.execute(conn, statement, STATEMENT_TIMEOUT)
            if not mysql:
                await _semi_sync_primary(conn)
            await sql.execute(conn, "SET GLOBAL read_only = 0", STATEMENT_TIMEOUT)
            rows = await sql.query(conn, "SELECT @@read_only AS ro", STATEMENT_TIMEOUT)
            return bool(rows) and rows[0].get("ro") in ("0", "OFF")

        return await self._with_connection(address, run, wait_seconds + 4 * STATEMENT_TIMEOUT)

    async def follow(self, replica: Address, primary: Address) -> str:
        """Re-point a replica at `primary` (by GTID); returns a warning, or "" when all is well."""

        async def run(conn: MysqlServerConnection) -> str:
            mysql = sql.is_mysql(conn)
            host, port = sql.literal(primary.host), int(primary.port)
            if mysql:
                statements = ["STOP REPLICA", f"CHANGE REPLICATION SOURCE TO SOURCE_HOST = {host}, SOURCE_PORT = {port}, "
                              "SOURCE_AUTO_POSITION = 1", "START REPLICA"]
            else:
                statements = ["STOP SLAVE", f"CHANGE MASTER TO MASTER_HOST = {host}, MASTER_PORT = {port}, "
                              "MASTER_USE_GTID = slave_pos", "START SLAVE"]
            for statement in statements:
                await sql.execute(conn, statement, STATEMENT_TIMEOUT)
            status = await _replica_status(conn, mysql) or {}
            user = status.get("Master_User") or status.get("Source_User")
            if not user:
                return f"{replica} has no replication user configured: replication will not connect"
            return ""

        return await self._with_connection(replica, run, 4 * STATEMENT_TIMEOUT)

    async def missing_privileges(self, address: Address) -> list[str]:
        """The global privileges of the module docstring the health user lacks (MariaDB; MySQL 8's
        dynamic privileges are not checked)."""

        async def run(conn: MysqlServerConnection) -> list[str]:
            if sql.is_mysql(conn):
                return []
            rows = await sql.query(conn, "SELECT PRIVILEGE_TYPE AS p FROM information_schema.USER_PRIVILEGES "
                                         f"WHERE GRANTEE = {_GRANTEE}", STATEMENT_TIMEOUT)
            held = {row["p"] for row in rows}
            return [name for name in REQUIRED_PRIVILEGES
                    if name not in held and not ("SUPER" in held and name in SUPER_COVERS)]

        return await self._with_connection(address, run, STATEMENT_TIMEOUT)

    def rebuild_advice(self, old_primary: Address, primary: Address) -> str:
        return (f"old primary {old_primary} must be rebuilt as a replica of {primary}: it may hold transactions no "
                f"replica received (compare its @@gtid_binlog_pos with {primary}'s); re-clone it, or if it holds "
                "nothing extra: CHANGE MASTER TO ... MASTER_USE_GTID = current_pos; START SLAVE")

    async def rejoin(self, old_primary: Address, primary: Address) -> str:
        """A switchover's old primary (read-only now) replicates from the new one, from its own GTID
        position (MASTER_USE_GTID = current_pos: its binlog and any replica position), as a semi-sync
        replica if it was a semi-sync primary. Needs failover.replication_user/password."""
        if not self.replication_user:
            return (f"{old_primary} is read-only and not replicating: make it a replica of {primary} (CHANGE MASTER "
                    "TO ... MASTER_USE_GTID = current_pos; START SLAVE), or set failover.replication_user and "
                    "replication_password to let dbproxy do it")
        user, password = sql.literal(self.replication_user), sql.literal(self.replication_password or "")

        async def run(conn: MysqlServerConnection) -> str:
            if sql.is_mysql(conn):
                return f"{old_primary} is MySQL: rejoin it as a replica of {primary} by hand"
            host, port = sql.literal(primary.host), int(primary.port)
            await sql.execute(conn, "STOP SLAVE", STATEMENT_TIMEOUT)
            await sql.execute(conn, f"CHANGE MASTER TO MASTER_HOST = {host}, MASTER_PORT = {port}, MASTER_USER = {user}, "
                                    f"MASTER_PASSWORD = {password}, MASTER_USE_GTID = current_pos", STATEMENT_TIMEOUT)
            rows = await sql.query(conn, "SELECT @@rpl_semi_sync_master_enabled AS primary_side", STATEMENT_TIMEOUT)
            if rows and rows[0].get("primary_side") in ("1", "ON"):
                await sql.execute(conn, "SET GLOBAL rpl_semi_sync_master_enabled = OFF", STATEMENT_TIMEOUT)
                await sql.execute(conn, "SET GLOBAL rpl_semi_sync_slave_enabled = ON", STATEMENT_TIMEOUT)
            await sql.execute(conn, "START SLAVE", STATEMENT_TIMEOUT)
            return f"{old_primary} now replicates from {primary}"

        return await self._with_connection(old_primary, run, 6 * STATEMENT_TIMEOUT)

    async def stop_writes(self, primary: Address) -> int:
        """Make the primary read-only, end transactions still open on it; the position it wrote."""

        async def run(conn: MysqlServerConnection) -> int:
            await sql.execute(conn, "SET GLOBAL read_only = 1", STATEMENT_TIMEOUT)
            threads = await sql.query(
                conn, "SELECT t.trx_mysql_thread_id AS id FROM information_schema.INNODB_TRX t "
                      "WHERE t.trx_mysql_thread_id <> CONNECTION_ID() AND t.trx_mysql_thread_id <> 0",
                STATEMENT_TIMEOUT)
            for thread in threads:
                try:
                    await sql.execute(conn, f"KILL {int(thread['id'] or 0)}", STATEMENT_TIMEOUT)
                except QueryFailed:
                    pass   # ended meanwhile
            return await _written(conn)

        return await self._with_connection(primary, run, 3 * STATEMENT_TIMEOUT)

    async def allow_writes(self, primary: Address) -> None:
        async def run(conn: MysqlServerConnection) -> None:
            await sql.execute(conn, "SET GLOBAL read_only = 0", STATEMENT_TIMEOUT)

        await self._with_connection(primary, run, STATEMENT_TIMEOUT)

    async def wait_replayed(self, replica: Address, position: int, timeout: float) -> bool:
        """Poll a replica until it has applied `position`; False if it has not after `timeout` seconds."""

        async def run(conn: MysqlServerConnection) -> bool:
            deadline = time.monotonic() + timeout
            query = MYSQL8_SQL if sql.is_mysql(conn) else MARIADB_SQL
            while True:
                rows = await sql.query(conn, query, STATEMENT_TIMEOUT)
                replayed = gtid_position(rows[0].get("replayed")) if rows else None
                if replayed is not None and replayed >= position:
                    return True
                if time.monotonic() >= deadline:
                    return False
                await asyncio.sleep(POLL_SECONDS)

        return await self._with_connection(replica, run, timeout + STATEMENT_TIMEOUT)

    async def renew_lease(self, primary: Address, holder: str, pid: int) -> list[Lease]:
        """Upsert this proxy's promote lease on the primary (database and table made if missing); every lease."""

        async def run(conn: MysqlServerConnection) -> list[Lease]:
            exists = await sql.query(conn, "SELECT 1 FROM information_schema.tables WHERE table_schema = 'dbproxy' "
                                           "AND table_name = 'promote_leases'", STATEMENT_TIMEOUT)
            if not exists:
                await sql.execute(conn, "CREATE DATABASE IF NOT EXISTS dbproxy", STATEMENT_TIMEOUT)
                await sql.execute(conn, f"CREATE TABLE IF NOT EXISTS {LEASE_TABLE} (holder VARCHAR(200) PRIMARY KEY, "
                                        "pid INT NOT NULL, renewed_at TIMESTAMP(6) NOT NULL)", STATEMENT_TIMEOUT)
            await sql.execute(conn, f"INSERT INTO {LEASE_TABLE} VALUES ({sql.literal(holder)}, {int(pid)}, NOW(6)) "
                                    "ON DUPLICATE KEY UPDATE pid = VALUES(pid), renewed_at = VALUES(renewed_at)",
                              STATEMENT_TIMEOUT)
            return _leases(await sql.query(conn, _LEASE_ROWS, STATEMENT_TIMEOUT))

        return await self._with_connection(primary, run, STATEMENT_TIMEOUT * 2)

    async def read_leases(self, instance: Address) -> list[Lease] | None:
        """The promote leases as replicated to `instance` (none when the table was never made; None when
        the health user may not read it)."""

        async def run(conn: MysqlServerConnection) -> list[Lease] | None:
            try:
                return _leases(await sql.query(conn, _LEASE_ROWS, STATEMENT_TIMEOUT))
            except QueryFailed as exc:
                if exc.errno in (1049, 1146):   # unknown database / table
                    return []
                if exc.errno in (1044, 1142):   # access denied to the database / table
                    return None
                raise

        return await self._with_connection(instance, run, STATEMENT_TIMEOUT)
    async def run(self, address: Address, action: Callable[[MysqlServerConnection], Awaitable[T]], timeout: float) -> T:
        """Run `action` over a fresh connection with these credentials (replica discovery uses it too)."""
        return await self._with_connection(address, action, timeout)

    async def _with_connection(self, address: Address, action: Callable[[MysqlServerConnection], Awaitable[T]],
                               timeout: float) -> T:
        """Run `action` over a fresh connection; every failure becomes ActionFailed."""
        try:
            conn = await sql.connect(address, self.user, self.password, CONNECT_TIMEOUT, self.tls)
        except ProxyError as exc:
            raise ActionFailed(f"{address}: {exc.message}", harmless=True) from None
        try:
            return await asyncio.wait_for(action(conn), timeout)
        except QueryFailed as exc:
            # Not `harmless` (as a PostgreSQL action's single ERROR is): an action here is several
            # statements, and those before the failing one took effect.
            raise ActionFailed(f"{address}: {exc.message}") from None
        except (TimeoutError, ProxyError, OSError) as exc:
            raise ActionFailed(f"{address}: {_describe(exc)}") from None
        finally:
            conn.close()


async def _replica_status(conn: MysqlServerConnection, mysql: bool) -> dict[str, str | None] | None:
    rows = await sql.query(conn, "SHOW REPLICA STATUS" if mysql else "SHOW SLAVE STATUS", STATEMENT_TIMEOUT)
    return rows[0] if rows else None


async def _semi_sync_primary(conn: MysqlServerConnection) -> None:
    """A semi-sync replica becoming primary waits for its replicas' acks from now on (MariaDB)."""
    rows = await sql.query(conn, "SELECT @@rpl_semi_sync_slave_enabled AS replica", STATEMENT_TIMEOUT)
    if rows and rows[0].get("replica") in ("1", "ON"):
        await sql.execute(conn, "SET GLOBAL rpl_semi_sync_slave_enabled = OFF", STATEMENT_TIMEOUT)
        await sql.execute(conn, "SET GLOBAL rpl_semi_sync_master_enabled = ON", STATEMENT_TIMEOUT)


async def _written(conn: MysqlServerConnection) -> int:
    rows = await sql.query(conn, MYSQL8_SQL if sql.is_mysql(conn) else MARIADB_SQL, STATEMENT_TIMEOUT)
    position = gtid_position(rows[0].get("written")) if rows else None
    return position or 0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ProxyError):
        return exc.message
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _leases(rows: list[dict[str, str | None]]) -> list[Lease]:
    return parse_rows([(row.get("holder"), row.get("pid"), row.get("at")) for row in rows])
