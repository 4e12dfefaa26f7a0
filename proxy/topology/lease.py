"""Promote leases, pure: how a dbproxy in promote mode knows that another one watches the same cluster.

Each dbproxy running a cluster in promote mode holds a *lease*: a row (holder, pid, renewed_at) that
it upserts every LEASE_RENEW seconds on the current primary, in a small table (PostgreSQL:
`dbproxy_promote_leases` in the health database; MySQL: `dbproxy.promote_leases`). Replication
copies the rows to every replica, so when the primary dies the replica about to be promoted still
holds them: before promoting, dbproxy reads the leases *on that replica* and refuses when another
holder is live (logged, counted in dbproxy_failover_promotions_refused_total). Two promote-mode
proxies on one cluster then both refuse: nobody promotes, rather than each promoting a different
replica. A fleet uses follow or patroni mode.

"Live" is judged on the rows alone, with the primary's clock: a holder is live when its renewal is
within LEASE_WINDOW of the freshest renewal in the table. Every live holder renews each second until
the primary stops, so their last renewals lie close together; a proxy that stopped (or lost the
primary) long before, or a row left by a decommissioned one, lies further back. No clock of two
machines is compared, and the answer does not change with how long the primary has been dead.

A holder is named `host/cluster/first endpoint`: a restarted proxy is the same holder (its old row
is its own), two proxies on one host differ by their listen addresses. A row with this host and this
process's pid is its own too (a reload that changed the first endpoint renamed the holder).

Failure cases (README "Fleets and failover modes"): a proxy that started while the primary was
already dead never wrote a lease, so another one cannot know it (two such proxies may both promote);
a lease written less than a replication delay before the primary died may be missing on the replica;
the health user must be able to create the table and write it on the primary (a failing renewal is
logged). The lease cannot be read on the candidate: no promotion now, retried after promote_after.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass

from ..config import ClusterConfig

LEASE_RENEW = 1.0       # seconds between renewals on the primary
LEASE_WINDOW = 5.0      # a holder renewed this close to the freshest renewal is live


@dataclass(frozen=True)
class Lease:
    holder: str
    pid: int
    renewed_at: float     # epoch seconds, the primary's clock


def live_others(leases: Sequence[Lease], me: str, pid: int | None = None,
                window: float = LEASE_WINDOW) -> list[Lease]:
    """Holders other than `me` whose renewal is within `window` of the freshest one.

    With `pid` (this process's), a row of the same host and pid is this process's own too: a reload
    that changed the first endpoint's listen address renamed the holder, and the old row must not
    look like another live promote-mode proxy."""
    if not leases:
        return []
    freshest = max(lease.renewed_at for lease in leases)
    host = me.split("/", 1)[0]

    def mine(lease: Lease) -> bool:
        return lease.holder == me or (pid is not None and lease.pid == pid
                                      and lease.holder.split("/", 1)[0] == host)

    return [lease for lease in leases if not mine(lease) and lease.renewed_at >= freshest - window]


def holder_name(cluster: ClusterConfig, hostname: str | None = None) -> str:
    """This proxy's holder name for `cluster` (see the module docstring)."""
    where = str(cluster.endpoints[0].listen) if cluster.endpoints else "-"
    return f"{hostname or socket.gethostname()}/{cluster.name}/{where}"[:200]


def describe(leases: Sequence[Lease]) -> str:
    return ", ".join(f"{lease.holder} (pid {lease.pid})" for lease in leases)


def parse_rows(rows: Sequence[Sequence[str | None]]) -> list[Lease]:
    """(holder, pid, epoch seconds) rows as text, as both engines' queries return them; bad rows skipped."""
    leases = []
    for row in rows:
        if len(row) != 3 or any(value is None for value in row):
            continue
        holder, pid, at = row
        try:
            leases.append(Lease(str(holder), int(str(pid)), float(str(at))))
        except ValueError:
            continue
    return leases
