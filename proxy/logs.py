"""Logging setup: one line per event, as text or JSON, written in batches off the connection path."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import TextIO

# The logger of the per-connection lines ("client ... connected", "... disconnected"): the only
# lines that are batched, since they come with every short-lived client connection.
CONNECTIONS_LOGGER = "dbproxy.connections"
# How long a connection line may wait in memory before it is written.
FLUSH_INTERVAL = 0.05
# Lines kept before writing regardless of the interval.
MAX_BUFFERED_LINES = 512


class TextFormatter(logging.Formatter):
    """`2026-11-25 18:42:13,973 INFO dbproxy.client: message`, with the date part formatted once a second."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        line = f"{self._stamp},{int(record.msecs):03d} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg (+ exc)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class BatchingHandler(logging.Handler):
    """Writes connection lines in batches: a write per line is a syscall on every connect and disconnect.

    INFO and DEBUG lines of CONNECTIONS_LOGGER wait at most FLUSH_INTERVAL (flushed from the running
    event loop). Any other line, a line logged outside an event loop and a full buffer are written at
    once, after the waiting lines (the order of lines is kept).
    """

    def __init__(self, stream: TextIO, interval: float = FLUSH_INTERVAL,
                 max_lines: int = MAX_BUFFERED_LINES) -> None:
        super().__init__()
        self.stream = stream
        self.interval = interval
        self.max_lines = max_lines
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))
        except Exception:  # a bad format argument must not take the caller down
            self.handleError(record)
            return
        if (record.name != CONNECTIONS_LOGGER or record.levelno >= logging.WARNING
                or len(self._lines) >= self.max_lines):
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self.interval, self._flush_from_timer)

    def _flush_from_timer(self) -> None:
        self._timer = None
        self.acquire()
        try:
            self.flush()
        finally:
            self.release()

    def flush(self) -> None:
        if not self._lines:
            return
        text = "\n".join(self._lines) + "\n"
        self._lines.clear()
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: nothing better to do with the lines
            pass

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        super().close()


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    # Skip the per-record stack walk and thread/process lookups: a log line per client
    # connect/disconnect is on the path of every short-lived connection.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BatchingHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
