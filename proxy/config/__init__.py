"""Configuration: TOML file -> frozen, validated dataclasses (model), read by typed table getters (reader)
and section builders (build); masked display, diff(old, new) for reload and live checks live beside them."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from proxy.durations import parse_duration, parse_size
from proxy.tokens import TokenSettings

from .build import build_config
from .model import (
    Address,
    ClusterConfig,
    Config,
    ConfigError,
    DatabaseSettings,
    EndpointConfig,
    FailoverSettings,
    HealthSettings,
    MirrorSettings,
    PoolSettings,
    ServerSettings,
    TlsSettings,
    User,
)
from .reader import Context, Problems, syntax_problem

__all__ = [
    "Address",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "DatabaseSettings",
    "EndpointConfig",
    "FailoverSettings",
    "HealthSettings",
    "MirrorSettings",
    "PoolSettings",
    "ServerSettings",
    "TlsSettings",
    "TokenSettings",
    "User",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
]


def load_config(path: str) -> Config:
    """Read and validate a config file, resolving password_env/password_file; raises ConfigError."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError([f"config error: {path}: cannot read file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"config error: {path}: file is not UTF-8 (byte {exc.start})"]) from None
    return parse_config(text, path)


def parse_config(text: str, path: str = "<string>", env: Mapping[str, str] | None = None) -> Config:
    """Validate TOML text; relative file paths are resolved against the config file's directory."""
    problems = Problems(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problems.add(*syntax_problem(str(exc), text))
        raise ConfigError(problems.lines) from None
    base_dir = Path.cwd() if path.startswith("<") else Path(path).resolve().parent
    context = Context(problems, os.environ if env is None else env, base_dir)
    config = build_config(data, path, context)
    if problems.lines:
        raise ConfigError(problems.lines)
    return config
