"""The HTTP side of fault injection (SPEC §13) for test scripts: POST /faults, GET /faults, DELETE /faults[/id].

POST takes a JSON object (proxy/faults/words.py `from_json`) and answers 201 with the fault as
SHOW FAULTS lists it; GET lists them; DELETE /faults clears all, DELETE /faults/<id> one. While
`[server] faults` is false every method answers 403 with the reason. Against cross-site requests
from browsers (a page may POST text/plain to a loopback listener without a preflight), POST needs
`Content-Type: application/json` (415 otherwise) and POST and DELETE carrying an `Origin` header
are refused (403): scripts send none. Answers are JSON: (status, body) pairs that server.py turns
into responses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..faults.injector import DISABLED
from ..faults.policy import FaultSpecError
from ..faults.words import from_json

if TYPE_CHECKING:
    from ..core.app_view import AppView as ProxyApp

PATH = "/faults"
MAX_BODY = 64 * 1024   # a fault description is a few hundred bytes
METHODS = ("GET", "POST", "DELETE")


def is_fault_path(path: str) -> bool:
    return path == PATH or path.startswith(PATH + "/")


def handle(app: ProxyApp, method: str, path: str, body: bytes,
           headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
    """(HTTP status, JSON-able body) for a request under /faults; `headers` by lower-case name."""
    injector = app.faults
    headers = headers or {}
    if method not in METHODS:
        return 405, {"error": f"{path} supports {', '.join(METHODS)}"}
    if method != "GET" and "origin" in headers:
        return 403, {"error": f"{method} {PATH} from a browser (the request has an Origin header) is refused"}
    if method == "POST" and headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        return 415, {"error": f"POST {PATH} needs Content-Type: application/json"}
    if not injector.enabled:
        return 403, {"error": DISABLED}
    tail = path[len(PATH) + 1:] if path != PATH else ""
    if method == "GET":
        return (200, injector.rows()) if not tail else (404, {"error": f"GET {PATH} lists every fault"})
    if method == "DELETE":
        if not tail:
            return 200, {"cleared": injector.clear()}
        if not tail.isdigit():
            return 400, {"error": f"invalid fault id {tail!r}"}
        if injector.remove(int(tail)) is None:
            return 404, {"error": f"no fault with id {tail}"}
        return 200, {"cleared": 1}
    if tail:
        return 404, {"error": f"POST to {PATH}"}
    try:
        spec = from_json(json.loads(body.decode("utf-8")))
        fault = injector.add(spec)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return 400, {"error": f"the body is not JSON: {exc}"}
    except FaultSpecError as exc:
        return 400, {"error": str(exc)}
    return 201, next(row for row in injector.rows() if row["id"] == fault.id)
