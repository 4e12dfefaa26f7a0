"""URLs from the config as they may be shown: without credentials (displays) or with them masked (errors)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit


def shown_url(url: str) -> str:
    """A configured URL as /status, SHOW CACHE, SHOW CONFIG and the status page show it: no userinfo, no query.

    "memory" (no scheme) stays as it is, apart from a query.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return masked_url(url.split("?", 1)[0].split("#", 1)[0])
    if not parts.scheme:
        return parts.path
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def masked_url(text: str) -> str:
    """A URL (valid or not) to quote in an error message: its userinfo shown as ***@, its query as ?***."""
    head, at, tail = text.rpartition("@")
    if at:
        scheme, sep, _ = head.partition("://")
        text = f"{scheme}{sep}***@{tail}" if sep else f"***@{tail}"
    base, question, _ = text.partition("?")
    return f"{base}?***" if question else text


def cache_backend_problem(backend: str) -> str:
    """What is wrong with [cache] backend ("memory" or a Redis URL without credentials), or ""."""
    if backend == "memory":
        return ""
    try:
        parts = urlsplit(backend)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f'invalid value "{masked_url(backend)}": {exc}'
    if parts.scheme not in ("redis", "rediss", "unix") or not backend.startswith(f"{parts.scheme}://"):
        return f'invalid value "{masked_url(backend)}": expected "memory" or a redis://host:port/db URL'
    keys = {key.lower() for key, _ in parse_qsl(parts.query, keep_blank_values=True)}
    if "@" in parts.netloc or keys & {"password", "username"}:
        return "put the Redis user and password in username and password, password_env or password_file, not in the URL"
    return ""
