"""Admin console (SPEC §6): PostgreSQL protocol on admin_listen, database "dbproxy", admin users only.

resultset.py  sans-IO encoding of result sets (RowDescription / DataRow / CommandComplete)
views.py      read-only views of the running proxy, shared with /status and /metrics
commands.py   the command table (name, handler, help) and the handlers
console.py    one admin connection: startup, password login, simple queries
"""

from __future__ import annotations

from .console import start_admin_console

__all__ = ["start_admin_console"]
