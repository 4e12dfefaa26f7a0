"""Who may connect and how fast (SPEC §10): allowlists, per-address connect rate, per-user/database counts.

Policy only, no I/O: time is passed in (`now`), so every rule is a plain function of its inputs
and is tested with a fake clock. The listeners and the session core ask these objects before they
read a byte from a client; ProxyApp builds them from the config and rebuilds them on reload.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Allowlist verdicts remembered per client host (most clients reconnect from the same few addresses).
_VERDICTS_KEPT = 4096


def client_host(peername: object) -> str:
    """The host part of a transport's peername ("10.0.0.7", "::1"), or "" when there is none."""
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return ""


class Allowlist:
    """The client addresses an endpoint accepts: CIDR networks (IPv4-mapped IPv6 peers match IPv4 ones).

    An address that does not parse is refused. Verdicts are remembered per host string (bounded).
    """

    def __init__(self, networks: tuple[str, ...]) -> None:
        self.networks = networks
        self._nets = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self._verdicts: dict[str, bool] = {}

    def allows(self, host: str) -> bool:
        verdict = self._verdicts.get(host)
        if verdict is None:
            verdict = self._match(host)
            if len(self._verdicts) >= _VERDICTS_KEPT:
                self._verdicts.clear()
            self._verdicts[host] = verdict
        return verdict

    def _match(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self._nets)

    def __repr__(self) -> str:
        return f"Allowlist({list(self.networks)})"


@lru_cache(maxsize=256)
def allowlist_for(networks: tuple[str, ...]) -> Allowlist | None:
    """The Allowlist of a config's `allow` list (one object per distinct list), None when it is empty."""
    return Allowlist(networks) if networks else None


def parse_network(text: str) -> str:
    """A CIDR as the config gives it, normalized ("10.0.0.0/8"); raises ValueError with a message for users.

    A bare address is one host (/32, /128). Host bits set ("10.1.2.3/8") are an error, since the
    intended network is then ambiguous.
    """
    try:
        return str(ipaddress.ip_network(text.strip(), strict=True))
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise ValueError(f'invalid network "{text}": expected an address or CIDR such as "10.0.0.0/8" '
                             f'or "::1/128" ({exc})') from None
        raise ValueError(f'invalid network "{text}": host bits are set (did you mean "{loose}"?)') from None


class TokenBucket:
    """`rate` tokens per second up to `burst`; take() spends one if there is one. Starts full."""

    __slots__ = ("rate", "burst", "tokens", "last")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = now

    def take(self, now: float) -> bool:
        self.refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def refill(self, now: float) -> None:
        elapsed = now - self.last
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.last = now

    def full(self, now: float) -> bool:
        return self.tokens + max(0.0, now - self.last) * self.rate >= self.burst


class ConnectRateLimiter:
    """New client connections per client host: a token bucket each (`rate` per second, bursts of `burst`).

    Buckets that have refilled are forgotten when more than `max_hosts` are kept; if a flood from
    that many distinct hosts keeps them all busy, every bucket is dropped (the limit then starts
    over rather than the table growing without bound).
    """

    def __init__(self, rate: float, burst: int, max_hosts: int = 100_000) -> None:
        self.rate = rate
        self.burst = float(max(1, burst))
        self.max_hosts = max_hosts
        self._buckets: dict[str, TokenBucket] = {}

    def allow(self, host: str, now: float) -> bool:
        bucket = self._buckets.get(host)
        if bucket is None:
            if len(self._buckets) >= self.max_hosts:
                self._prune(now)
            bucket = self._buckets[host] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now)

    def _prune(self, now: float) -> None:
        for host in [h for h, b in self._buckets.items() if b.full(now)]:
            del self._buckets[host]
        if len(self._buckets) >= self.max_hosts:
            self._buckets.clear()

    def __len__(self) -> int:
        return len(self._buckets)


class ConnectionCounts:
    """Logged-in client connections per user (whole proxy) and per (cluster, database).

    claim() counts a connection unless a limit (0 = none) is reached, and then says which one;
    every successful claim is matched by one release().
    """

    def __init__(self) -> None:
        self.users: dict[str, int] = {}
        self.databases: dict[tuple[str, str], int] = {}

    def claim(self, user: str, user_limit: int, cluster: str, database: str, database_limit: int) -> str | None:
        """None when counted, else the refusal reason: "user_limit" or "database_limit"."""
        users = self.users.get(user, 0)
        if user_limit and users >= user_limit:
            return "user_limit"
        key = (cluster, database)
        databases = self.databases.get(key, 0)
        if database_limit and databases >= database_limit:
            return "database_limit"
        self.users[user] = users + 1
        self.databases[key] = databases + 1
        return None

    def release(self, user: str, cluster: str, database: str) -> None:
        left = self.users.get(user, 0) - 1
        if left > 0:
            self.users[user] = left
        else:
            self.users.pop(user, None)
        key = (cluster, database)
        left = self.databases.get(key, 0) - 1
        if left > 0:
            self.databases[key] = left
        else:
            self.databases.pop(key, None)


class LogThrottle:
    """Keeps refusal logging from flooding: one line per key per `interval`, `per_second` lines overall.

    admit(key, now) returns None when the line is to be dropped, else how many lines of that key
    were dropped since its last line (to be mentioned in it).
    """

    def __init__(self, interval: float = 10.0, per_second: float = 5.0, max_keys: int = 10_000) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._overall = TokenBucket(per_second, per_second, float("-inf"))
        self._keys: dict[str, list[float]] = {}   # key -> [time of its last line, lines dropped since]

    def admit(self, key: str, now: float) -> int | None:
        entry = self._keys.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return None
        if not self._overall.take(now):
            if entry is not None:
                entry[1] += 1
            return None
        if entry is None:
            if len(self._keys) >= self.max_keys:
                self._keys = {k: e for k, e in self._keys.items() if now - e[0] < self.interval}
            self._keys[key] = [now, 0]
            return 0
        dropped = int(entry[1])
        entry[0], entry[1] = now, 0
        return dropped
