"""What traffic mirroring costs the primary when the shadow is dead: pgbench TPS through dbproxy with mirroring
to a stopped shadow (sample = 1.0, every read mirrored and dropped) over TPS with mirroring off, side by side.

Uses the machine's PostgreSQL on 127.0.0.1:5432 (trust, user postgres) with a scratch database, two dbproxy
processes (mirror off / mirror on, the shadow cluster's only instance a port where nothing listens), and
alternating pgbench -S -M simple rounds (--protocol prepared: -M prepared, the mirror's prepared tap decoding
every Bind); prints the median TPS of each and their ratio (SPEC §13 asks for >= 0.9). Timings on a shared
machine are noisy: compare the ratio, not the numbers.

    python -m bench.mirror_overhead [--rounds 5] [--seconds 5] [--clients 8] [--protocol simple|prepared]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deploy.pgcluster import HOST, free_ports, pg_binary

SERVER = 5432
DATABASE = "dbproxy_bench_mirror"


def _config(port: int, dead_port: int, shadow_port: int, mirrored: bool) -> str:
    mirror = 'mirror = { cluster = "shadow", sample = 1.0, reads_only = true }\n' if mirrored else ""
    return f"""
[server]
log_level = "warning"
shutdown_timeout = "2s"

[[users]]
name = "postgres"
server_user = "postgres"

[clusters.main]
engine = "postgres"
instances = ["{HOST}:{SERVER}"]
client_auth = "trust"
{mirror}
[clusters.main.pool]
max_server_connections = 8

[[clusters.main.endpoints]]
name = "writer"
listen = "{HOST}:{port}"
role = "writer"

[clusters.shadow]
engine = "postgres"
instances = ["{HOST}:{dead_port}"]
client_auth = "trust"

[[clusters.shadow.endpoints]]
name = "writer"
listen = "{HOST}:{shadow_port}"
role = "writer"
"""


def _psql(sql: str, database: str = "postgres") -> None:
    subprocess.run([pg_binary("psql"), "-X", "-q", "-h", HOST, "-p", str(SERVER), "-U", "postgres", "-d", database,
                    "-c", sql], check=True, capture_output=True)


def _pgbench(port: int, seconds: int, clients: int, protocol: str) -> float:
    res = subprocess.run([pg_binary("pgbench"), "-h", HOST, "-p", str(port), "-U", "postgres", "-n", "-S", "-M",
                          protocol, "-c", str(clients), "-j", "2", "-T", str(seconds), DATABASE],
                         capture_output=True, text=True)
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", res.stdout)
    if res.returncode != 0 or match is None:
        raise SystemExit(f"pgbench through port {port} failed:\n{res.stdout}{res.stderr}")
    return float(match.group(1))


def _wait_listening(ports: tuple[int, ...], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"dbproxy not listening on {port} after {timeout:g}s") from None
                time.sleep(0.1)
    time.sleep(1.0)   # the first probes and the configured pools


def _start(directory: Path, name: str, text: str) -> subprocess.Popen[bytes]:
    path = directory / f"{name}.toml"
    path.write_text(text)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.Popen([sys.executable, "-m", "proxy", "run", "--config", str(path)], env=env,
                            stdout=(directory / f"{name}.log").open("wb"), stderr=subprocess.STDOUT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--protocol", choices=("simple", "prepared"), default="simple")
    args = parser.parse_args()
    _psql(f"DROP DATABASE IF EXISTS {DATABASE}")
    _psql(f"CREATE DATABASE {DATABASE}")
    subprocess.run([pg_binary("pgbench"), "-h", HOST, "-p", str(SERVER), "-U", "postgres", "-i", "-q", "-s", "1",
                    DATABASE], check=True, capture_output=True)
    off_port, on_port, dead, shadow_off, shadow_on = free_ports(5)
    with tempfile.TemporaryDirectory(prefix="dbproxy-mirror-bench-") as tmp:
        directory = Path(tmp)
        procs = [_start(directory, "off", _config(off_port, dead, shadow_off, False)),
                 _start(directory, "on", _config(on_port, dead, shadow_on, True))]
        try:
            _wait_listening((off_port, on_port))
            results: dict[str, list[float]] = {"off": [], "on": []}
            for round_ in range(args.rounds):
                order = (("off", off_port), ("on", on_port)) if round_ % 2 == 0 else (("on", on_port), ("off", off_port))
                for name, port in order:
                    results[name].append(_pgbench(port, args.seconds, args.clients, args.protocol))
                print(f"round {round_ + 1}: off {results['off'][-1]:.0f} tps, on {results['on'][-1]:.0f} tps")
            off, on = statistics.median(results["off"]), statistics.median(results["on"])
            print(f"median TPS: mirroring off {off:.0f}, mirroring on (shadow dead) {on:.0f}; ratio {on / off:.3f}")
            dropped = (directory / "on.log").read_text(errors="replace")
            if "Traceback" in dropped:
                print("warning: traceback in the mirroring proxy's log", file=sys.stderr)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
            _psql(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


if __name__ == "__main__":
    main()
