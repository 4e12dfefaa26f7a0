"""Many idle PostgreSQL clients held open for the benchmark, and the memory of a process tree.

`python -m bench.idle --port P --clients N --user U --password PW --database D` opens N connections
(startup + md5 or trust login, waiting for ReadyForQuery), prints "ready N SECONDS" on stdout, and
holds them until its stdin is closed. A raw asyncio client, not a driver: a driver's per-connection
objects would dominate the holder's own memory and the login time at 10,000 connections.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PROTOCOL_3 = 196608


class LoginFailed(Exception):
    pass


async def open_idle(host: str, port: int, user: str, password: str, database: str) -> asyncio.StreamWriter:
    """One logged-in connection (md5 or trust), idle at ReadyForQuery."""
    reader, writer = await asyncio.open_connection(host, port)
    body = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in (("user", user), ("database", database)))
    body = struct.pack("!i", PROTOCOL_3) + body + b"\0"
    writer.write(struct.pack("!i", len(body) + 4) + body)
    while True:
        kind = await reader.readexactly(1)
        (length,) = struct.unpack("!i", await reader.readexactly(4))
        payload = await reader.readexactly(length - 4)
        if kind == b"E":
            raise LoginFailed(payload.decode(errors="replace"))
        if kind == b"R":
            (code,) = struct.unpack("!i", payload[:4])
            if code == 5:  # MD5Password with a 4-byte salt
                inner = hashlib.md5((password + user).encode()).hexdigest()
                answer = "md5" + hashlib.md5(inner.encode() + payload[4:8]).hexdigest()
                data = answer.encode() + b"\0"
                writer.write(b"p" + struct.pack("!i", len(data) + 4) + data)
            elif code != 0:
                raise LoginFailed(f"authentication method {code} is not supported by bench.idle")
        elif kind == b"Z":
            return writer


async def hold(host: str, port: int, user: str, password: str, database: str, clients: int,
               concurrency: int) -> None:
    began = time.monotonic()
    gate = asyncio.Semaphore(concurrency)

    async def one() -> asyncio.StreamWriter:
        async with gate:
            return await open_idle(host, port, user, password, database)

    writers = await asyncio.gather(*(one() for _ in range(clients)))
    print(f"ready {len(writers)} {time.monotonic() - began:.2f}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes
    for writer in writers:
        writer.close()


@dataclass(frozen=True)
class ProcessMemory:
    """One process's memory from /proc/PID/smaps_rollup, in bytes.

    rss counts every resident page the process maps, shared ones included (summed over processes
    that share pages, such as workers forked from one template, it counts those pages once per
    process); pss divides each shared page among the processes that map it (summed over a process
    tree: what the tree costs the machine, each page once); uss is the private pages alone.
    """

    pid: int
    name: str
    rss: int
    pss: int
    uss: int


def tree_pids(root: int) -> list[int]:
    """``root`` and every descendant process (by parent pid, from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def process_memory(pid: int) -> ProcessMemory | None:
    """The memory of one process (None if it is gone)."""
    fields: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, _, value = line.partition(":")
            fields[key] = int(value.split()[0]) * 1024
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return ProcessMemory(pid, name, fields.get("Rss", 0), fields.get("Pss", 0),
                         fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0))


def tree_memory(root: int) -> list[ProcessMemory]:
    """The memory of ``root`` and every descendant process."""
    return [m for m in map(process_memory, tree_pids(root)) if m is not None]


def tree_rss_bytes(root: int) -> int:
    """Resident memory of ``root`` and every descendant process (VmRSS summed), in bytes."""
    return sum(m.rss for m in tree_memory(root))


def tree_pss_bytes(root: int) -> int:
    """Proportional set size of ``root`` and every descendant (shared pages counted once), in bytes."""
    return sum(m.pss for m in tree_memory(root))


def describe_tree(root: int) -> str:
    """A table of the tree's processes: RSS / PSS / USS in MB, and the sums."""
    rows = tree_memory(root)
    mb = 2 ** 20
    lines = [f"{'pid':>8} {'name':<16} {'RSS':>8} {'PSS':>8} {'USS':>8}"]
    lines += [f"{m.pid:>8} {m.name:<16} {m.rss / mb:8.1f} {m.pss / mb:8.1f} {m.uss / mb:8.1f}" for m in rows]
    lines.append(f"{'':>8} {'sum':<16} {sum(m.rss for m in rows) / mb:8.1f} {sum(m.pss for m in rows) / mb:8.1f} "
                 f"{sum(m.uss for m in rows) / mb:8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.idle", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", default=os.environ.get("PGPASSWORD", ""))
    parser.add_argument("--database", required=True)
    parser.add_argument("--concurrency", type=int, default=200, help="logins in flight at once")
    args = parser.parse_args(argv)
    try:
        asyncio.run(hold(args.host, args.port, args.user, args.password, args.database, args.clients,
                         args.concurrency))
    except (OSError, LoginFailed, asyncio.IncompleteReadError) as exc:
        print(f"failed {exc}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
