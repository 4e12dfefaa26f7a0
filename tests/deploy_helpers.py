"""Helpers for the deployment tests (tests/test_deploy_*.py): paths, YAML documents, dbproxy configs, tools."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from proxy.config import Config, parse_config
from proxy.durations import parse_duration
from proxy.http.server import ROUTES

REPO_ROOT = Path(__file__).resolve().parent.parent
DEPLOY = REPO_ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"

HTTP_PATHS = frozenset(ROUTES)   # the paths proxy/http/server.py serves: probes must use these


def metric_label_names() -> set[str]:
    """Every label name of the metrics dbproxy exports (proxy.metrics.Metrics' registry)."""
    from proxy.metrics import Metrics

    names: set[str] = set()
    for collector in Metrics().registry._collector_to_names:   # the registered metric objects
        names.update(getattr(collector, "_labelnames", ()))
    return names


def tool(name: str) -> str | None:
    """A command from this virtualenv's bin/ (pip-installed tools), else from PATH."""
    local = Path(sys.prefix) / "bin" / name
    if local.exists():
        return str(local)
    return shutil.which(name)


def yaml_documents(text: str) -> list[dict[str, Any]]:
    """The non-empty documents of a (multi-document) YAML text."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def password_envs(toml_text: str) -> set[str]:
    """Every environment variable a dbproxy configuration names for a secret (*_env keys)."""
    return set(re.findall(r'^\s*\w*_env\s*=\s*"([A-Za-z_][A-Za-z0-9_]*)"', toml_text, re.M))


def parse_dbproxy_config(text: str, env: Mapping[str, str], path: str) -> Config:
    """Validate a dbproxy configuration the way `dbproxy run` does (proxy.config.parse_config with
    the environment the container would have); raises ConfigError with the problems."""
    return parse_config(text, path, env=env)


def listen_ports(config: Config) -> set[int]:
    """Every port the configuration listens on (endpoints, admin console, HTTP)."""
    ports = {endpoint.listen.port for cluster in config.clusters for endpoint in cluster.endpoints}
    for address in (config.server.admin_listen, config.server.http_listen):
        if address is not None:
            ports.add(address.port)
    return ports


def seconds(text: str | int | float) -> float:
    """A Kubernetes/compose/systemd-style duration ("35s", "1m30s", 45) in seconds."""
    if isinstance(text, int | float):
        return float(text)
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        total += parse_duration(f"{amount}{unit}")
    if not total and text.strip().isdigit():
        total = float(text)
    return total


def run(argv: Iterable[str], *, timeout: float = 60.0, env: Mapping[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output (bounded by timeout)."""
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ if env is None else env), cwd=cwd, check=False)
