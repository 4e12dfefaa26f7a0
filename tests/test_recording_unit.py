"""Recording file format (proxy/recording/format.py) and replay planning (plan.py): round trip, refusals,
scripts per session, peak concurrency, percentiles."""

from __future__ import annotations

import gzip
import json
import os
import stat
from pathlib import Path

import pytest

from proxy.recording.format import Header, RecordingError, RecordingWriter, read_recording
from proxy.recording.plan import build_scripts, due, peak_concurrency, percentile, progress_bar

EVENTS = [
    {"t": 0.0, "s": 1, "e": "open", "u": "app", "d": "app"},
    {"t": 0.0, "s": 1, "e": "q", "q": "BEGIN", "n": 1},
    {"t": 0.5, "s": 2, "e": "open", "u": "bob", "d": "shop"},
    {"t": 0.5, "s": 2, "e": "q", "q": "SELECT 1", "n": 1},
    {"t": 0.7, "s": 1, "e": "q", "q": "COMMIT"},
    {"t": 0.8, "s": 1, "e": "close"},
    {"t": 2.0, "s": 3, "e": "open", "u": "app", "d": "app"},
    {"t": 2.0, "s": 3, "e": "q", "q": "SELECT 3", "n": 1},
    {"t": 2.5, "s": 2, "e": "close"},
    {"t": 2.6, "s": 9, "e": "future-kind"},
]


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "r.gz"
    writer = RecordingWriter(path, Header("postgres", "main", 123.0))
    for event in EVENTS:
        writer.write(event)
    writer.close()
    header, events = read_recording(path)
    assert header == Header("postgres", "main", 123.0)
    assert list(events) == EVENTS
    with pytest.raises(FileExistsError):
        RecordingWriter(path, Header("postgres", None, 0.0))
    assert list(read_recording(path)[1]) == EVENTS   # the refused writer left the file alone


def test_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)   # the usual umask, which gzip.open would turn into 0644
    try:
        path = tmp_path / "private.gz"
        RecordingWriter(path, Header("postgres", "main", 1.0)).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_recording(path)[0] == Header("postgres", "main", 1.0)


def test_refusals(tmp_path: Path) -> None:
    other = tmp_path / "v2.gz"
    with gzip.open(other, "wt") as f:
        f.write(json.dumps({"format": "dbproxy-recording", "version": 3}) + "\n")
    with pytest.raises(RecordingError, match="version 3 recording"):
        read_recording(other)
    plain = tmp_path / "plain.gz"
    plain.write_text("hello")
    with pytest.raises(RecordingError, match="not a dbproxy recording"):
        read_recording(plain)
    foreign = tmp_path / "foreign.gz"
    with gzip.open(foreign, "wt") as f:
        f.write('{"hello": 1}\n')
    with pytest.raises(RecordingError, match="no dbproxy-recording header"):
        read_recording(foreign)
    truncated = tmp_path / "truncated.gz"
    writer = RecordingWriter(truncated, Header("mysql", None, 0.0))
    for i in range(2000):
        writer.write({"t": i, "s": 1, "e": "q", "q": f"SELECT {i} /* {'x' * 50} */"})
    writer.close()
    truncated.write_bytes(truncated.read_bytes()[:-200])
    _, events = read_recording(truncated)
    with pytest.raises(RecordingError, match="truncated"):
        list(events)


def test_scripts() -> None:
    scripts = build_scripts(EVENTS)
    assert [(s.sid, s.user, s.database, s.opened_at, s.closed_at) for s in scripts] == [
        (1, "app", "app", 0.0, 0.8), (2, "bob", "shop", 0.5, 2.5), (3, "app", "app", 2.0, None)]
    assert [(step.sql, step.starts_transaction) for step in scripts[0].steps] == [("BEGIN", True), ("COMMIT", False)]
    assert peak_concurrency(scripts) == 2   # 1 closes at 0.8, before 3 opens
    assert due(2.0, 4.0) == 0.5


def test_percentile_and_progress() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([], 50) == 0.0
    assert progress_bar(5, 10, 1, width=10) == "[#####.....]  50% 5/10 statements, 1 errors"
