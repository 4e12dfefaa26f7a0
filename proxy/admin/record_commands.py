"""The admin console's recording commands (SPEC §13): RECORD START 'file' [cluster], RECORD STOP, SHOW RECORDING.

A relative file name is taken from the configuration file's directory; an existing file is never
overwritten. `dbproxy replay FILE --target HOST:PORT` plays a recording back (proxy/recording/replay.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..recording import recorder
from .commands import AdminError, Done, Result
from .resultset import Table

if TYPE_CHECKING:
    from ..core.app_view import AppView as ProxyApp

RECORDING_COLUMNS = [("file", "text"), ("cluster", "text"), ("engine", "text"), ("seconds", "float"),
                     ("sessions", "int"), ("statements", "int")]


async def record(app: ProxyApp, args: list[str]) -> Result:
    verb = args[0].upper() if args else ""
    if verb == "START" and len(args) in (2, 3):
        path = Path(args[1])
        if not path.is_absolute():
            path = Path(app.config.path).resolve().parent / path
        try:
            started = recorder.start(app, path, args[2] if len(args) == 3 else None)
        except recorder.RecordingRefused as exc:
            raise AdminError("55000", f"RECORD START: {exc}") from None
        return Done("RECORD", f"recording {started.cluster or 'every cluster'} to {started.path}")
    if verb == "STOP" and len(args) == 1:
        stopped = recorder.stop(app)
        if stopped is None:
            raise AdminError("55000", "no recording is running")
        return Done("RECORD", f"recording to {stopped.path} stopped: {stopped.sessions} session(s), "
                              f"{stopped.statements} statement(s)")
    raise AdminError("42601", "usage: RECORD START 'file' [cluster] | RECORD STOP")


def show_recording(app: ProxyApp) -> Table:
    running = app.recording
    return Table.of(RECORDING_COLUMNS, [] if running is None else [tuple(running.row().values())])
