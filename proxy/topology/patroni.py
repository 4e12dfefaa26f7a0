"""Patroni's REST API without I/O: parse GET /cluster, build and read POST /switchover, and the pure rule
that turns Patroni's answer into the `Authority` the snapshot builder applies on top of the probes.

The rule (mode "patroni"; health.build_snapshot applies it):

- writer: only the member Patroni reports as `leader`, and only while dbproxy's own probe finds it
  reachable and not in recovery. Patroni decides *who* may take writes (it holds the leader key in
  the DCS); the probe confirms the instance really does (a leader still promoting, or one Patroni is
  demoting, takes none). An instance reporting primary that Patroni does not call the leader is fenced.
  A `standby_leader` (a standby cluster) is never a writer. Before Patroni's first answer there is no
  writer; when no member answers, its last answer stands (Patroni demotes a leader that loses the DCS,
  and the probe sees that).
- replicas: the probe's rules (up, within max_replica_lag) and also Patroni's: a member in state
  running/streaming/in archive recovery, without the `noloadbalance` tag. An instance Patroni does not
  list is not used. Patroni's lag (bytes behind the leader) is shown as the replica's lag_bytes.

Members are matched to configured instances by the host:port of their `postgresql.connect_address`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..config import Address
from .model import Authority

LEADER_ROLES = frozenset({"leader", "master", "primary"})
READ_STATES = frozenset({"running", "streaming", "in archive recovery"})
MAX_ANSWER = 1024 * 1024      # a /cluster answer is a few hundred bytes per member


class PatroniError(Exception):
    """An answer that is not what Patroni's API sends; the message says what is wrong."""


@dataclass(frozen=True)
class PatroniMember:
    name: str
    role: str                      # leader | standby_leader | sync_standby | replica | ...
    state: str                     # running | streaming | stopped | starting | crashed | ...
    address: Address | None        # connect_address host:port (None when Patroni does not say)
    timeline: int | None = None
    lag: int | None = None         # bytes behind the leader; None for the leader or "unknown"
    noloadbalance: bool = False


@dataclass(frozen=True)
class PatroniCluster:
    members: tuple[PatroniMember, ...]
    paused: bool = False

    @property
    def leader(self) -> PatroniMember | None:
        return next((m for m in self.members if m.role in LEADER_ROLES), None)

    def member_at(self, address: Address) -> PatroniMember | None:
        return next((m for m in self.members if m.address == address), None)


def parse_cluster(body: bytes) -> PatroniCluster:
    """GET /cluster's JSON body; raises PatroniError."""
    if len(body) > MAX_ANSWER:
        raise PatroniError(f"answer of {len(body)} bytes is too large")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PatroniError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("members"), list):
        raise PatroniError('not a /cluster answer (no "members" array)')
    members = tuple(_member(item, i) for i, item in enumerate(data["members"]))
    return PatroniCluster(members, paused=data.get("pause") is True)


def _member(item: object, index: int) -> PatroniMember:
    if not isinstance(item, dict):
        raise PatroniError(f"members[{index}] is not an object")
    name, role, state = (item.get(k) for k in ("name", "role", "state"))
    if not isinstance(name, str) or not isinstance(role, str):
        raise PatroniError(f"members[{index}] has no name or role")
    tags = item.get("tags")
    return PatroniMember(name=name, role=role, state=state if isinstance(state, str) else "",
                         address=_address(item.get("host"), item.get("port")),
                         timeline=_integer(item.get("timeline")), lag=_integer(item.get("lag")),
                         noloadbalance=isinstance(tags, dict) and tags.get("noloadbalance") in (True, "true"))


def _address(host: object, port: object) -> Address | None:
    port = _integer(port) if port is not None else 5432
    if not isinstance(host, str) or not host or port is None or not 1 <= port <= 65535:
        return None
    return Address(host.strip("[]"), port)


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --------------------------------------------------------------------------- what dbproxy applies


def authority(cluster: PatroniCluster, instances: Sequence[Address]) -> Authority:
    """What Patroni's answer allows (see the module docstring), for the configured `instances`."""
    leader = cluster.leader
    writer = leader.address if leader is not None and leader.address in instances else None
    excluded: dict[Address, str] = {}
    lag: dict[Address, int] = {}
    for address in instances:
        member = cluster.member_at(address)
        if member is None:
            excluded[address] = "not a Patroni member"
            continue
        if member.lag is not None:
            lag[address] = member.lag
        if member is leader:
            continue
        if member.state not in READ_STATES:
            excluded[address] = f"Patroni member {member.name} is {member.state or 'in no state'}"
        elif member.noloadbalance:
            excluded[address] = f"Patroni member {member.name} has the noloadbalance tag"
    return Authority(source="Patroni", leader=writer, excluded=excluded, lag_bytes=lag)


def unmatched(cluster: PatroniCluster, instances: Sequence[Address]) -> list[str]:
    """Members not among the configured instances, as "name (host:port)" (said in the log)."""
    return [f"{m.name} ({m.address or 'no address'})" for m in cluster.members if m.address not in instances]


def describe(cluster: PatroniCluster) -> str:
    """One line for the log: "pg1 leader running, pg2 replica streaming (lag 0)"."""
    parts = []
    for m in cluster.members:
        lag = f" (lag {m.lag})" if m.lag is not None else ""
        parts.append(f"{m.name} {m.role} {m.state}{lag}")
    return ", ".join(parts) + (" [paused]" if cluster.paused else "")


# --------------------------------------------------------------------------- switchover


@dataclass(frozen=True)
class SwitchoverAnswer:
    ok: bool
    message: str
    retry: bool = field(default=False)   # 503: Patroni could not tell (its own wait ran out)


def switchover_request(leader: str, candidate: str | None) -> bytes:
    """POST /switchover's JSON body."""
    body: dict[str, str] = {"leader": leader}
    if candidate is not None:
        body["candidate"] = candidate
    return json.dumps(body).encode()


def read_switchover_answer(status: int, body: bytes) -> SwitchoverAnswer:
    """POST /switchover's answer: 200 done (the text says to whom), 202 scheduled, 412/400 refused."""
    text = body[:2000].decode("utf-8", "replace").strip() or f"HTTP {status}"
    if status == 200:
        return SwitchoverAnswer(True, text)
    if status == 503:
        return SwitchoverAnswer(False, text, retry=True)
    if status in (401, 403):
        return SwitchoverAnswer(False, f"{text} (HTTP {status}: check patroni_user and patroni_password)")
    return SwitchoverAnswer(False, f"{text} (HTTP {status})")
