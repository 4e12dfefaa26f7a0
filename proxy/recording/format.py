"""The recording file (SPEC §13): gzip-compressed JSON lines, a versioned header then one event per line.

    {"format": "dbproxy-recording", "version": 1, "engine": "postgres", "cluster": "main" | null,
     "started_at": <unix time>}
    {"t": 0.0123, "s": 17, "e": "open", "u": "app", "d": "app"}      a client session's first statement
    {"t": 0.0125, "s": 17, "e": "q", "q": "BEGIN;", "n": 1}           a statement; "n": 1 when it starts a
                                                                       transaction (none was open on its server)
    {"t": 0.0130, "s": 17, "e": "x", "q": "SELECT $1", "p": ["42"]}   a prepared statement executed (version 2)
    {"t": 0.0901, "s": 17, "e": "close"}                              the client disconnected

Version 2 adds "x" events (PostgreSQL Parse/Bind/Execute): "q" the statement's text (null when it
was prepared before the recording started), "pt" its declared parameter type OIDs, "rf" the result
formats, and with `record_parameters = true` (header "parameters": true) "p" the values (null, the
text, or {"b": base64} for binary-format or non-UTF-8 values) with "pf" their formats; without it,
"np" the number of values left out. A Parse alone is not an event (its text is in the "x").
MySQL COM_STMT_EXECUTEs are "x" events too, with "l": the values as SQL literals (record_parameters).

`t` is seconds since the recording started (monotonic clock), `s` the proxy's id of the client
session (SHOW CLIENTS id), `u`/`d` its user and database. Statements are the texts clients sent
(simple query protocol / COM_QUERY text, MySQL COM_STMT_PREPARE texts without their parameters), with the string literals of those that may set a password masked ('***', as in the
audit log). The file is created with mode 0600. Readers must refuse a version they do not know.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

FORMAT = "dbproxy-recording"
VERSION = 2
READABLE = (1, 2)


class RecordingError(Exception):
    """A recording file that cannot be read (not one, another version, corrupt)."""


@dataclass(frozen=True)
class Header:
    engine: str
    cluster: str | None
    started_at: float
    parameters: bool = False   # record_parameters was on: "x" events carry their values


class RecordingWriter:
    """Appends events to a new recording file (buffered; `flush` writes them out, `close` ends the file)."""

    def __init__(self, path: Path, header: Header) -> None:
        self.path = path
        # O_EXCL: never overwrite an existing file (FileExistsError); 0o600: statements are the clients'
        # data, readable by the proxy's user only. compresslevel 1: cheap for the proxy, still ~10x smaller.
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        raw = os.fdopen(fd, "wb")
        self._raw = raw
        self._file: IO[str] = io.TextIOWrapper(gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1), encoding="utf-8")
        self._pending: list[str] = []
        self.events = 0
        self._line({"format": FORMAT, "version": VERSION, "engine": header.engine, "cluster": header.cluster,
                    "started_at": header.started_at, "parameters": header.parameters})

    def _line(self, event: dict[str, Any]) -> None:
        self._pending.append(json.dumps(event, separators=(",", ":"), ensure_ascii=False))

    def write(self, event: dict[str, Any]) -> None:
        self._line(event)
        self.events += 1
        if len(self._pending) >= 512:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._file.write("\n".join(self._pending) + "\n")
            self._pending.clear()

    def close(self) -> None:
        self.flush()
        self._file.close()   # GzipFile does not close a fileobj it was given
        self._raw.close()


def read_recording(path: Path) -> tuple[Header, Iterator[dict[str, Any]]]:
    """The header and the events of a recording file; raises RecordingError (OSError for I/O)."""
    try:
        handle = gzip.open(path, "rt", encoding="utf-8")  # noqa: SIM115 - closed by the iterator
        first = handle.readline()
        header = json.loads(first) if first else None
    except (gzip.BadGzipFile, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordingError(f"{path} is not a dbproxy recording: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise RecordingError(f"{path} is not a dbproxy recording (no {FORMAT} header)")
    if header.get("version") not in READABLE:
        raise RecordingError(f"{path} is a version {header.get('version')} recording; this dbproxy reads "
                             f"versions {', '.join(map(str, READABLE))}")

    def events() -> Iterator[dict[str, Any]]:
        number = 1
        with handle:
            try:
                for number, line in enumerate(handle, start=2):
                    event = json.loads(line)
                    if not isinstance(event, dict):
                        raise RecordingError(f"{path} line {number}: not an event")
                    yield event
            except json.JSONDecodeError as exc:
                raise RecordingError(f"{path} line {number}: {exc}") from None
            except (EOFError, gzip.BadGzipFile) as exc:   # the proxy stopped without RECORD STOP
                raise RecordingError(f"{path} is truncated after line {number}: {exc}") from None

    return Header(str(header.get("engine")), header.get("cluster"), float(header.get("started_at", 0)),
                  bool(header.get("parameters"))), events()
