"""Fault injection policy (proxy/faults/policy.py, words.py) with a fake clock and seeded RNGs: scopes,
probabilities, expiry, error codes, and the admin / JSON descriptions."""

from __future__ import annotations

import math
import random

import pytest

from proxy.faults.policy import FaultSpec, FaultSpecError, FaultTable, error_codes
from proxy.faults.words import from_json, from_words

ANY = ("latency", "error", "drop")


def spec(**fields: object) -> FaultSpec:
    return FaultSpec(**{"kind": "error", "code": "40001", **fields})  # type: ignore[arg-type]


def fires(table: FaultTable, n: int, rng: random.Random, **event: object) -> int:
    args = {"cluster": "main", "endpoint": "writer", "user": "app", "instance": None, "statement": "select 1",
            **event}
    return sum(table.matches(ANY, now=0.0, rng=rng, **args) is not None for _ in range(n))  # type: ignore[arg-type]


def test_probability_is_honoured_within_four_sigma() -> None:
    table = FaultTable()
    table.add(spec(probability=0.3), now=0.0)
    n = 20000
    count = fires(table, n, random.Random(7))
    assert abs(count - 0.3 * n) <= 4 * math.sqrt(n * 0.3 * 0.7)
    assert table.faults[1].fired == count


def test_seeded_rng_gives_the_same_decisions() -> None:
    def decisions(seed: int) -> list[bool]:
        table = FaultTable()
        table.add(spec(probability=0.5), now=0.0)
        rng = random.Random(seed)
        return [table.matches(ANY, "main", "writer", "app", None, None, 0.0, rng) is not None for _ in range(50)]

    assert decisions(3) == decisions(3)
    assert decisions(3) != decisions(4)


@pytest.mark.parametrize(("scope", "event", "expected"), [
    ({"cluster": "main"}, {}, True),
    ({"cluster": "other"}, {}, False),
    ({"cluster": "main", "endpoint": "reader"}, {}, False),
    ({"cluster": "main", "endpoint": "writer"}, {}, True),
    ({"user": "app"}, {}, True),
    ({"user": "bob"}, {}, False),
    ({"instance": "10.0.0.1:5432"}, {"instance": "10.0.0.1:5432"}, True),
    ({"instance": "10.0.0.1:5432"}, {"instance": "10.0.0.2:5432"}, False),
    ({"pattern": r"^\s*update"}, {"statement": "UPDATE t SET a = 1"}, True),
    ({"pattern": r"^\s*update"}, {"statement": "select 1"}, False),
    ({"pattern": "x"}, {"statement": None}, False),   # a pattern needs a known statement
])
def test_scopes(scope: dict[str, object], event: dict[str, object], expected: bool) -> None:
    table = FaultTable()
    table.add(spec(**scope), now=0.0)
    assert (fires(table, 1, random.Random(1), **event) == 1) is expected


def test_kinds_are_kept_apart_and_the_first_firing_fault_wins() -> None:
    table = FaultTable()
    table.add(FaultSpec("refuse"), now=0.0)
    table.add(FaultSpec("latency", latency=0.05), now=0.0)
    table.add(spec(), now=0.0)
    fault = table.matches(ANY, "main", "writer", "app", None, None, 0.0, random.Random(1))
    assert fault is not None and fault.spec.kind == "latency"
    refuse = table.matches(("refuse",), "main", "writer", "app", None, None, 0.0, random.Random(1))
    assert refuse is not None and refuse.id == 1


def test_expiry_with_a_fake_clock() -> None:
    table = FaultTable()
    table.add(spec(duration=30.0), now=100.0)
    table.add(spec(), now=100.0)
    rng = random.Random(1)
    assert table.matches(ANY, "main", "writer", "app", None, None, 129.9, rng) is not None
    assert [f.id for f in table.expire(129.9)] == []
    first = table.matches(ANY, "main", "writer", "app", None, None, 130.0, rng)
    assert first is not None and first.id == 2   # fault 1 is over even before expire() runs
    assert [f.id for f in table.expire(130.0)] == [1]
    assert list(table.faults) == [2]


def test_blackhole_matches_instance_and_cluster_and_expires() -> None:
    table = FaultTable()
    table.add(FaultSpec("blackhole", instance="10.0.0.1:5432", cluster="main", duration=5.0), now=0.0)
    assert table.blackholed("main", "10.0.0.1:5432", 1.0) is not None
    assert table.blackholed("other", "10.0.0.1:5432", 1.0) is None
    assert table.blackholed("main", "10.0.0.2:5432", 1.0) is None
    assert table.blackholed("main", "10.0.0.1:5432", 5.0) is None
    assert table.blackholed_set("main", ["10.0.0.1:5432", "10.0.0.2:5432"], 1.0) == {"10.0.0.1:5432"}


