"""A private redis-server for the query-cache tests: free port, loopback, optional requirepass and TLS."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import free_port

from deploy.pgcluster import HOST


class RedisServer:
    """A private redis-server on a free port (so a test may stop it); `password`: requirepass;
    `certs`: a `dbproxy gen-cert` directory, then it listens with TLS only."""

    def __init__(self, directory: Path, password: str | None = None, certs: Path | None = None) -> None:
        self.port = free_port()
        self.directory = directory
        self.password = password
        self.certs = certs
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
                "--dir", str(self.directory)]
        if self.password is not None:
            argv += ["--requirepass", self.password]
        if self.certs is not None:
            argv[1:3] = ["--port", "0", "--tls-port", str(self.port)]
            argv += ["--tls-cert-file", str(self.certs / "server.pem"), "--tls-key-file",
                     str(self.certs / "server-key.pem"), "--tls-ca-cert-file", str(self.certs / "ca.pem"),
                     "--tls-auth-clients", "no"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((HOST, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@contextmanager
def cache_backend(kind: str, directory: Path) -> Iterator[str]:
    """The `backend` of a [cache] section for a test parametrised over "memory" and "redis": with "redis" a
    private redis-server in `directory` (skipped where none is installed), stopped afterwards."""
    if kind != "redis":
        yield "memory"
        return
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    redis = RedisServer(directory)
    redis.start()
    try:
        yield f"redis://{HOST}:{redis.port}/0"
    finally:
        redis.stop()
