"""Parsing and formatting of the human-written durations ("500ms", "5m") and sizes ("16MB") used in config."""

from __future__ import annotations

import math
import re

_DURATION_UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE_UNITS: dict[str, int] = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}

_DURATION_RE = re.compile(r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[a-zA-Z]*)")
_SIZE_RE = re.compile(r"(?P<number>\d+)\s*(?P<unit>[a-zA-Z]*)")


def parse_duration(text: str) -> float:
    """Return the number of seconds in a duration such as "500ms", "2s", "1.5m" or "1h".

    A unit is mandatory: a bare "5" is rejected because it is ambiguous (seconds? milliseconds?).
    Raises ValueError with a message meant for the user.
    """
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f'invalid duration "{text}": expected a number and a unit, e.g. "500ms", "2s", "5m", "1h"'
        )
    unit = match["unit"]
    if not unit:
        raise ValueError(
            f'duration "{text}" has no unit: write e.g. "{match["number"]}s" or "{match["number"]}ms"'
        )
    if unit not in _DURATION_UNITS:
        raise ValueError(f'duration "{text}" has an unknown unit "{unit}": use ms, s, m or h')
    return float(match["number"]) * _DURATION_UNITS[unit]


def parse_size(text: str) -> int:
    """Return the number of bytes in a size such as "512B", "64KB", "16MB" or "1GB" (1024-based).

    Units are case-insensitive; a unit is mandatory. Raises ValueError with a message meant for the user.
    """
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f'invalid size "{text}": expected a whole number and a unit, e.g. "16MB"')
    unit = match["unit"].lower()
    if not unit:
        raise ValueError(
            f'size "{text}" has no unit: write e.g. "{match["number"]}B" or "{match["number"]}KB"'
        )
    if unit not in _SIZE_UNITS:
        raise ValueError(f'size "{text}" has an unknown unit "{match["unit"]}": use B, KB, MB or GB')
    return int(match["number"]) * _SIZE_UNITS[unit]


def format_duration(seconds: float) -> str:
    """Render seconds in the largest unit that represents them exactly: 0.5 -> "500ms", 300 -> "5m"."""
    if seconds == 0:
        return "0s"
    if seconds >= 1 and float(seconds).is_integer():
        whole = int(seconds)
        if whole % 3600 == 0:
            return f"{whole // 3600}h"
        if whole % 60 == 0:
            return f"{whole // 60}m"
        return f"{whole}s"
    millis = round(seconds * 1000, 6)
    if math.isclose(millis, round(millis)):
        return f"{round(millis)}ms"
    return f"{millis:g}ms"


def format_size(size: int) -> str:
    """Render bytes in the largest unit that represents them exactly: 16777216 -> "16MB"."""
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"
