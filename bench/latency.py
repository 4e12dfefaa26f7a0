"""Per-transaction latencies from pgbench --log files: reading them, percentiles, CDF points."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np


def log_args(prefix: Path) -> tuple[str, ...]:
    """pgbench options that write one line per transaction to files named ``prefix``.<pid>[.<thread>]."""
    return ("--log", f"--log-prefix={prefix}")


def read_latencies(prefix: Path) -> list[float]:
    """Every transaction's latency in microseconds from the files a pgbench run wrote with log_args(prefix).

    A line is "client_id transaction_no time script_no time_epoch time_us [...]"; time is the transaction's
    elapsed time in us. Failed transactions (time written as "failed" or "skipped") are left out.
    """
    latencies: list[float] = []
    for path in sorted(prefix.parent.glob(prefix.name + ".*")):
        with path.open() as file:
            for line in file:
                fields = line.split()
                if len(fields) >= 3 and fields[2].isdigit():
                    latencies.append(float(fields[2]))
    return latencies


def remove_logs(prefix: Path) -> None:
    for path in prefix.parent.glob(prefix.name + ".*"):
        path.unlink()


def percentiles(latencies: Sequence[float], points: Iterable[float] = (50, 90, 99, 99.9)) -> dict[str, float]:
    """{"p50": us, ...}; empty when there are no latencies."""
    if not latencies:
        return {}
    values = np.percentile(np.asarray(latencies, dtype=float), list(points))
    return {f"p{point:g}": round(float(value), 1) for point, value in zip(points, values, strict=True)}


def cdf_points(latencies: Sequence[float], count: int = 200) -> list[tuple[float, float]]:
    """(latency us, fraction of transactions at or below it) at ``count`` quantiles, for a CDF plot."""
    if not latencies:
        return []
    fractions = np.linspace(0.0, 1.0, count)
    values = np.quantile(np.asarray(latencies, dtype=float), fractions)
    return [(round(float(v), 1), round(float(f), 4)) for v, f in zip(values, fractions, strict=True)]
