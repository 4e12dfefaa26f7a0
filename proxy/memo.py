"""DictMemo: remembers the dicts a pure function made from hashable keys, and hands out copies."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class DictMemo(Generic[K]):
    """`memo(key)` is `make(key)`, computed once per key; every call returns a new dict (callers may
    change theirs). At most `size` keys are kept: when full, the memo starts over. Exceptions from
    `make` pass through and nothing is remembered.

    For what every short-lived connection parses again from the same bytes (startup packets).
    """

    def __init__(self, make: Callable[[K], dict[str, str]], size: int = 256) -> None:
        self._make = make
        self._size = size
        self._known: dict[K, dict[str, str]] = {}

    def __call__(self, key: K) -> dict[str, str]:
        known = self._known.get(key)
        if known is None:
            known = self._make(key)
            if len(self._known) >= self._size:
                self._known.clear()
            self._known[key] = known
        return dict(known)
