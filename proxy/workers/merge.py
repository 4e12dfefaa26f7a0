"""How the workers' views add up to one proxy (pure): SHOW tables, /status documents, metric families.

Rows with the same key columns are one row: counts are summed, averages weighted, flags or-ed,
other columns taken from the first row (the control process's, for SHOW INSTANCES, which owns the
topology). Without key columns rows are concatenated (clients, servers). Metric samples with the
same name and labels are summed (counters, histogram buckets, gauges of counts); `*_created` and
the gauges in MIN_GAUGES take the smallest value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.metrics_core import Metric

from ..admin.resultset import Table

Row = dict[str, Any]


@dataclass(frozen=True)
class TableMerge:
    keys: tuple[str, ...] = ()                      # () = concatenate
    sums: frozenset[str] = frozenset()
    means: Mapping[str, str] = field(default_factory=dict)   # column -> the weight column
    maxes: frozenset[str] = frozenset()             # also or-s booleans
    derived: Mapping[str, Callable[[Row], Any]] = field(default_factory=dict)   # from the merged row
    sort: tuple[str, ...] = ()
    with_control: bool = False                      # the control process's own rows come first


def _hit_ratio(row: Row) -> Any:
    lookups = (row.get("hits") or 0) + (row.get("misses") or 0)
    return round(row["hits"] / lookups, 4) if lookups else 0.0


def _worst_state(rows: Sequence[Row]) -> Any:
    return "down" if any(r.get("state") == "down" for r in rows) else rows[0].get("state")


_POOL_COUNTS = frozenset({"open", "idle", "borrowed", "in_transaction", "pinned", "opening", "waiting", "max_size",
                          "borrows", "timeouts", "connect_failures"})

TABLE_MERGES: dict[str, TableMerge] = {
    "SHOW POOLS": TableMerge(("cluster", "instance", "user", "database", "mode"), _POOL_COUNTS,
                             {"avg_wait_ms": "borrows"}, frozenset({"generation", "paused"})),
    "SHOW CLIENTS": TableMerge(sort=("connected_at", "id")),
    "SHOW SERVERS": TableMerge(sort=("id",)),
    "SHOW LISTENERS": TableMerge(),   # each worker holds its own listening connections
    "SHOW INSTANCES": TableMerge(("cluster", "instance"), frozenset({"server_connections"}), with_control=True),
    "SHOW ENDPOINTS": TableMerge(("cluster", "endpoint"), frozenset({"clients", "requests_primary",
                                                                      "requests_replica"})),
    "SHOW STATS": TableMerge(("cluster", "endpoint"),
                             frozenset({"clients", "clients_total", "auth_failed", "transactions", "borrow_timeouts",
                                        "server_connect_failures", "pins"}),
                             {"avg_transaction_ms": "transactions", "borrow_avg_ms": "transactions"}),
    "SHOW CACHE": TableMerge(("cluster",), frozenset({"entries", "bytes", "hits", "misses", "bypasses", "stores",
                                                      "invalidations", "evictions"}),
                             derived={"hit_ratio": _hit_ratio}),
}
_CACHE_STATUS = TableMerge((), TABLE_MERGES["SHOW CACHE"].sums, derived={"hit_ratio": _hit_ratio})


def merge_rows(spec: TableMerge, groups: Iterable[Sequence[Row]]) -> list[Row]:
    """The rows of every process (control first, when the spec wants it) merged as one."""
    rows = [row for group in groups for row in group]
    if not spec.keys and not spec.derived:
        merged = [dict(r) for r in rows]
    else:
        by_key: dict[tuple[Any, ...], list[Row]] = {}
        for row in rows:
            by_key.setdefault(tuple(row.get(k) for k in spec.keys), []).append(row)
        merged = [_merge_group(spec, same) for same in by_key.values()]
    if spec.sort:
        merged.sort(key=lambda r: tuple(_sortable(r.get(k)) for k in spec.sort))
    return merged


def _sortable(value: Any) -> tuple[bool, Any]:
    return (value is not None, value if value is not None else 0)


def _merge_group(spec: TableMerge, rows: Sequence[Row]) -> Row:
    out = dict(rows[0])
    for name in spec.sums:
        if name in out:
            out[name] = sum(r.get(name) or 0 for r in rows)
    for name in spec.maxes:
        if name in out:
            out[name] = max((r[name] for r in rows if r.get(name) is not None), default=None)
    for name, weight in spec.means.items():
        if name in out:
            pairs = [(r[name], r.get(weight) or 0) for r in rows if r.get(name) is not None]
            total = sum(w for _, w in pairs)
            out[name] = round(sum(v * w for v, w in pairs) / total, 3) if total else (pairs[0][0] if pairs else None)
    if "state" in out and "hits" in out:
        out["state"] = _worst_state(rows)
    for name, derive in spec.derived.items():
        if name in out:
            out[name] = derive(out)
    return out


def merge_tables(spec: TableMerge, tables: Sequence[Table]) -> Table:
    """Tables of the same columns merged by `spec` (the first one gives the columns)."""
    names = tables[0].names
    rows = merge_rows(spec, [t.as_dicts() for t in tables])
    return Table(tables[0].columns, [tuple(r.get(n) for n in names) for r in rows])


# ---- /status ----------------------------------------------------------------------------------------

def merge_status(control: Mapping[str, Any], workers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The control process's /status document with the workers' clients, pools and endpoints added in."""
    doc = dict(control)
    by_name: dict[str, list[Mapping[str, Any]]] = {}
    for worker in workers:
        for cluster in worker.get("clusters", ()):
            by_name.setdefault(cluster["name"], []).append(cluster)
    clusters = []
    for cluster in control.get("clusters", ()):
        parts = by_name.get(cluster["name"], [])
        merged = dict(cluster)
        merged["clients"] = sum(p["clients"] for p in parts)
        merged["waiting"] = sum(p["waiting"] for p in parts)
        merged["instances"] = merge_rows(TABLE_MERGES["SHOW INSTANCES"],
                                         [cluster["instances"], *(_zero_topology(p["instances"]) for p in parts)])
        merged["endpoints"] = merge_rows(TABLE_MERGES["SHOW ENDPOINTS"], [p["endpoints"] for p in parts]) \
            if parts else cluster["endpoints"]
        merged["pools"] = merge_rows(TABLE_MERGES["SHOW POOLS"], [p["pools"] for p in parts])
        caches = [p["cache"] for p in parts if p.get("cache")]
        if caches:
            merged["cache"] = merge_rows(_CACHE_STATUS, [caches])[0]
        clusters.append(merged)
    doc["clusters"] = clusters
    return doc


def _zero_topology(rows: Sequence[Row]) -> list[Row]:
    """A worker's instance rows keyed by address only: its copy of the topology is the control's."""
    return [{"instance": r.get("instance"), "server_connections": r.get("server_connections", 0)} for r in rows]


# ---- /metrics -----------------------------------------------------------------------------------------

# Gauges of a state rather than a count: the proxy-wide value is the worst (smallest) one.
MIN_GAUGES = frozenset({"dbproxy_cache_up", "dbproxy_failover_privileges_ok"})


def merge_families(groups: Iterable[Iterable[Metric]]) -> list[Metric]:
    """Metric families of every process as one set of series (see the module docstring)."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for group in groups:
        for family in group:
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                values[family.name] = {}
            smallest = family.name in MIN_GAUGES
            seen = values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in seen:
                    seen[key] = sample.value
                elif smallest or sample.name.endswith("_created"):
                    seen[key] = min(seen[key], sample.value)
                else:
                    seen[key] += sample.value
    out = []
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
        out.append(family)
    return out