def test_needs_flags_follow_the_table() -> None:
    table = FaultTable()
    assert not table.needs_statement and not table.needs_instance
    first = table.add(spec(pattern="^select"), now=0.0)
    table.add(spec(instance="h:1"), now=0.0)
    assert table.needs_statement and table.needs_instance
    table.remove(first.id)
    assert not table.needs_statement and table.needs_instance
    table.clear()
    assert not table.needs_instance and len(table) == 0


@pytest.mark.parametrize(("code", "expected"), [
    ("40001", ("40001", 1213)), ("40p01", ("40P01", 1213)), ("1213", ("40001", 1213)),
    ("1062", ("23000", 1062)), ("22012", ("22012", 1105)), ("4025", ("HY000", 4025)),
])
def test_error_codes(code: str, expected: tuple[str, int]) -> None:
    assert error_codes(code) == expected


@pytest.mark.parametrize("code", ["", "4000", "400011", "abc", "0", "-1", "12345x"])
def test_bad_error_codes(code: str) -> None:
    if code == "4000":   # four digits: an errno, fine
        assert error_codes(code) == ("HY000", 4000)
        return
    with pytest.raises(FaultSpecError, match="invalid error code"):
        error_codes(code)


def test_words() -> None:
    s = from_words(["latency", "50ms", "ON", "main/writer", "USER", "app", "MATCH", "^select", "PROBABILITY",
                    "0.25", "FOR", "30s"])
    assert s == FaultSpec("latency", latency=0.05, cluster="main", endpoint="writer", user="app", pattern="^select",
                          probability=0.25, duration=30.0)
    assert s.scope() == "ON main/writer USER app MATCH '^select'" and s.argument() == "50ms"
    assert from_words(["error", "1213", "instance", "h:1"]) == FaultSpec("error", code="1213", instance="h:1")
    assert from_words(["blackhole", "INSTANCE", "h:1", "FOR", "10s"]).duration == 10.0


@pytest.mark.parametrize(("words", "message"), [
    ([], "needs a kind"),
    (["slow"], "unknown fault kind"),
    (["latency"], "needs a duration"),
    (["latency", "ON", "main"], "needs a duration"),
    (["latency", "5"], "no unit"),
    (["latency", "0ms"], "latency must be positive"),
    (["error", "nope"], "invalid error code"),
    (["drop", "PROBABILITY", "1.5"], "probability"),
    (["drop", "PROBABILITY", "0"], "probability"),
    (["drop", "PROBABILITY", "nan"], "probability"),
    (["drop", "FOR"], "needs a value"),
    (["drop", "ON", "a", "ON", "b"], "given twice"),
    (["drop", "WHERE", "x"], "unexpected"),
    (["drop", "MATCH", "("], "invalid statement pattern"),
    (["blackhole"], "INSTANCE"),
    (["blackhole", "INSTANCE", "h:1", "PROBABILITY", "0.5"], "no probability"),
    (["refuse", "MATCH", "x"], "new connections"),
])
def test_bad_words(words: list[str], message: str) -> None:
    with pytest.raises(FaultSpecError, match=message):
        from_words(words)


def test_json() -> None:
    assert from_json({"kind": "latency", "latency": "50ms", "cluster": "main", "probability": 0.5, "for": 30}) == \
        FaultSpec("latency", latency=0.05, cluster="main", probability=0.5, duration=30.0)
    assert from_json({"kind": "error", "code": 1213}).code == "1213"
    assert from_json({"kind": "refuse", "endpoint": "writer", "cluster": "main"}).endpoint == "writer"


@pytest.mark.parametrize(("body", "message"), [
    ([], "JSON object"),
    ({}, "'kind' is required"),
    ({"kind": "drop", "colour": "red"}, "unknown field"),
    ({"kind": "drop", "probability": "high"}, "probability"),
    ({"kind": "drop", "probability": True}, "probability"),
    ({"kind": "latency", "latency": [1]}, "duration"),
    ({"kind": "latency", "latency": float("inf")}, "finite"),
    ({"kind": "drop", "user": 3}, "non-empty string"),
    ({"kind": "drop", "endpoint": "writer"}, "needs its cluster"),
])
def test_bad_json(body: object, message: str) -> None:
    with pytest.raises(FaultSpecError, match=message):
        from_json(body)
