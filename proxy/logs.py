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
# "000" ... "999": the milliseconds of a timestamp (a table lookup costs far less than a format spec).
_MILLIS = tuple(f"{ms:03d}" for ms in range(1000))


class LineFormatter(logging.Formatter):
    """A formatter that can also format a line from its fields, without a LogRecord (see ConnectionLog)."""

    def line(self, created: float, levelname: str, name: str, message: str) -> str:
        raise NotImplementedError

    def format(self, record: logging.LogRecord) -> str:
        line = self.line(record.created, record.levelname, record.name, record.getMessage())
        if record.exc_info:
            line = self.with_exception(line, self.formatException(record.exc_info))
        return line

    def with_exception(self, line: str, text: str) -> str:
        return line + "\n" + text


class TextFormatter(LineFormatter):
    """`2026-11-25 18:42:13,973 INFO dbproxy.client: message`, with the date part formatted once a second."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def line(self, created: float, levelname: str, name: str, message: str) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return f"{self._stamp},{_MILLIS[int((created - second) * 1000)]} {levelname} {name}: {message}"


class JsonFormatter(LineFormatter):
    """One JSON object per line: ts, level, logger, msg (+ exc)."""

    def line(self, created: float, levelname: str, name: str, message: str) -> str:
        second = int(created)
        return json.dumps({
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{_MILLIS[int((created - second) * 1000)]}Z",
            "level": levelname.lower(),
            "logger": name,
            "msg": message,
        })

    def with_exception(self, line: str, text: str) -> str:
        entry = json.loads(line)
        entry["exc"] = text
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
        # Formatted lines, and (created, message, args) of connection lines to format at flush.
        self._lines: list[str | tuple[float, str, tuple[object, ...]]] = []
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
        else:
            self._flush_soon()

    def add_entry(self, created: float, message: str, args: tuple[object, ...]) -> None:
        """A connection line (ConnectionLog's way in), batched like the records above and formatted
        when the batch is written: formatting many lines in a row costs less than one at a time
        between other work."""
        self._lines.append((created, message, args))
        if len(self._lines) >= self.max_lines:
            self.flush()
        else:
            self._flush_soon()

    def _flush_soon(self) -> None:
        if self._timer is None:
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
        text = "\n".join([entry if isinstance(entry, str) else self._format_entry(*entry)
                          for entry in self._lines]) + "\n"
        self._lines.clear()
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed or gone: nothing better to do with the lines
            pass

    def _format_entry(self, created: float, message: str, args: tuple[object, ...]) -> str:
        try:
            text = message % args if args else message
        except (TypeError, ValueError) as exc:   # a bad format argument must not take the batch down
            text = f"{message!r} % {args!r}: {exc}"
        formatter = self.formatter
        return formatter.line(created, "INFO", CONNECTIONS_LOGGER, text) if isinstance(formatter, LineFormatter) else text

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        super().close()


class ConnectionLog:
    """The "client ... connected / disconnected" lines: one of each per client connection.

    With the handler of setup_logging() in place, a line goes straight to its batch (no LogRecord,
    no handler chain: those cost more than the rest of a short connection's login) and is formatted
    when the batch is written, so `args` must be values that do not change (str, int); otherwise,
    or when another handler was added, through `logging` as usual.
    """

    def __init__(self) -> None:
        self.logger = logging.getLogger(CONNECTIONS_LOGGER)

    def info(self, message: str, *args: object) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        handler = _handler
        root = logging.root
        formatter = handler.formatter if handler is not None else None
        if (handler is None or not isinstance(formatter, LineFormatter) or logger.handlers
                or len(root.handlers) != 1 or root.handlers[0] is not handler):
            logger.info(message, *args)
            return
        handler.add_entry(time.time(), message, args)


_handler: BatchingHandler | None = None   # the one installed by setup_logging


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
    global _handler
    _handler = handler
