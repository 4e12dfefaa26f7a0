"""Cache keys: every input that changes a statement's result bytes, hashed into one short string."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def cache_key(cluster: str, database: str, user: str, settings: Iterable[tuple[str, str | None]],
              statement: bytes, parameters: bytes = b"") -> str:
    """The key of one statement's result: cluster, database, user, the result-affecting session
    settings (name, value) in a fixed order, the statement text, and (extended protocol) the bound
    parameter values with their formats and the result formats. Fields are length-prefixed, so no
    two different inputs share a key."""
    h = hashlib.blake2b(digest_size=20)
    for part in (cluster.encode(), database.encode(), user.encode()):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    for name, value in settings:
        raw = name.encode() + b"=" + (value.encode() if value is not None else b"\x00")
        h.update(len(raw).to_bytes(4, "big"))
        h.update(raw)
    h.update(b"|")
    h.update(len(statement).to_bytes(4, "big"))
    h.update(statement)
    h.update(len(parameters).to_bytes(4, "big"))
    h.update(parameters)
    return h.hexdigest()
