"""bench/results/RESULTS.md and its PNG plots from bench/suite.py's results (the dict it saves as JSON)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from bench import plots

# Issue 18's targets, as ratios measured in one run.
SINGLE_PROCESS_FLOOR = 0.78   # -S, workers = 1 vs PgBouncer: "not lower than today's"
WORKERS_S_TARGET = 1.0
WORKERS_C_TARGET = 1.1
ADDED_P50_TARGET = 1.5        # dbproxy's added p50 at 1 client / PgBouncer's
IDLE_RSS_TARGET_MB = 100.0


def _num(value: float | None, spec: str = ".0f") -> str:
    return "—" if value is None else format(value, spec)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _multi(targets: list[str]) -> str | None:
    return next((t for t in targets if t.startswith("dbproxy-w") and t != "dbproxy-w1"), None)


def tps_rows(data: Mapping[str, Any]) -> Iterator[str]:
    targets: list[str] = data["targets"]
    multi = _multi(targets)
    labels = {"simple": "`-S -M simple`", "prepared": "`-S -M prepared`", "tpcb": "TPC-B-like"}
    head = ["scenario", *targets, "w1 / PgBouncer"] + ([f"{multi[8:]} / PgBouncer"] if multi else [])
    yield "| " + " | ".join(head) + " |"
    yield "|---|" + "---:|" * (len(head) - 1)
    sections = [(labels[k], v) for k, v in data.get("tps", {}).items()]
    sections += [(f"`-S -C` at {c} clients", v) for c, v in data.get("connect", {}).items()]
    for label, cells in sections:
        tps = {t: cells.get(t, {}).get("tps") for t in targets}
        row = [label, *(_num(tps[t]) if tps[t] is not None or not cells.get(t, {}).get("error") else "error"
                        for t in targets), _num(_ratio(tps.get("dbproxy-w1"), tps["pgbouncer"]), ".2f")]
        if multi:
            row.append(_num(_ratio(tps[multi], tps["pgbouncer"]), ".2f"))
        yield "| " + " | ".join(row) + " |"


def latency_rows(data: Mapping[str, Any]) -> Iterator[str]:
    targets = [t for t in data["targets"] if t != "direct"]
    yield "| clients | " + " | ".join(f"{t} p50 / p99 (added p50 / p99)" for t in targets) + " |"
    yield "|---:|" + "---:|" * len(targets)
    for clients, per in data.get("latency", {}).items():
        direct = per["direct"]["percentiles"]
        cells = [f"direct {_num(direct.get('p50'))} / {_num(direct.get('p99'))}"]
        for t in targets:
            p, added = per[t]["percentiles"], per[t]["added"]
            cells.append(f"{_num(p.get('p50'))} / {_num(p.get('p99'))} "
                         f"({_num(added.get('p50'), '+.0f')} / {_num(added.get('p99'), '+.0f')})")
        yield f"| {clients} ({cells[0]}) | " + " | ".join(cells[1:]) + " |"


def idle_rows(data: Mapping[str, Any]) -> Iterator[str]:
    idle = data.get("idle")
    if not idle:
        return
    yield (f"| target | RSS before (MB) | RSS with {idle['clients']} idle (MB) | PSS before (MB) | "
           f"PSS with {idle['clients']} idle (MB) | per idle client (KB) | login time of all (s) | "
           "TPS of 16 clients beside them |")
    yield "|---|---:|---:|---:|---:|---:|---:|---:|"
    for target, r in idle["targets"].items():
        if "rss_before_mb" not in r:
            yield f"| {target} | {r.get('error', '?')} | | | | | | |"
            continue
        yield (f"| {target} | {r['rss_before_mb']} | {r['rss_with_idle_mb']} | {r.get('pss_before_mb', '—')} | "
               f"{r.get('pss_with_idle_mb', '—')} | {r['per_client_kb']} | "
               f"{r['login_seconds']:.1f} | {_num(r['tps_16_beside_idle'])} |")


def targets_rows(data: Mapping[str, Any]) -> Iterator[str]:
    targets: list[str] = data["targets"]
    multi = _multi(targets)
    tps = data.get("tps", {}).get("simple", {})
    connect = data.get("connect", {}).get("16", {})

    def check(name: str, value: float | None, goal: float, higher: bool, spec: str = ".2f") -> str:
        met = value is not None and (value >= goal if higher else value <= goal)
        mark = "not measured" if value is None else "met" if met else "NOT met"
        return f"| {name} | {_num(value, spec)} | {'≥' if higher else '≤'} {goal:g} | {mark} |"

    yield "| target | measured | goal | |"
    yield "|---|---:|---:|---|"
    bouncer = (tps.get("pgbouncer") or {}).get("tps")
    yield check("-S, workers = 1 / PgBouncer", _ratio((tps.get("dbproxy-w1") or {}).get("tps"), bouncer),
                SINGLE_PROCESS_FLOOR, True)
    yield check(f"-S, {multi or 'workers = N'} / PgBouncer",
                _ratio((tps.get(multi or "") or {}).get("tps"), bouncer), WORKERS_S_TARGET, True)
    yield check(f"-C at 16 clients, {multi or 'workers = N'} / PgBouncer",
                _ratio((connect.get(multi or "") or {}).get("tps"), (connect.get("pgbouncer") or {}).get("tps")),
                WORKERS_C_TARGET, True)
    one = data.get("latency", {}).get("1", {})
    for target in [t for t in targets if t.startswith("dbproxy")]:
        mine = (one.get(target) or {}).get("added", {}).get("p50")
        theirs = (one.get("pgbouncer") or {}).get("added", {}).get("p50")
        yield check(f"added p50 at 1 client, {target} / PgBouncer's", _ratio(mine, theirs), ADDED_P50_TARGET, False)
    idle = data.get("idle", {}).get("targets", {})
    for target in [t for t in targets if t.startswith("dbproxy")]:
        yield check(f"RSS with {data.get('idle', {}).get('clients', '?')} idle clients, {target} (MB)",
                    (idle.get(target) or {}).get("rss_with_idle_mb"), IDLE_RSS_TARGET_MB, False, ".1f")


def failover_rows(run: Mapping[str, Any]) -> Iterator[str]:
    yield "| ms since kill -9 | event |"
    yield "|---:|---|"
    for key, text in (("last_write_before", "last write acknowledged before the kill"),
                      ("detected", "proxy: writer lost"), ("promoted", "proxy: replica promoted"),
                      ("writer_changed", "proxy: writer endpoint re-pointed"),
                      ("first_write_after", "first write acknowledged after the kill"),
                      ("all_clients_writing", "every writing client has written again")):
        yield f"| {_num(run.get(key))} | {text} |"
    errors = ", ".join(f"{n}× {code}" for code, n in sorted(run.get("errors", {}).items())) or "none"
    yield ""
    yield (f"Client errors: {errors}; connections closed: {run.get('disconnected')}; idle clients working "
           f"afterwards: {run.get('idle_ok')}/{run.get('idle_clients')}; acknowledged inserts "
           f"{run.get('acknowledged')}, lost {run.get('lost')}.")


def _embedded(markdown: str) -> str:
    """A sub-benchmark's own Markdown under one of our "##" sections: its "#" headings moved down two levels."""
    return "\n".join("##" + line if line.startswith("#") else line for line in markdown.strip().splitlines())


