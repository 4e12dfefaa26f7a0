"""CPU accounting per pgbench run: how busy the machine was, and how much of that was not the benchmark."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds so far: the machine's (by kind, from /proc/stat) and the benchmark processes'."""

    tasks: float  # user + nice + system: time charged to processes (ours and others)
    irq: float  # irq + softirq (loopback TCP is largely softirq work, charged to no process)
    steal: float  # the hypervisor ran something else while this VM wanted the CPU
    ours: float
    # Every other live process: pid -> (command, its own CPU seconds). Reaped children are left
    # out: a parent reaping a long-lived child would look like a sudden burst.
    others: dict[int, tuple[str, float]]


@dataclass(frozen=True)
class CpuUsage:
    """Between two samples, in cores busy on average: all, not the benchmark's, interrupts, stolen."""

    busy_cores: float
    other_cores: float
    irq_cores: float
    steal_cores: float
    top_others: str  # the busiest other processes, e.g. "pytest 0.41, postgres 0.05"

    def to_json(self) -> dict[str, float | str]:
        return {
            "busy_cores": round(self.busy_cores, 2),
            "other_cores": round(self.other_cores, 2),
            "irq_cores": round(self.irq_cores, 2),
            "steal_cores": round(self.steal_cores, 2),
            "top_others": self.top_others,
        }


def _machine() -> tuple[float, float, float]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    fields += [0] * (8 - len(fields))
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]  # guest is inside user
    return (user + nice + system) / _TICK, (irq + softirq) / _TICK, steal / _TICK


def _process_table() -> dict[int, tuple[str, list[str]]]:
    """pid -> (command, the /proc/<pid>/stat fields after the command) for every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            head, tail = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)
        except (OSError, ValueError):
            continue
        table[int(entry)] = (head.split("(", 1)[-1], tail.split())
    return table


def _seconds(fields: list[str], first: int, last: int) -> float:
    return sum(int(x) for x in fields[first:last]) / _TICK


def sample(roots: Iterable[int]) -> CpuSample:
    """Machine-wide busy time, and the CPU time of ``roots`` and all their descendants (live or reaped).

    Pass this process (its reaped children, pgbench and psql, are in its cutime), the poolers and
    each postmaster (backends that exited are in the postmaster's cutime, live ones are walked).
    """
    tasks, irq, steal = _machine()
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (_, fields) in table.items():
        children.setdefault(int(fields[1]), []).append(pid)
    ours = 0.0
    seen: set[int] = set()
    stack = [pid for pid in roots if pid in table]
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        ours += _seconds(table[pid][1], 11, 15)  # utime stime cutime cstime
        stack.extend(children.get(pid, ()))
    others = {
        pid: (comm, _seconds(fields, 11, 13)) for pid, (comm, fields) in table.items() if pid not in seen
    }
    return CpuSample(tasks, irq, steal, ours, others)


def process_seconds(pid: int) -> float | None:
    """CPU seconds (user + system, all its threads) one process has used so far; None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return _seconds(fields, 11, 13)


def tree_seconds(pid: int) -> float | None:
    """CPU seconds of one process and all its descendants (dbproxy's workers), live or reaped; None if gone."""
    if process_seconds(pid) is None:
        return None
    return sample([pid]).ours


def usage(before: CpuSample, after: CpuSample, seconds: float) -> CpuUsage:
    if seconds <= 0:
        return CpuUsage(0.0, 0.0, 0.0, 0.0, "")
    tasks = after.tasks - before.tasks
    irq = after.irq - before.irq
    steal = after.steal - before.steal
    other = max(0.0, tasks - (after.ours - before.ours))
    by_command: dict[str, float] = {}
    for pid, (comm, used) in after.others.items():
        delta = used - before.others[pid][1] if pid in before.others else used
        by_command[comm] = by_command.get(comm, 0.0) + delta
    top = sorted(by_command.items(), key=lambda item: -item[1])[:3]
    top_others = ", ".join(f"{comm} {used / seconds:.2f}" for comm, used in top if used / seconds >= 0.01)
    return CpuUsage((tasks + irq) / seconds, other / seconds, irq / seconds, steal / seconds, top_others)
