"""Reading where instances and this dbproxy run: instance tables, [server] zone/region, replica discovery."""

from __future__ import annotations

import re
from typing import Any

from .model import MAX_PROMOTION_TIER, MAX_WEIGHT, Address, DiscoverySettings, Locality, Placement
from .reader import Table, toml_type

INSTANCE_KEYS = ("address", "zone", "region", "promotion_tier", "weight", "standby")
DISCOVERY_KEYS = ("interval", "grace", "port", "zone", "region", "promotion_tier")

# An AWS-style zone name: the region and one letter ("eu-west-1a" is in "eu-west-1").
_AWS_ZONE = re.compile(r"(.*\d)[a-z]")


def region_of(zone: str, region: str) -> str:
    """The region given, or the one an AWS-style zone name implies ("" when neither says)."""
    if region or not zone:
        return region
    match = _AWS_ZONE.fullmatch(zone)
    return match.group(1) if match else ""


def read_locality(t: Table) -> Locality:
    """[server] zone / region: where this dbproxy runs."""
    zone = t.text("zone", "", required="zone" in t.data)
    return Locality(zone, region_of(zone, t.text("region", "", required="region" in t.data)))


def read_instances(t: Table) -> tuple[tuple[Address, ...] | None, dict[Address, Placement]]:
    """`instances`: "host:port" strings or { address = "host:port", zone, region, promotion_tier,
    weight, standby } tables, mixed. Returns the addresses (None when the key is unusable) and the
    placement of each instance given as a table."""
    items: list[Any] | None = t.value(
        "instances", lambda v: isinstance(v, list),
        'an array of "host:port" strings or { address = "host:port", ... } tables', required=True)
    if items is None:
        return None, {}
    addresses: list[Address] = []
    placements: dict[Address, Placement] = {}
    for index, item in enumerate(items):
        key = f"{t.path('instances')}[{index}]"
        if isinstance(item, str):
            address = t.parse_address(key, item)
            placement = None
        elif isinstance(item, dict):
            address, placement = _instance_table(Table(item, key, t.problems, INSTANCE_KEYS))
        else:
            t.problems.add(key, f'expected a "host:port" string or an instance table, got {toml_type(item)}')
            continue
        if address in addresses:
            t.problems.add(key, f"{address} is listed twice")
        elif address is not None:
            addresses.append(address)
            if placement is not None:
                placements[address] = placement
    return tuple(addresses), placements


def _instance_table(t: Table) -> tuple[Address | None, Placement]:
    address = t.address("address", required=True)
    zone = t.text("zone", "", required="zone" in t.data)
    placement = Placement(
        zone=zone,
        region=region_of(zone, t.text("region", "", required="region" in t.data)),
        promotion_tier=_tier(t, 1),
        weight=_weight(t),
        standby=t.boolean("standby", False),
    )
    return address, placement


def _tier(t: Table, default: int) -> int:
    tier = t.integer("promotion_tier", default)
    if tier > MAX_PROMOTION_TIER:
        t.problem("promotion_tier", f"must be from 0 to {MAX_PROMOTION_TIER} (got {tier})")
        return default
    return tier


def _weight(t: Table) -> int:
    weight = t.integer("weight", 1, minimum=1)
    if weight > MAX_WEIGHT:
        t.problem("weight", f"must be from 1 to {MAX_WEIGHT} (got {weight})")
        return 1
    return weight


def read_discovery(cluster: Table) -> DiscoverySettings:
    """`discover = true` and the optional [clusters.<name>.discovery] table."""
    enabled = cluster.boolean("discover", False)
    t = cluster.table("discovery", DISCOVERY_KEYS)
    if t.data and not enabled:
        cluster.problem("discovery", "replica discovery settings given, but discover is not true")
    zone = t.text("zone", "", required="zone" in t.data)
    port = t.integer("port", 0)
    if port > 65535:
        t.problem("port", f"must be a port number from 1 to 65535 (got {port})")
        port = 0
    interval = t.duration("interval", 2.0, positive=True)
    grace = t.duration("grace", 30.0)
    if grace < interval and "grace" in t.data:
        t.problem("grace", f"must be at least the discovery interval ({grace:g}s < {interval:g}s)")
    return DiscoverySettings(enabled=enabled, interval=interval, grace=grace, port=port, zone=zone,
                             region=region_of(zone, t.text("region", "", required="region" in t.data)),
                             promotion_tier=_tier(t, MAX_PROMOTION_TIER))