def make_plots(data: Mapping[str, Any], out: Path) -> list[str]:
    """Write the PNGs into ``out``; their file names."""
    written: list[str] = []
    targets: list[str] = data["targets"]
    if data.get("tps"):
        labels = {"simple": "-S simple", "prepared": "-S prepared", "tpcb": "TPC-B"}
        values = {(labels[k], t): c[t]["tps"] for k, c in data["tps"].items() for t in targets if t in c}
        plots.grouped_bars(out / "tps.png", "TPS at 16 clients (median of rounds)", "transactions / s",
                           [labels[k] for k in data["tps"]], targets, values)
        written.append("tps.png")
    if data.get("connect"):
        values = {(f"{c} clients", t): cells[t]["tps"] for c, cells in data["connect"].items() for t in targets}
        plots.grouped_bars(out / "connect.png", "-S -C: a new connection per transaction", "transactions / s",
                           [f"{c} clients" for c in data["connect"]], targets, values)
        written.append("connect.png")
    if data.get("latency"):
        panels = {f"{c} client(s), -S -M simple": {t: per[t]["cdf"] for t in targets}
                  for c, per in data["latency"].items()}
        plots.latency_cdfs(out / "latency_cdf.png", "Transaction latency CDF", panels)
        written.append("latency_cdf.png")
    idle = data.get("idle", {}).get("targets", {})
    if idle:
        names = [t for t in idle if "rss_with_idle_mb" in idle[t]]
        values = {("before", t): idle[t]["rss_before_mb"] for t in names}
        values |= {(f"{data['idle']['clients']} idle", t): idle[t]["rss_with_idle_mb"] for t in names}
        plots.grouped_bars(out / "idle_rss.png", "Resident memory of the pooler (all its processes)", "MB",
                           ["before", f"{data['idle']['clients']} idle"], names, values)
        written.append("idle_rss.png")
    run = data.get("failover")
    if isinstance(run, dict) and run.get("writes"):
        plots.failover_timeline(out / "failover.png", "kill -9 of the primary under write load (promote mode)", run)
        written.append("failover.png")
    return written


