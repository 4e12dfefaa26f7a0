"""DictMemo: one computation per key, a fresh copy per call, bounded, failures not remembered."""

from __future__ import annotations

import pytest

from proxy.memo import DictMemo


def test_computes_once_per_key_and_hands_out_copies() -> None:
    calls: list[str] = []

    def make(key: str) -> dict[str, str]:
        calls.append(key)
        return {"key": key}

    memo = DictMemo(make)
    first = memo("a")
    first["key"] = "changed by a caller"
    assert memo("a") == {"key": "a"}
    assert memo("b") == {"key": "b"}
    assert calls == ["a", "b"]


def test_starts_over_when_full() -> None:
    calls: list[int] = []

    def make(key: int) -> dict[str, str]:
        calls.append(key)
        return {}

    memo = DictMemo(make, size=2)
    for key in (1, 2, 1, 3, 1):
        memo(key)
    # 1 and 2 are kept; 3 finds the memo full and starts it over, so 1 is made again.
    assert calls == [1, 2, 3, 1]


def test_failures_pass_through_and_are_not_remembered() -> None:
    attempts: list[str] = []

    def make(key: str) -> dict[str, str]:
        attempts.append(key)
        raise ValueError(f"bad {key}")

    memo = DictMemo(make)
    for _ in range(2):
        with pytest.raises(ValueError, match="bad x"):
            memo("x")
    assert attempts == ["x", "x"]
