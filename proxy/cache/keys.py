"""Cache keys: every input that changes a statement's result bytes, hashed into one short string."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def key_prefix(cluster: str, database: str, user: str, settings: Iterable[tuple[str, str | None]]) -> bytes:
    """The digest of what a session's keys share: cluster, database, user and the result-affecting
    session settings (name, value) in a fixed order (a session computes it again when they change)."""
    h = hashlib.blake2b(digest_size=20)
    for part in (cluster.encode(), database.encode(), user.encode()):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    for name, value in settings:
        raw = name.encode() + b"=" + (value.encode() if value is not None else b"\x00")
        h.update(len(raw).to_bytes(4, "big"))
        h.update(raw)
    return h.digest()


def statement_key(prefix: bytes, statement: bytes, parameters: bytes = b"") -> str:
    """The key of one statement's result under a session's key_prefix(): the statement text and
    (extended protocol) the bound parameter values with their formats and the result formats.
    Fields are length-prefixed, so no two different inputs share a key."""
    return hashlib.blake2b(b"".join((prefix, len(statement).to_bytes(4, "big"), statement,
                                     len(parameters).to_bytes(4, "big"), parameters)), digest_size=20).hexdigest()


def cache_key(cluster: str, database: str, user: str, settings: Iterable[tuple[str, str | None]],
              statement: bytes, parameters: bytes = b"") -> str:
    """statement_key() under key_prefix() in one call."""
    return statement_key(key_prefix(cluster, database, user, settings), statement, parameters)
