"""Fault descriptions as people write them: the admin console's FAULT ADD words and the HTTP JSON body.

    FAULT ADD latency 50ms  [ON cluster[/endpoint]] [INSTANCE 'host:port'] [USER name]
                            [MATCH 'regex'] [PROBABILITY 0.1] [FOR 30s]
    FAULT ADD error '40001' [...]        (a SQLSTATE, or a MySQL errno such as '1213')
    FAULT ADD drop | refuse [...]
    FAULT ADD blackhole INSTANCE 'host:port' [ON cluster] [FOR 30s]

The JSON body of POST /faults has the same fields: {"kind": "latency", "latency": "50ms",
"code": "40001", "cluster": "main", "endpoint": "writer", "instance": "host:port", "user": "app",
"match": "^select", "probability": 0.1, "for": "30s"} (durations as strings with a unit or numbers of
seconds). Both give a checked FaultSpec or raise FaultSpecError.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..durations import parse_duration
from .policy import KINDS, FaultSpec, FaultSpecError

_SCOPE_WORDS = ("ON", "INSTANCE", "USER", "MATCH", "PROBABILITY", "FOR")
_JSON_KEYS = frozenset(("kind", "latency", "code", "cluster", "endpoint", "instance", "user", "match",
                        "probability", "for"))


def _duration(text: str, what: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise FaultSpecError(f"{what}: {exc}") from None


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FaultSpecError(f"invalid probability {text!r}: a number in (0, 1]") from None
    if not math.isfinite(value):
        raise FaultSpecError(f"invalid probability {text!r}: a number in (0, 1]")
    return value


def from_words(args: list[str]) -> FaultSpec:
    """The FaultSpec of FAULT ADD's arguments (after ADD); see the module docstring."""
    if not args:
        raise FaultSpecError(f"FAULT ADD needs a kind: {', '.join(KINDS)}")
    kind = args[0].lower()
    if kind not in KINDS:
        raise FaultSpecError(f"unknown fault kind {args[0]!r}: one of {', '.join(KINDS)}")
    fields: dict[str, Any] = {"kind": kind}
    rest = args[1:]
    if kind in ("latency", "error"):
        if not rest or rest[0].upper() in _SCOPE_WORDS:
            raise FaultSpecError("FAULT ADD latency needs a duration (50ms)" if kind == "latency"
                                 else "FAULT ADD error needs a code ('40001' or a MySQL errno)")
        if kind == "latency":
            fields["latency"] = _duration(rest[0], "latency")
        else:
            fields["code"] = rest[0]
        rest = rest[1:]
    seen: set[str] = set()
    while rest:
        word = rest[0].upper()
        if word not in _SCOPE_WORDS:
            raise FaultSpecError(f"unexpected {rest[0]!r}: expected one of {', '.join(_SCOPE_WORDS)}")
        if len(rest) < 2:
            raise FaultSpecError(f"{word} needs a value")
        if word in seen:
            raise FaultSpecError(f"{word} given twice")
        seen.add(word)
        value = rest[1]
        rest = rest[2:]
        if word == "ON":
            cluster, _, endpoint = value.partition("/")
            fields["cluster"] = cluster
            fields["endpoint"] = endpoint or None
        elif word == "INSTANCE":
            fields["instance"] = value
        elif word == "USER":
            fields["user"] = value
        elif word == "MATCH":
            fields["pattern"] = value
        elif word == "PROBABILITY":
            fields["probability"] = _probability(value)
        else:
            fields["duration"] = _duration(value, "FOR")
    return FaultSpec(**fields)


def _text(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise FaultSpecError(f"{key!r} must be a non-empty string")
    return value


def _seconds(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise FaultSpecError(f"{key!r} must be a duration such as \"50ms\" or a number of seconds")
    if isinstance(value, str):
        return _duration(value, key)
    if not math.isfinite(value):
        raise FaultSpecError(f"{key!r} must be finite")
    return float(value)


def from_json(body: object) -> FaultSpec:
    """The FaultSpec of a POST /faults body (decoded JSON); see the module docstring."""
    if not isinstance(body, dict):
        raise FaultSpecError("the body must be a JSON object such as {\"kind\": \"error\", \"code\": \"40001\"}")
    unknown = sorted(set(body) - _JSON_KEYS)
    if unknown:
        raise FaultSpecError(f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_JSON_KEYS))}")
    kind = _text(body, "kind")
    if kind is None:
        raise FaultSpecError(f"'kind' is required: one of {', '.join(KINDS)}")
    probability = body.get("probability", 1.0)
    if isinstance(probability, bool) or not isinstance(probability, (int, float)):
        raise FaultSpecError("'probability' must be a number in (0, 1]")
    code = body.get("code", "")
    if isinstance(code, int) and not isinstance(code, bool):
        code = str(code)
    if not isinstance(code, str):
        raise FaultSpecError("'code' must be a string ('40001') or an errno")
    return FaultSpec(kind=kind.lower(), latency=_seconds(body, "latency") or 0.0, code=code,
                     cluster=_text(body, "cluster"), endpoint=_text(body, "endpoint"),
                     instance=_text(body, "instance"), user=_text(body, "user"), pattern=_text(body, "match"),
                     probability=float(probability), duration=_seconds(body, "for"))
