"""Sans-IO: who listens on which channel behind one listening server connection, and the per-client queues.

One `ChannelRegistry` belongs to one listening server connection (listener.py: per cluster, server
user and database). It knows

- the clients (`Subscriber`s) listening on each channel, and the channels held for LISTENs made
  inside a transaction that has not ended yet (`reserve` / `release`: the server connection
  listens on them before the client is told LISTEN, so nothing committed after the client's COMMIT
  can be missed);
- what the server connection listens on (`confirmed`), and the next LISTEN / UNLISTEN batch that
  brings it to what the clients want (`next_batch`, `batch_done`; `server_lost` when it is gone);
- the delivery policy: each notification on a channel is queued for every subscriber of that
  channel, FIFO. The I/O layer writes a subscriber's queue when the client can take it (idle, not
  inside a transaction, its socket not backed up). A queue holds at most `queue_limit`
  notifications: the notification that finds a full queue is not queued, the subscriber is marked
  `overflowed` (the I/O layer disconnects it with an error saying why) and whatever it had queued
  is dropped with it; everything is counted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any


class Subscriber:
    """One client's channels and its queue of notifications not yet written (`owner`: the I/O side's)."""

    __slots__ = ("channels", "queue", "overflowed", "owner")

    def __init__(self, owner: Any = None) -> None:
        self.channels: set[bytes] = set()
        self.queue: deque[bytes] = deque()
        self.overflowed = False
        self.owner = owner


class ChannelRegistry:
    """See the module docstring."""

    def __init__(self, queue_limit: int) -> None:
        self.queue_limit = queue_limit
        self.listeners: dict[bytes, set[Subscriber]] = {}
        self.reserved: dict[bytes, int] = {}
        self.confirmed: set[bytes] = set()
        self.in_flight: tuple[frozenset[bytes], frozenset[bytes]] | None = None   # (LISTEN, UNLISTEN) sent
        self.received = 0        # notifications the server connection got
        self.delivered = 0       # written to a client
        self.dropped: dict[str, int] = {}   # reason -> notifications not delivered
        self.disconnected = 0    # subscribers whose queue overflowed

    # ---- what clients listen on -------------------------------------------------------------

    def listen(self, sub: Subscriber, channel: bytes) -> None:
        if channel not in sub.channels:
            sub.channels.add(channel)
            self.listeners.setdefault(channel, set()).add(sub)

    def unlisten(self, sub: Subscriber, channel: bytes) -> None:
        if channel in sub.channels:
            sub.channels.discard(channel)
            subs = self.listeners.get(channel)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self.listeners[channel]

    def unlisten_all(self, sub: Subscriber) -> None:
        for channel in list(sub.channels):
            self.unlisten(sub, channel)

    def reserve(self, channel: bytes) -> None:
        """Keep `channel` listened on for a LISTEN staged in an open transaction."""
        self.reserved[channel] = self.reserved.get(channel, 0) + 1

    def release(self, channel: bytes) -> None:
        left = self.reserved.get(channel, 1) - 1
        if left > 0:
            self.reserved[channel] = left
        else:
            self.reserved.pop(channel, None)

    def wanted(self) -> set[bytes]:
        """The channels the server connection must listen on."""
        return set(self.listeners) | set(self.reserved)

    @property
    def listening_clients(self) -> int:
        return len({sub for subs in self.listeners.values() for sub in subs})

    # ---- the server connection's channels ---------------------------------------------------

    def ready(self, channels: Iterable[bytes]) -> bool:
        """The server connection listens on every one of `channels` (and no UNLISTEN of one is in flight)."""
        unlistening = self.in_flight[1] if self.in_flight is not None else frozenset()
        return all(c in self.confirmed and c not in unlistening for c in channels)

    def next_batch(self) -> tuple[frozenset[bytes], frozenset[bytes]] | None:
        """(channels to LISTEN, channels to UNLISTEN) to send now, or None (nothing to do, or a batch is in flight)."""
        if self.in_flight is not None:
            return None
        wanted = self.wanted()
        listen = frozenset(wanted - self.confirmed)
        unlisten = frozenset(self.confirmed - wanted)
        if not listen and not unlisten:
            return None
        self.in_flight = (listen, unlisten)
        return self.in_flight

    def batch_done(self, ok: bool) -> None:
        """The batch in flight got its ReadyForQuery (ok: without an error)."""
        if self.in_flight is not None and ok:
            listen, unlisten = self.in_flight
            self.confirmed |= listen
            self.confirmed -= unlisten
        self.in_flight = None

    def server_lost(self) -> None:
        """The server connection is gone: it listens on nothing (a new one must LISTEN again)."""
        self.confirmed.clear()
        self.in_flight = None

    # ---- delivery -----------------------------------------------------------------------------

    def deliver(self, channel: bytes, message: bytes) -> tuple[list[Subscriber], list[Subscriber]]:
        """Queue one NotificationResponse for every subscriber of `channel`: (subscribers to flush,
        subscribers that overflowed now)."""
        self.received += 1
        subs = self.listeners.get(channel)
        if not subs:
            self._drop("no_listener")
            return [], []
        queued: list[Subscriber] = []
        overflowed: list[Subscriber] = []
        for sub in subs:
            if sub.overflowed:
                self._drop("client_queue_full")
                continue
            if len(sub.queue) >= self.queue_limit:
                sub.overflowed = True
                self.disconnected += 1
                self._drop("client_queue_full", 1 + len(sub.queue))
                sub.queue.clear()
                overflowed.append(sub)
                continue
            sub.queue.append(message)
            queued.append(sub)
        return queued, overflowed

    def take(self, sub: Subscriber) -> bytes:
        """Every notification queued for `sub`, in order, to be written now (counted as delivered)."""
        self.delivered += len(sub.queue)
        out = b"".join(sub.queue)
        sub.queue.clear()
        return out

    def drop_queue(self, sub: Subscriber, reason: str) -> None:
        """A subscriber goes away with notifications still queued (counted as dropped)."""
        if sub.queue:
            self._drop(reason, len(sub.queue))
            sub.queue.clear()

    def _drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n
