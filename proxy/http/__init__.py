"""HTTP status service (SPEC §7) on http_listen: /metrics, /healthz, /readyz, /status and the status page.

server.py  a small HTTP/1.1 server on asyncio streams (GET and HEAD, keep-alive) and the routes
page.py    the self-contained HTML status page (no external assets), rendering /status
"""

from __future__ import annotations

from .server import start_http_server

__all__ = ["start_http_server"]
