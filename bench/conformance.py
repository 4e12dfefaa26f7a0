"""The client libraries' own test suites directly and through dbproxy, side by side (`make conformance`).

Runs ../shared/peer/run_<suite>.sh against the machine's PostgreSQL (127.0.0.1:5432, trust) and MariaDB
(127.0.0.1:3306, root without a password) directly, then through a dbproxy in front of them, once per
pooling mode, and writes bench/results/conformance.md: passed / failed per run, and every failure that
the direct run does not have. The suites' sources are bare clones found under $PEER_MIRRORS
(see ../shared/peer/README.md); without it this exits 2 and says so.

    python -m bench.conformance [--suites asyncpg,psycopg,pymysql] [--modes session,transaction]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT.parent / "shared" / "peer"
HOST = "127.0.0.1"
PG_PORT, MY_PORT = 5432, 3306
PROXY_PORTS = {"session": (6632, 6633), "transaction": (6634, 6635)}   # (PostgreSQL, MySQL) endpoints
SUITES = ("asyncpg", "pymysql", "psycopg")
_FINAL = re.compile(r"peer-\w+: (\d+) passed, (\d+) failed, (\d+) skipped")


@dataclass
class Run:
    """One suite run: its counts and the failing test ids."""

    target: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)
    aborted: str = ""


def config(mode: str) -> str:
    pg, my = PROXY_PORTS[mode]
    return f"""
[server]
log_level = "warning"
shutdown_timeout = "2s"

[[users]]
name = "postgres"
password = "pg-pw"
server_user = "postgres"

[[users]]
name = "peer"
password = "peerpw"

[[users]]
name = "test2"
password = "some password"

[clusters.pg]
engine = "postgres"
instances = ["{HOST}:{PG_PORT}"]
client_auth = "md5"

[clusters.pg.health]
user = "postgres"

[clusters.pg.pool]
mode = "{mode}"
max_server_connections = 40

[[clusters.pg.endpoints]]
name = "writer"
listen = "{HOST}:{pg}"
role = "writer"

[clusters.my]
engine = "mysql"
instances = ["{HOST}:{MY_PORT}"]
client_auth = "mysql_native_password"
allow_local_infile = true

[clusters.my.health]
user = "peer"
password = "peerpw"

[clusters.my.pool]
mode = "{mode}"
max_server_connections = 40

[[clusters.my.endpoints]]
name = "writer"
listen = "{HOST}:{my}"
role = "writer"
"""


def mysql_peer_user() -> None:
    """The PyMySQL suite's superuser `peer` (a password: a proxy user needs one) on the local MariaDB."""
    sql = ("CREATE USER IF NOT EXISTS 'peer'@'%' IDENTIFIED BY 'peerpw'; GRANT ALL ON *.* TO 'peer'@'%' WITH GRANT "
           "OPTION; CREATE USER IF NOT EXISTS 'peer'@'localhost' IDENTIFIED BY 'peerpw'; GRANT ALL ON *.* TO "
           "'peer'@'localhost' WITH GRANT OPTION")
    subprocess.run(["mariadb", "-h", HOST, "-P", str(MY_PORT), "-uroot", "-e", sql], check=True, timeout=30)


def run_suite(suite: str, target: str, port: int, through_proxy: bool) -> Run:
    env = dict(os.environ)
    if suite == "pymysql":
        env.update(PEER_USER="peer", PEER_PASSWORD="peerpw", PEER_SETUP_HOST=HOST, PEER_SETUP_PORT=str(MY_PORT),
                   PEER_SETUP_USER="root", PEER_SETUP_PASSWORD="")
        argv = [str(PEER / "run_pymysql.sh"), HOST, str(port)]
    else:
        if through_proxy:
            env.update(PEER_PASSWORD="pg-pw", PEER_SETUP_HOST=HOST, PEER_SETUP_PORT=str(PG_PORT),
                       PEER_SETUP_PASSWORD="")
        if suite == "psycopg":
            env.setdefault("PEER_PROFILE", "fast")
        # psycopg's tests leave tables behind (t1, foo...) that asyncpg's then trip over: a database of its own.
        database = "psycopg_test" if suite == "psycopg" else "postgres"
        argv = [str(PEER / f"run_{suite}.sh"), HOST, str(port), "postgres", database]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600, check=False)
    output = done.stdout + done.stderr
    run = Run(target)
    final = _FINAL.findall(output)
    if not final:
        run.aborted = f"no result (exit {done.returncode}): {output.strip().splitlines()[-1:]}"
        return run
    run.passed, run.failed, run.skipped = (int(n) for n in final[-1])
    run.failures = sorted(set(re.findall(r"^\s*NEW \w+: (.+?)\s*$", output, re.MULTILINE)))
    print(f"{suite} {target}: {run.passed} passed, {run.failed} failed ({time.monotonic() - started:.0f}s)",
          file=sys.stderr, flush=True)
    return run


def wait_listening(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"dbproxy did not listen on {port}")


def _short(test_id: str) -> str:
    """tests/test_copy.py::TestCopyFrom::test_x[param] -> test_copy::test_x[param]."""
    parts = test_id.split("::")
    return f"{Path(parts[0]).stem}::{parts[-1]}" if len(parts) > 1 else test_id


def report(results: dict[str, list[Run]]) -> str:
    lines = ["# Client libraries' test suites: directly and through dbproxy", "",
             "Written by `make conformance` (bench/conformance.py). Failures listed are those the direct run "
             "does not have.", "", "| suite | target | passed | failed | skipped | new failures |",
             "|---|---|---:|---:|---:|---|"]
    for suite, runs in results.items():
        direct = set(runs[0].failures)
        for run in runs:
            new = [f for f in run.failures if f not in direct] if run is not runs[0] else []
            shown = run.aborted or ", ".join(f"`{_short(f)}`" for f in new) or "none"
            lines.append(f"| {suite} | {run.target} | {run.passed} | {run.failed} | {run.skipped} | {shown} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suites", default="asyncpg,psycopg,pymysql", help=f"comma-separated, of {', '.join(SUITES)}")
    parser.add_argument("--modes", default="session,transaction")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "conformance.md"))
    args = parser.parse_args()
    if not os.environ.get("PEER_MIRRORS"):
        print("conformance: set PEER_MIRRORS to the folder above the <owner>+<name>/repo clones of the suites "
              "(../shared/peer/README.md)", file=sys.stderr)
        return 2
    suites = [s for s in args.suites.split(",") if s]
    if "pymysql" in suites:
        mysql_peer_user()
    results: dict[str, list[Run]] = {}
    for suite in suites:
        results[suite] = [run_suite(suite, "direct", MY_PORT if suite == "pymysql" else PG_PORT, False)]
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory(prefix="dbproxy-conformance-") as directory:
            path = Path(directory) / "dbproxy.toml"
            path.write_text(config(mode))
            proxy = subprocess.Popen([sys.executable, "-m", "proxy", "run", "--config", str(path)], cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=open(Path(directory) / "dbproxy.log", "w"))
            try:
                for port in PROXY_PORTS[mode]:
                    wait_listening(port)
                for suite in suites:
                    port = PROXY_PORTS[mode][1 if suite == "pymysql" else 0]
                    results[suite].append(run_suite(suite, f"dbproxy {mode} mode", port, True))
            finally:
                proxy.terminate()
                proxy.wait(30)
    text = report(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
