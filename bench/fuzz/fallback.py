"""Fuzzing without atheris: random and mutated seed inputs for a time budget (no coverage guidance)."""

from __future__ import annotations

import hashlib
import random
import time
import traceback
from pathlib import Path

from bench.fuzz.targets import TARGETS


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if buf and choice < 0.4:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif choice < 0.7:
            buf[rng.randint(0, len(buf)):rng.randint(0, len(buf))] = rng.randbytes(rng.randint(0, 8))
        elif buf:
            del buf[rng.randrange(len(buf)):]
    return bytes(buf)


def fuzz_for(name: str, seconds: float, seeds: Path, crashes: Path) -> tuple[int, str | None]:
    """Run target `name` on inputs for `seconds`; returns (executions, traceback of the first crash or None)."""
    target = TARGETS[name]
    corpus = [p.read_bytes() for p in sorted(seeds.iterdir())] if seeds.is_dir() else []
    corpus = corpus or [b""]
    rng = random.Random(0)
    runs = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        data = _mutate(rng, rng.choice(corpus)) if rng.random() < 0.8 else rng.randbytes(rng.randint(0, 64))
        runs += 1
        try:
            target(data)
        except Exception:  # noqa: BLE001 - a crash: keep its input
            crashes.mkdir(parents=True, exist_ok=True)
            (crashes / f"crash-{hashlib.sha1(data).hexdigest()}").write_bytes(data)
            return runs, traceback.format_exc()
    return runs, None
