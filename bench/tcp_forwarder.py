"""HAProxy in TCP mode as the benchmark's floor: a C forwarder with no protocol logic at all.

No MySQL pooler is packaged in Debian here (ProxySQL and MaxScale are not), so the MySQL benchmark
measures how much of a proxy's cost is simply the second loopback hop: HAProxy (`mode tcp`, one
thread, one server connection per client) forwards bytes between sysbench and MariaDB and does
nothing else. Whatever ratio to direct it reaches on this machine bounds what any proxy in the
path — dbproxy included — can reach.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.procs import BenchError, Service

HAPROXY = "haproxy"


def available() -> bool:
    return shutil.which(HAPROXY) is not None


def haproxy_config(listen_host: str, listen_port: int, server_host: str, server_port: int, maxconn: int) -> str:
    """One TCP frontend → one backend server; one thread, as a single dbproxy process has."""
    return f"""\
global
    nbthread 1
    maxconn {maxconn}

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h

listen mysql
    bind {listen_host}:{listen_port}
    server primary {server_host}:{server_port}
"""


def start_haproxy(workdir: Path, listen_host: str, listen_port: int, server_host: str, server_port: int,
                  maxconn: int = 1024) -> Service:
    """Start HAProxy in the foreground (-db) and wait until its port accepts connections."""
    if not available():
        raise BenchError("haproxy not found: `apt-get install haproxy` (the Makefile's bench-tools target does)")
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "haproxy.cfg"
    config.write_text(haproxy_config(listen_host, listen_port, server_host, server_port, maxconn))
    service = Service("haproxy", [HAPROXY, "-db", "-f", str(config)], workdir / "haproxy.log")
    service.start()
    service.wait_ready(listen_host, listen_port)
    return service
