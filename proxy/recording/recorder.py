"""Recording client traffic in the proxy (RECORD START / STOP, SHOW RECORDING): the statement hooks and the file.

A recording rides on the session's statement hook (`statement_audit`, called for every client
statement and otherwise None): while one runs, the sessions it covers (one cluster's, or all) get
a hook that writes the statement (and still calls the audit log's, if that is on). Prepared
executions come from the session's prepared tap (pg_prepared.py, mysql_prepared.py), which
`install_hooks` shares between the recording and the cluster's mirror. Writes are
buffered and flushed every 512 events and once a second (ProxyApp's maintenance), so a recording
costs the relay one JSON line per statement and nothing when none runs.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..audit import mask_secrets
from .format import Header, RecordingWriter
from .mysql_prepared import MysqlBound, MysqlTap
from .pg_prepared import Bound, PgTap

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..core.app_view import AppView
    from ..core.session import ClientSessionCore

log = logging.getLogger("dbproxy.recording")

StatementHook = Callable[["ClientSessionCore", bytes], None]


class RecordingRefused(Exception):
    """RECORD START cannot start (one runs, unknown cluster, mixed engines, file exists)."""


class Recorder:
    """One recording in progress; see the module docstring and format.py."""

    def __init__(self, path: Path, cluster: str | None, engine: str,
                 clock: Callable[[], float] = time.monotonic, parameters: bool = False) -> None:
        self.path = path
        self.parameters = parameters   # [server] record_parameters: the values of prepared executions
        self.cluster = cluster
        self.engine = engine
        self._clock = clock
        self.started = clock()
        self.started_at = time.time()
        self.writer = RecordingWriter(path, Header(engine, cluster, self.started_at, parameters))
        self._open: set[int] = set()
        self.sessions = 0
        self.statements = 0

    def covers(self, session: ClientSessionCore) -> bool:
        return self.cluster is None or session.cluster.name == self.cluster

    def _event(self, session: ClientSessionCore, kind: str) -> dict[str, Any]:
        at = round(self._clock() - self.started, 6)
        sid = session.pid
        if sid not in self._open:
            self._open.add(sid)
            self.sessions += 1
            self.writer.write({"t": at, "s": sid, "e": "open", "u": session.user_name, "d": session.database})
        return {"t": at, "s": sid, "e": kind}

    def _write(self, session: ClientSessionCore, event: dict[str, Any]) -> None:
        server = session.server
        if server is None or not server.in_transaction:
            event["n"] = 1   # starts a transaction
        self.writer.write(event)
        self.statements += 1

    def statement(self, session: ClientSessionCore, sql: bytes) -> None:
        event = self._event(session, "q")
        # as in the audit log: no password in the file (ALTER ROLE … PASSWORD '…' replays with '***')
        event["q"] = mask_secrets(sql).decode("utf-8", "replace")
        self._write(session, event)

    def execution(self, session: ClientSessionCore, bound: Bound) -> None:
        """A prepared statement's execution (PostgreSQL Execute): "x" events, see format.py."""
        execution = bound.execution()
        if execution is None:   # a malformed Bind: the server refused it, and this Execute with it
            return
        event = self._event(session, "x")
        query = execution.query
        event["q"] = None if query is None else mask_secrets(query).decode("utf-8", "replace")
        if any(execution.types):
            event["pt"] = list(execution.types)
        if any(execution.result_formats):
            event["rf"] = list(execution.result_formats)
        if self.parameters:
            if any(execution.formats):
                event["pf"] = list(execution.formats)
            event["p"] = [_value(v, f) for v, f in zip(execution.values, execution.formats, strict=True)]
        else:
            event["np"] = len(execution.values)   # how many values were left out
        self._write(session, event)

    def closed(self, session: ClientSessionCore) -> None:
        if session.pid in self._open:
            self._open.discard(session.pid)
            self.writer.write({"t": round(self._clock() - self.started, 6), "s": session.pid, "e": "close"})

    def stop(self) -> None:
        self.writer.close()

    def row(self) -> dict[str, Any]:
        return {"file": str(self.path), "cluster": self.cluster or "(all)", "engine": self.engine,
                "seconds": round(self._clock() - self.started, 3), "sessions": self.sessions,
                "statements": self.statements}


    def mysql_execution(self, session: ClientSessionCore, bound: MysqlBound) -> None:
        """A MySQL COM_STMT_EXECUTE: "x" with the values as SQL literals ("l"), see format.py."""
        event = self._event(session, "x")
        event["q"] = mask_secrets(bound.sql).decode("utf-8", "replace")
        values = bound.values() if self.parameters else None
        if values is not None:
            event["l"] = values
        else:
            event["np"] = bound.count
        self._write(session, event)


