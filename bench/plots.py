"""The benchmark report's PNG plots (matplotlib, no display): TPS bars, latency CDFs, memory, failover."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"direct": "#7f7f7f", "pgbouncer": "#1f77b4", "dbproxy": "#ff7f0e", "dbproxy-w": "#d62728"}


def color(target: str) -> str:
    if target.startswith("dbproxy-w") and target != "dbproxy-w1":
        return COLORS["dbproxy-w"]
    return COLORS["dbproxy"] if target.startswith("dbproxy") else COLORS.get(target, "#2ca02c")


def grouped_bars(path: Path, title: str, ylabel: str, groups: Sequence[str], targets: Sequence[str],
                 values: Mapping[tuple[str, str], float | None]) -> None:
    """One group of bars per scenario (``groups``), one bar per target; missing values are left out."""
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(groups) + 2), 4.2))
    width = 0.8 / max(1, len(targets))
    for i, target in enumerate(targets):
        xs = [g + (i - (len(targets) - 1) / 2) * width for g in range(len(groups))]
        ys = [values.get((group, target)) for group in groups]
        ax.bar([x for x, y in zip(xs, ys, strict=True) if y is not None],
               [y for y in ys if y is not None], width, label=target, color=color(target))
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latency_cdfs(path: Path, title: str, panels: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]]) -> None:
    """One panel per client count: each target's latency CDF (log x axis, us)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 4.2), squeeze=False)
    for ax, (panel, curves) in zip(axes[0], panels.items(), strict=True):
        for target, points in curves.items():
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], label=target, color=color(target))
        ax.set_xscale("log")
        ax.set_xlabel("transaction latency (us, log scale)")
        ax.set_ylabel("fraction of transactions")
        ax.set_title(panel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def failover_timeline(path: Path, title: str, run: Mapping[str, Any]) -> None:
    """Each write of a failover drill run: latency against start time (ms since the kill); errors in red,
    the proxy's events as vertical lines."""
    fig, ax = plt.subplots(figsize=(9.0, 4.2))
    ok = [(w[0], w[1]) for w in run["writes"] if w[2] is None]
    bad = [(w[0], w[1]) for w in run["writes"] if w[2] is not None]
    ax.scatter([p[0] for p in ok], [max(p[1], 0.01) for p in ok], s=4, color="#1f77b4", label="acknowledged write")
    if bad:
        ax.scatter([p[0] for p in bad], [max(p[1], 0.01) for p in bad], s=14, color="#d62728", marker="x",
                   label="write that got an error")
    for name, key in (("detected", "detected"), ("promoted", "promoted"), ("writer changed", "writer_changed")):
        at = run.get(key)
        if at is not None:
            ax.axvline(at, linestyle="--", color="#555555", linewidth=0.8)
            ax.text(at, 1, f" {name}", rotation=90, fontsize=7, va="bottom")
    ax.axvline(0, color="black", linewidth=1)
    ax.text(0, 1, " kill -9", rotation=90, fontsize=7, va="bottom")
    ax.set_yscale("log")
    ax.set_xlabel("ms since the primary was killed (write start)")
    ax.set_ylabel("write latency (ms, log scale)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