def write_results(data: Mapping[str, Any], out: Path) -> str:
    """Write RESULTS.md and the plots into ``out``; returns the Markdown."""
    pngs = make_plots(data, out)
    settings = data.get("settings", {})
    lines = [
        "# dbproxy benchmark report",
        "",
        f"Written by `make bench` (bench/suite.py) on {data['started']}, dbproxy {data['dbproxy']}, "
        f"{data.get('pgbouncer', 'PgBouncer')}; {data['cpus']} CPUs shared by the load generator, PostgreSQL "
        f"and the pooler; load average before {data['loadavg_before'][0]:.2f}, after "
        f"{data.get('loadavg_after', [0])[0]:.2f}. Medians of {settings.get('rounds')} rounds with the target "
        f"order rotated; pool size {settings.get('pool_size')}, transaction mode, md5 logins, pgbench scale "
        f"{settings.get('scale')}. Absolute numbers depend on the machine; compare the ratios.",
        "",
        *[f"- {note}" for note in data.get("notes", [])],
        "",
        "## Targets (issue 18)",
        "",
        *targets_rows(data),
        "",
        "## Throughput (TPS)",
        "",
        *tps_rows(data),
        "",
        "## Latency (us): p50 / p99 per transaction, and what the pooler adds over direct",
        "",
        *latency_rows(data),
        "",
        "## Idle clients",
        "",
        *idle_rows(data),
        "",
    ]
    ryw = data.get("ryw")
    if isinstance(ryw, dict) and ryw.get("table_markdown"):
        lines += ["## read_your_writes cost (bench/ryw.py)", "", _embedded(ryw["table_markdown"]), ""]
    mysql = data.get("mysql")
    if isinstance(mysql, dict) and mysql.get("table_markdown"):
        lines += ["## MySQL (bench/sysbench.py)", "", _embedded(mysql["table_markdown"]), ""]
    run = data.get("failover")
    if isinstance(run, dict) and "writes" in run:
        lines += ["## Failover timeline (bench/failover.py, one run)", "", *failover_rows(run), ""]
    for name in ("ryw", "mysql", "failover"):
        section = data.get(name)
        if isinstance(section, dict) and "error" in section and len(section) == 1:
            lines += [f"- {name}: did not run: {section['error']}", ""]
    lines += ["## Plots", "", *[f"![{png}]({png})" for png in pngs], ""]
    text = "\n".join(lines)
    (out / "RESULTS.md").write_text(text)
    return text