def _value(value: bytes | None, fmt: int) -> str | dict[str, str] | None:
    """A parameter value in the file: null, its text (text format, UTF-8), or {"b": base64 of its bytes}."""
    if value is None:
        return None
    if fmt == 0:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b": base64.b64encode(value).decode("ascii")}


def install_hooks(session: ClientSessionCore, audit: AuditLog | None, recorder: Recorder | None) -> None:
    """Set the session's statement hook and its prepared tap: on while a recording covers the session or
    its cluster mirrors (each gets the prepared executions), None otherwise (the relay pays nothing)."""
    session.statement_audit = statement_hook(session, audit, recorder)
    mysql = session.cluster.config.engine == "mysql"
    sinks: list[Any] = []
    if recorder is not None and recorder.covers(session):
        sinks.append(recorder.mysql_execution if mysql else recorder.execution)
    mirror = session.cluster.mirror
    if mirror is not None:
        sinks.append(mirror.mysql_execution if mysql else mirror.execution)
    if not sinks:
        session.prepared_tap = None
        return
    logged = audit.statement if audit is not None and audit.kinds else None
    tap = session.prepared_tap
    kind = MysqlTap if mysql else PgTap
    if isinstance(tap, kind):   # kept: it knows the statements the client prepared so far
        tap.sinks = tuple(sinks)
        tap.audit = logged
    else:
        session.prepared_tap = kind(session, tuple(sinks), logged)


def statement_hook(session: ClientSessionCore, audit: AuditLog | None, recorder: Recorder | None) -> StatementHook | None:
    """The session's statement hook: the audit log's, the recording's, the cluster's mirror's, all, or None."""
    hooks: list[StatementHook] = []
    if audit is not None and audit.kinds:
        hooks.append(audit.statement)
    if recorder is not None and recorder.covers(session):
        hooks.append(recorder.statement)
    if session.cluster.mirror is not None:
        hooks.append(session.cluster.mirror.statement)
    if len(hooks) <= 1:
        return hooks[0] if hooks else None

    def every(s: ClientSessionCore, sql: bytes) -> None:
        for hook in hooks:
            hook(s, sql)

    return every


def start(app: AppView, path: Path, cluster: str | None) -> Recorder:
    """RECORD START: raises RecordingRefused with the reason."""
    if app.recording is not None:
        raise RecordingRefused(f"a recording to {app.recording.path} is running: RECORD STOP first")
    if cluster is not None and cluster not in app.clusters:
        raise RecordingRefused(f"no cluster named {cluster!r} (clusters: {', '.join(app.clusters) or 'none'})")
    engines = {c.config.engine for name, c in app.clusters.items() if cluster is None or name == cluster}
    if len(engines) != 1:
        raise RecordingRefused("the clusters use both engines: name the cluster to record")
    try:
        recorder = Recorder(path, cluster, engines.pop(), parameters=app.config.server.record_parameters)
    except FileExistsError:
        raise RecordingRefused(f"{path} exists: a recording never overwrites a file") from None
    except OSError as exc:
        raise RecordingRefused(f"cannot create {path}: {exc.strerror or exc}") from None
    app.recording = recorder
    for session in app.sessions:
        install_hooks(session, app.audit, recorder)
    log.info("recording %s to %s", f"cluster {cluster}" if cluster else "every cluster", path)
    return recorder


def stop(app: AppView) -> Recorder | None:
    """RECORD STOP: the recording that was running (closed), or None."""
    recorder = app.recording
    if recorder is None:
        return None
    app.recording = None
    for session in app.sessions:
        install_hooks(session, app.audit, None)
    recorder.stop()
    log.info("recording to %s stopped: %d sessions, %d statements", recorder.path, recorder.sessions,
             recorder.statements)
    return recorder
