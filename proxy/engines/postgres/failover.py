"""PostgreSQL failover actions: promote a replica, re-point replicas online, stop writes on a primary.

Every action opens a fresh connection (application_name "dbproxy-failover") with the probe
credentials of `[clusters.<name>.health]` (user/password/database) and closes it afterwards.
That role needs, on every instance:

- promote:       superuser, or `GRANT EXECUTE ON FUNCTION pg_promote(boolean, integer) TO <user>`
- re-point:      superuser, or (PostgreSQL >= 15) `GRANT ALTER SYSTEM ON PARAMETER primary_conninfo`
                 plus `GRANT EXECUTE ON FUNCTION pg_reload_conf() TO <user>`; reading the current
                 primary_conninfo (to keep its other keywords) needs superuser or pg_read_all_settings
- switchover:    superuser, or ALTER SYSTEM on default_transaction_read_only, pg_reload_conf(),
                 and the pg_signal_backend role (to end other sessions' writing transactions)

In practice: make the health user a superuser, or give it these grants (docs/failover.md).

Re-pointing (`ALTER SYSTEM SET primary_conninfo` + `pg_reload_conf()`) takes effect without a
restart from PostgreSQL 13 on; replicas then follow the new timeline because
recovery_target_timeline defaults to 'latest' (PostgreSQL >= 12); a replica configured otherwise
is re-pointed but reported, since it cannot follow.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ...config import Address, HealthSettings, TlsSettings
from ...errors import ProxyError
from ...topology.coordinator import ActionFailed
from ...topology.lease import Lease, parse_rows
from .sql import PgSqlConnection, QueryFailed, format_lsn, parse_lsn
from .wire import messages as m

T = TypeVar("T")

APPLICATION_NAME = "dbproxy-failover"
LEASE_TABLE = "dbproxy_promote_leases"     # promote leases (topology/lease.py), in the health database
_LEASE_ROWS = f"SELECT holder, pid, extract(epoch FROM renewed_at) FROM {LEASE_TABLE}"
CONNECT_TIMEOUT = 2.0
STATEMENT_TIMEOUT = 5.0


class PgFailoverActions:
    """The PostgreSQL adapter of coordinator.FailoverActions; see the module docstring."""

    def __init__(self, user: str, password: str | None, database: str, tls: TlsSettings | None = None) -> None:
        self.user = user
        self.password = password
        self.database = database
        self.tls = tls or TlsSettings()

    @classmethod
    def from_health(cls, health: HealthSettings) -> PgFailoverActions:
        return cls(health.user or "postgres", health.password, health.database, health.tls)

    # ---- the actions ----------------------------------------------------------------------------

    def describe_position(self, position: int | None) -> str:
        return "unknown" if position is None else format_lsn(position)

    async def promote(self, address: Address, wait_seconds: int) -> bool:
        """Promote a replica; True once it runs as a primary, False if still promoting after wait_seconds."""

        async def run(conn: PgSqlConnection) -> bool:
            try:
                done = await conn.query_value(f"SELECT pg_promote(wait => true, wait_seconds => {int(wait_seconds)})")
            except QueryFailed as exc:
                if exc.sqlstate == "55000":   # "recovery is not in progress": it already is a primary
                    return True
                raise
            return done == "t"

        return await self._with_connection(address, run, wait_seconds + STATEMENT_TIMEOUT)

    async def follow(self, replica: Address, primary: Address) -> str:
        """Re-point a running replica at `primary` online; returns a warning, or "" when all is well."""

        async def run(conn: PgSqlConnection) -> str:
            current = await _setting(conn, "primary_conninfo")
            name = await _setting(conn, "cluster_name") or ""
            conninfo = retarget_conninfo(current, primary, self.user, name)
            await conn.query(f"ALTER SYSTEM SET primary_conninfo = {sql_literal(conninfo)}")
            await conn.query("SELECT pg_reload_conf()")
            target_timeline = await _setting(conn, "recovery_target_timeline")
            if target_timeline not in (None, "latest"):
                return (f"recovery_target_timeline is {target_timeline!r}, not 'latest': {replica} cannot "
                        f"follow the new timeline of {primary}")
            return ""

        return await self._with_connection(replica, run, STATEMENT_TIMEOUT)

    async def stop_writes(self, primary: Address) -> int:
        """Make a primary refuse new writing transactions, end the running ones; its WAL position then.

        PostgreSQL has no online demotion: default_transaction_read_only = on (ALTER SYSTEM, so it
        also holds after a restart) stops new writes through ordinary sessions, and the sessions
        holding a transaction ID (that have written) are terminated so nothing commits after the
        returned position. Then a WAL record of our own (a transactional logical message) is
        committed with synchronous_commit = local: it comes after every commit acknowledged so
        far, and its commit flushes them all (with synchronous_commit = off they would wait for
        the WAL writer, and replicas only receive flushed WAL). Its position is returned: a
        replica that has replayed it has every acknowledged commit.
        The instance stays a primary; the caller fences it.
        """

        async def run(conn: PgSqlConnection) -> int:
            await conn.query("ALTER SYSTEM SET default_transaction_read_only = on")
            await conn.query("SELECT pg_reload_conf()")
            await conn.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_xid IS NOT NULL "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'")
            rows = await conn.query(
                "SET synchronous_commit = local; BEGIN READ WRITE; "
                "SELECT pg_logical_emit_message(true, 'dbproxy', 'switchover'); COMMIT")
            position = parse_lsn(rows[0][0]) if len(rows) == 1 else None
            if position is None:
                raise QueryFailed(m.ErrorFields("ERROR", "XX000", "pg_logical_emit_message returned no position"))
            return position

        return await self._with_connection(primary, run, STATEMENT_TIMEOUT)

    async def missing_privileges(self, address: Address) -> list[str]:
        """The grants of the module docstring the health user lacks (nothing for a superuser)."""

        async def run(conn: PgSqlConnection) -> list[str]:
            rows = await conn.query(
                "SELECT rolsuper, has_function_privilege('pg_promote(boolean, integer)', 'EXECUTE'), "
                "has_function_privilege('pg_reload_conf()', 'EXECUTE'), "
                "pg_has_role(current_user, 'pg_read_all_settings', 'MEMBER'), "
                "pg_has_role(current_user, 'pg_signal_backend', 'MEMBER') "
                "FROM pg_roles WHERE rolname = current_user")
            if not rows or rows[0][0] == "t":
                return []
            _, promote, reload, read_settings, signal = rows[0]
            missing = [name for name, held in (
                ("EXECUTE on pg_promote(boolean, integer)", promote),
                ("EXECUTE on pg_reload_conf()", reload),
                ("pg_read_all_settings", read_settings),
                ("pg_signal_backend", signal)) if held != "t"]
            for parameter in ("primary_conninfo", "default_transaction_read_only"):
                try:
                    allowed = await conn.query_value(
                        f"SELECT has_parameter_privilege({sql_literal(parameter)}, 'ALTER SYSTEM')")
                except QueryFailed:   # before PostgreSQL 15 only a superuser may ALTER SYSTEM
                    allowed = "f"
                if allowed != "t":
                    missing.append(f"ALTER SYSTEM on {parameter}")
            return missing

        return await self._with_connection(address, run, STATEMENT_TIMEOUT)

    def rebuild_advice(self, old_primary: Address, primary: Address) -> str:
        return f"old primary {old_primary} must be rebuilt as a replica of {primary} (pg_rewind or a new base backup)"

    async def rejoin(self, old_primary: Address, primary: Address) -> str:
        """PostgreSQL cannot turn a primary into a replica online (pg_rewind needs it stopped)."""
        return (f"{old_primary} is read-only and fenced: rebuild it as a replica of {primary} (pg_rewind or a "
                f"new base backup), then reset default_transaction_read_only on it")

    async def allow_writes(self, primary: Address) -> None:
        """Undo stop_writes (a switchover that could not finish)."""

        async def run(conn: PgSqlConnection) -> None:
            await conn.query("ALTER SYSTEM RESET default_transaction_read_only")
            await conn.query("SELECT pg_reload_conf()")

        await self._with_connection(primary, run, STATEMENT_TIMEOUT)

    async def wait_replayed(self, replica: Address, position: int, timeout: float) -> bool:
        """Poll a replica until it has replayed `position`; False if it has not after `timeout` seconds."""
        lsn = sql_literal(format_lsn(position))

        async def run(conn: PgSqlConnection) -> bool:
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                if await conn.query_value(f"SELECT pg_last_wal_replay_lsn() >= {lsn}::pg_lsn") == "t":
                    return True
                if asyncio.get_running_loop().time() >= deadline:
                    return False
                await asyncio.sleep(0.005)

        return await self._with_connection(replica, run, timeout + STATEMENT_TIMEOUT)

    async def renew_lease(self, primary: Address, holder: str, pid: int) -> list[Lease]:
        """Upsert this proxy's promote lease on the primary (the table made if missing); every lease there.
        synchronous_commit = local: a renewal never waits for a synchronous standby."""

        async def run(conn: PgSqlConnection) -> list[Lease]:
            if await conn.query_value(f"SELECT to_regclass({sql_literal(LEASE_TABLE)}) IS NULL") == "t":
                await conn.query(f"CREATE TABLE IF NOT EXISTS {LEASE_TABLE} (holder text PRIMARY KEY, "
                                 "pid integer NOT NULL, renewed_at timestamptz NOT NULL)")
            rows = await conn.query(
                f"SET synchronous_commit = local; INSERT INTO {LEASE_TABLE} VALUES ({sql_literal(holder)}, "
                f"{int(pid)}, clock_timestamp()) ON CONFLICT (holder) DO UPDATE SET pid = EXCLUDED.pid, "
                f"renewed_at = EXCLUDED.renewed_at; {_LEASE_ROWS}")
            return parse_rows(rows)

        return await self._with_connection(primary, run, STATEMENT_TIMEOUT)

    async def read_leases(self, instance: Address) -> list[Lease] | None:
        """The promote leases as replicated to `instance` (none when the table was never made; None when
        the health user may not read it)."""

        async def run(conn: PgSqlConnection) -> list[Lease] | None:
            try:
                return parse_rows(await conn.query(_LEASE_ROWS))
            except QueryFailed as exc:
                if exc.sqlstate == "42P01":   # undefined_table
                    return []
                if exc.sqlstate == "42501":   # insufficient_privilege
                    return None
                raise

        return await self._with_connection(instance, run, STATEMENT_TIMEOUT)

    # ---- connections ----------------------------------------------------------------------------

    async def run(self, address: Address, action: Callable[[PgSqlConnection], Awaitable[T]], timeout: float) -> T:
        """Run `action` over a fresh connection with these credentials (replica discovery uses it too)."""
        return await self._with_connection(address, action, timeout)

    async def _with_connection(self, address: Address, action: Callable[[PgSqlConnection], Awaitable[T]],
                               timeout: float) -> T:
        """Run `action` over a fresh connection; every failure becomes ActionFailed."""
        conn = PgSqlConnection(address, self.user, self.password, self.database, APPLICATION_NAME, self.tls)
        try:
            try:
                await asyncio.wait_for(conn.connect(), CONNECT_TIMEOUT)
            except (OSError, EOFError, ProxyError, TimeoutError) as exc:
                raise ActionFailed(f"{address}: cannot connect: {_describe(exc)}", harmless=True) from exc
            try:
                return await asyncio.wait_for(action(conn), timeout)
            except QueryFailed as exc:
                raise ActionFailed(f"{address}: ERROR {exc.sqlstate}: {exc.message}", harmless=True) from exc
            except TimeoutError as exc:
                raise ActionFailed(f"{address}: no answer after {timeout:g}s") from exc
            except (OSError, EOFError) as exc:
                raise ActionFailed(f"{address}: connection lost: {_describe(exc)}") from exc
        finally:
            conn.close()


async def _setting(conn: PgSqlConnection, name: str) -> str | None:
    """current_setting(name), or None when the role may not read it."""
    try:
        return await conn.query_value(f"SELECT current_setting({sql_literal(name)}, true)")
    except QueryFailed:
        return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ProxyError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, TimeoutError):
        return f"timed out after {CONNECT_TIMEOUT:g}s"
    return str(exc) or type(exc).__name__


def sql_literal(value: str) -> str:
    """A standard SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


