"""[clusters.<name>.failover] keys of mode "patroni": the members' REST API URLs and their credentials."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from .reader import Context, Table, read_secret, toml_type
from .urls import masked_url

PATRONI_KEYS = ("patroni", "patroni_user", "patroni_password", "patroni_password_env", "patroni_password_file",
                "patroni_ca")


def patroni_urls(t: Table, mode: str, engine: str) -> tuple[str, ...]:
    """`patroni = [...]` as normalized "scheme://host:port" base URLs; problems recorded with their index."""
    items: Any = t.data.get("patroni")
    if items is None:
        if mode == "patroni":
            t.problem("patroni", 'required with mode = "patroni": the members\' REST API URLs, '
                                 'e.g. ["http://10.0.0.1:8008", "http://10.0.0.2:8008"]')
        return ()
    if mode != "patroni":
        t.problem("patroni", f'only used with mode = "patroni" (mode is "{mode}")')
    if engine and engine != "postgres":
        t.problem("mode" if mode == "patroni" else "patroni", f'Patroni manages PostgreSQL only (engine is "{engine}")')
    if not isinstance(items, list) or not items:
        t.problem("patroni", "expected a non-empty array of URLs" if isinstance(items, list)
                  else f"expected an array of URLs, got {toml_type(items)}")
        return ()
    urls: list[str] = []
    for index, item in enumerate(items):
        key = f"{t.path('patroni')}[{index}]"
        url, problem = normalize_url(item)
        if problem:
            t.problems.add(key, problem)
        elif url in urls:
            t.problems.add(key, f"{url} is listed twice")
        else:
            urls.append(url)
    return tuple(urls)


def normalize_url(item: object) -> tuple[str, str]:
    """(normalized URL, "") or ("", what is wrong with it)."""
    if not isinstance(item, str):
        return "", f'expected a URL string such as "http://10.0.0.1:8008", got {toml_type(item)}'
    shown = masked_url(item)   # never the password of http://user:password@host in a message
    try:
        parts = urlsplit(item.strip())
        port = parts.port
    except ValueError as exc:
        return "", f'invalid URL "{shown}": {exc}'
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "", f'invalid URL "{shown}": expected http://host:port or https://host:port'
    if parts.username is not None or parts.password is not None:
        return "", f'invalid URL "{shown}": put credentials in patroni_user and patroni_password_env, not in the URL'
    if port is None:
        return "", f'invalid URL "{shown}": give the port (Patroni\'s REST API listens on 8008 by default)'
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "", f'invalid URL "{shown}": give the API\'s base URL only, without a path ("/cluster" is added)'
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}", ""


def patroni_credentials(t: Table, context: Context) -> tuple[str | None, str | None]:
    """(patroni_user, patroni_password): both or neither."""
    user = t.optional_text("patroni_user", required="patroni_user" in t.data)
    password = read_secret(t, "patroni_password", context)[0]
    if password is not None and user is None:
        t.problem("patroni_password", "needs patroni_user (HTTP basic auth sends both)")
    if user is not None and password is None and not any(k.startswith("patroni_password") for k in t.data):
        t.problem("patroni_user", "needs patroni_password, patroni_password_env or patroni_password_file")
    return user, password
