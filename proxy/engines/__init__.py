"""Database engines: one folder per wire protocol (postgres/, mysql/) behind the core's `Engine` adapter.

The core never imports an engine package; it asks this registry by the config's `engine` name.
"""

from __future__ import annotations

import importlib

from .base import Engine, ServerLink

# engine name -> module that defines ENGINE (imported on first use: a PostgreSQL-only proxy never
# loads the MySQL code, and the other way round)
_MODULES = {"postgres": "proxy.engines.postgres.engine", "mysql": "proxy.engines.mysql.engine"}
_loaded: dict[str, Engine] = {}


def get_engine(name: str) -> Engine:
    """The adapter for an engine name from the config (config validation has checked the name)."""
    engine = _loaded.get(name)
    if engine is None:
        engine = _loaded[name] = importlib.import_module(_MODULES[name]).ENGINE
    return engine


def engine_names() -> tuple[str, ...]:
    return tuple(_MODULES)


__all__ = ["Engine", "ServerLink", "engine_names", "get_engine"]
