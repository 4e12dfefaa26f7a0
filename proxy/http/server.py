"""A small HTTP/1.1 server on asyncio streams for /metrics, /healthz, /readyz, /status and the status page.

Only GET and HEAD, no request bodies, keep-alive by default (HTTP/1.1) and bounded everywhere:
request head size, time to send a request, idle time between requests on one connection. The one
exception is /faults (fault injection, faults.py): GET, POST with a small JSON body, DELETE.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..admin import views
from ..streams import start_screened_server
from . import faults
from .page import STATUS_PAGE

if TYPE_CHECKING:
    from ..core.app_view import AppView as ProxyApp

log = logging.getLogger("dbproxy.http")

MAX_HEAD = 16 * 1024         # request line + headers; status requests are tiny
REQUEST_TIMEOUT = 10.0       # to send a whole request head (slow clients are dropped)
KEEP_ALIVE_TIMEOUT = 30.0    # idle time allowed between requests on one connection


class BadRequest(Exception):
    """The bytes received are not an HTTP/1.x request we accept."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self, *, head_only: bool, keep_alive: bool) -> bytes:
        phrase = HTTPStatus(self.status).phrase
        lines = [f"HTTP/1.1 {self.status} {phrase}", f"Content-Type: {self.content_type}",
                 f"Content-Length: {len(self.body)}", "Cache-Control: no-store",
                 f"Connection: {'keep-alive' if keep_alive else 'close'}"]
        lines.extend(f"{name}: {value}" for name, value in self.headers.items())
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


def parse_request(head: bytes) -> Request:
    """Parse a request head (request line and headers, ending with an empty line)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes every byte
        raise BadRequest("undecodable request") from exc
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(f"malformed request line {lines[0][:80]!r}")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(f"malformed header line {line[:80]!r}")
        headers[name.lower()] = value.strip()
    path = target.split("?", 1)[0]
    if "transfer-encoding" in headers:
        raise BadRequest("chunked request bodies are not accepted")
    if headers.get("content-length", "0") != "0" and not (faults.is_fault_path(path) and method == "POST"):
        raise BadRequest("request bodies are not accepted")
    return Request(method, path, version, headers)


def body_length(request: Request) -> int:
    """The Content-Length of a request with a body (POST /faults), checked; 0 for the others."""
    text = request.headers.get("content-length", "0")
    if not text.isdigit():
        raise BadRequest(f"invalid Content-Length {text[:20]!r}")
    length = int(text)
    if length > faults.MAX_BODY:
        raise BadRequest(f"request body too large (at most {faults.MAX_BODY} bytes)")
    return length


# ---- routes ---------------------------------------------------------------------------------------

def _metrics(app: ProxyApp) -> Response:
    return Response(200, generate_latest(app.metrics.registry), CONTENT_TYPE_LATEST)


def _healthz(app: ProxyApp) -> Response:
    return Response(200, b"ok\n")


def _readyz(app: ProxyApp) -> Response:
    reasons = views.not_ready_reasons(app)
    warnings = "".join(f"warning: {problem}\n" for problem in views.failover_problems(app))
    if reasons:
        return Response(503, ("not ready: " + "; ".join(reasons) + "\n" + warnings).encode())
    return Response(200, ("ready\n" + warnings).encode())


def _status(app: ProxyApp) -> Response:
    return Response(200, json.dumps(views.status(app), indent=1).encode() + b"\n", "application/json")


def _page(app: ProxyApp) -> Response:
    return Response(200, STATUS_PAGE.encode(), "text/html; charset=utf-8")


ROUTES: dict[str, Callable[[ProxyApp], Response]] = {
    "/metrics": _metrics,
    "/healthz": _healthz,
    "/readyz": _readyz,
    "/status": _status,
    "/": _page,
    "/index.html": _page,
}


def respond(app: ProxyApp, request: Request) -> Response:
    if faults.is_fault_path(request.path) and request.method != "HEAD":
        status, answer = faults.handle(app, request.method, request.path, request.body, request.headers)
        return Response(status, json.dumps(answer, indent=1).encode() + b"\n", "application/json",
                        headers={"Allow": ", ".join(faults.METHODS)} if status == 405 else {})
    if request.method not in ("GET", "HEAD"):
        return Response(405, b"only GET and HEAD are supported\n", headers={"Allow": "GET, HEAD"})
    route = ROUTES.get(request.path)
    if route is None:
        known = " ".join(sorted(ROUTES))
        return Response(404, f"not found; try {known}\n".encode())
    return route(app)


# ---- connections ----------------------------------------------------------------------------------

async def _serve_connection(app: ProxyApp, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    first = True
    try:
        while True:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"),
                                              REQUEST_TIMEOUT if first else KEEP_ALIVE_TIMEOUT)
            except asyncio.IncompleteReadError:
                return   # the client closed the connection between requests
            except asyncio.LimitOverrunError:
                writer.write(Response(431, b"request head too large\n").encode(head_only=False, keep_alive=False))
                return
            first = False
            try:
                request = parse_request(head)
                length = body_length(request)
                if length:
                    body = await asyncio.wait_for(reader.readexactly(length), REQUEST_TIMEOUT)
                    request = Request(request.method, request.path, request.version, request.headers, body)
            except BadRequest as exc:
                writer.write(Response(400, f"{exc}\n".encode()).encode(head_only=False, keep_alive=False))
                return
            try:
                gathered = None   # [server] workers = N: /metrics and /status of every worker
                if app.workers is not None and request.method in ("GET", "HEAD"):
                    gathered = await app.workers.respond(request.path)
                response = gathered or respond(app, request)
            except Exception:  # noqa: BLE001 - one failing view must not take the service down
                log.exception("HTTP %s %s failed", request.method, request.path)
                response = Response(500, b"internal error\n")
            keep_alive = request.keep_alive and not app.draining
            writer.write(response.encode(head_only=request.method == "HEAD", keep_alive=keep_alive))
            await writer.drain()
            if not keep_alive:
                return
    except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def start_http_server(app: ProxyApp, host: str, port: int) -> asyncio.Server:
    """Serve the HTTP routes on host:port."""

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_connection(app, reader, writer)

    return await start_screened_server(accept, host, port, lambda peer: app.screen_service("http", peer),
                                       limit=MAX_HEAD)
