"""Log output: connection lines are batched, every other line is written at once, order is kept."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Callable, Iterator

import pytest

from proxy import logs
from proxy.logs import (
    CONNECTIONS_LOGGER,
    FLUSH_INTERVAL,
    BatchingHandler,
    ConnectionLog,
    JsonFormatter,
    TextFormatter,
    setup_logging,
)


class CountingStream(io.StringIO):
    """A StringIO that counts its writes (each would be a syscall on stderr)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


Install = Callable[[str, str], "CountingStream"]


@pytest.fixture
def stream() -> Iterator[CountingStream]:
    stream = CountingStream()
    handler = BatchingHandler(stream)
    handler.setFormatter(TextFormatter())
    loggers = [logging.getLogger(name) for name in (CONNECTIONS_LOGGER, "dbproxy.test")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    yield stream
    for logger in loggers:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
    handler.close()


def test_outside_an_event_loop_every_line_is_written_at_once(stream: CountingStream) -> None:
    logging.getLogger(CONNECTIONS_LOGGER).info("client %s connected", "1.2.3.4:5")
    assert stream.getvalue().endswith(" INFO dbproxy.connections: client 1.2.3.4:5 connected\n")
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO ", stream.getvalue())


async def test_connection_lines_are_batched_within_the_interval(stream: CountingStream) -> None:
    connections = logging.getLogger(CONNECTIONS_LOGGER)
    for i in range(100):
        connections.info("client %d connected", i)
    assert stream.getvalue() == ""
    await asyncio.sleep(FLUSH_INTERVAL * 3)
    lines = stream.getvalue().splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == [f"client {i} connected" for i in range(100)]
    assert stream.writes == 1


async def test_other_lines_flush_the_waiting_ones_first(stream: CountingStream) -> None:
    logging.getLogger(CONNECTIONS_LOGGER).info("client 1 connected")
    logging.getLogger("dbproxy.test").info("configuration reloaded")
    logging.getLogger(CONNECTIONS_LOGGER).warning("a warning is not kept waiting")
    messages = [line.split(": ", 1)[1] for line in stream.getvalue().splitlines()]
    assert messages == ["client 1 connected", "configuration reloaded", "a warning is not kept waiting"]


async def test_a_bad_format_argument_does_not_raise(stream: CountingStream,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logging, "raiseExceptions", False)
    logging.getLogger(CONNECTIONS_LOGGER).info("client %d connected", "not a number")
    logging.getLogger("dbproxy.test").info("next line")
    assert stream.getvalue().endswith("next line\n")


def test_json_lines() -> None:
    record = logging.LogRecord("dbproxy.x", logging.ERROR, __file__, 1, "bad %s", ("thing",), None)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "error" and entry["logger"] == "dbproxy.x" and entry["msg"] == "bad thing"
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", entry["ts"])


@pytest.fixture
def installed() -> Iterator[Callable[[str, str], CountingStream]]:
    """setup_logging() writing to a CountingStream; the root logger's handlers are put back after."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level

    def install(fmt: str, level: str) -> CountingStream:
        # Called from the test itself: pytest puts its own sys.stderr back between setup and call.
        stream = CountingStream()
        root.handlers[:] = []
        setup_logging(fmt, level)
        assert logs._handler is not None
        logs._handler.stream = stream
        return stream

    yield install
    for handler in root.handlers:
        handler.close()
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    logs._handler = None


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_connection_lines_look_like_every_other_line(installed: Install, fmt: str) -> None:
    stream = installed(fmt, "info")
    ConnectionLog().info("client %s connected: user=%s", "127.0.0.1:5", "app")   # the direct path
    logging.getLogger(CONNECTIONS_LOGGER).info("client %s disconnected", "127.0.0.1:5")   # via logging
    first, second = stream.getvalue().splitlines()
    if fmt == "json":
        a, b = json.loads(first), json.loads(second)
        assert (a["level"], a["logger"], a["msg"]) == ("info", CONNECTIONS_LOGGER, "client 127.0.0.1:5 connected: user=app")
        assert (b["level"], b["logger"]) == ("info", CONNECTIONS_LOGGER) and a.keys() == b.keys()
    else:
        pattern = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO dbproxy\.connections: client 127\.0\.0\.1:5 "
        assert re.match(pattern + "connected: user=app$", first), first
        assert re.match(pattern + "disconnected$", second), second


def test_connection_lines_respect_the_level(installed: Install) -> None:
    stream = installed("text", "warning")
    ConnectionLog().info("client %s connected", "127.0.0.1:5")
    logging.getLogger("dbproxy.test").warning("a warning")
    assert stream.getvalue().splitlines()[-1].endswith("WARNING dbproxy.test: a warning")
    assert "connected" not in stream.getvalue()


def test_connection_lines_reach_any_other_handler(installed: Install) -> None:
    """With another handler attached (a user's, a test's), the line goes through logging to both."""
    stream = installed("text", "info")
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    extra = Collect()
    logger = logging.getLogger(CONNECTIONS_LOGGER)
    logger.addHandler(extra)
    try:
        ConnectionLog().info("client %s connected", "127.0.0.1:5")
    finally:
        logger.removeHandler(extra)
    assert seen == ["client 127.0.0.1:5 connected"]
    assert stream.getvalue().endswith("INFO dbproxy.connections: client 127.0.0.1:5 connected\n")