# --------------------------------------------------------------------------- conninfo strings

_KEY = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*")


def parse_conninfo(text: str) -> dict[str, str] | None:
    """libpq "key=value key='quoted \\' value'" syntax as a dict (None if it is not that syntax)."""
    params: dict[str, str] = {}
    pos = 0
    text = text.strip()
    while pos < len(text):
        match = _KEY.match(text, pos)
        if match is None:
            return None
        pos = match.end()
        value: list[str] = []
        if text[pos:pos + 1] == "'":
            pos += 1
            while pos < len(text) and text[pos] != "'":
                if text[pos] == "\\" and pos + 1 < len(text):
                    pos += 1
                value.append(text[pos])
                pos += 1
            if pos >= len(text):
                return None   # unterminated quote
            pos += 1
        else:
            while pos < len(text) and not text[pos].isspace():
                if text[pos] == "\\" and pos + 1 < len(text):
                    pos += 1
                value.append(text[pos])
                pos += 1
        params[match.group(1)] = "".join(value)
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return params


def format_conninfo(params: dict[str, str]) -> str:
    """The inverse of parse_conninfo: values quoted when they need it."""
    parts = []
    for key, value in params.items():
        if value == "" or any(c.isspace() or c in "'\\" for c in value):
            value = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
        parts.append(f"{key}={value}")
    return " ".join(parts)


def retarget_conninfo(current: str | None, primary: Address, user: str, application_name: str) -> str:
    """The replica's primary_conninfo pointing at `primary`, other keywords kept (password, sslmode,
    application_name...); built from scratch (host, port, user, application_name) when unknown."""
    params = parse_conninfo(current) if current else None
    if params is None:
        params = {"user": user}
        if application_name:
            params["application_name"] = application_name
    params.pop("hostaddr", None)
    params.pop("service", None)
    params = {"host": primary.host, "port": str(primary.port),
              **{k: v for k, v in params.items() if k not in ("host", "port")}}
    return format_conninfo(params)
