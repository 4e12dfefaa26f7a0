"""[server.tokens] and the users' `auth` key: reading and checking them (a part of proxy.config)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from proxy.tokens import MIN_SECRET_LENGTH, TokenSettings

from .model import User
from .reader import Context, Table, read_secret_file, toml_type

TOKEN_KEYS = ("secret_env", "secret_file", "previous_secret_env", "previous_secret_file", "max_ttl",
              "rotation_grace", "allow_plaintext_tokens")
USER_AUTH = ("password", "token", "password_or_token")
DEFAULT_MAX_TTL = 3600.0


def build_tokens(t: Table, context: Context) -> TokenSettings | None:
    """The token settings, or None (with a problem recorded) when they are unusable."""
    given = [key for key in ("secret_env", "secret_file") if key in t.data]
    if len(given) != 1:
        t.problem(None, "give exactly one of secret_env or secret_file (the secret that signs tokens)"
                  if not given else "give only one of secret_env, secret_file")
        secret = None
    else:
        secret = _one_secret(t, given[0], t.optional_text(given[0]), context)
    sources = [(given[0], _source(given[0], t.data[given[0]], context))] if len(given) == 1 else []
    previous: list[str] = []
    for key in ("previous_secret_env", "previous_secret_file"):
        value = t.data.get(key)
        if value is None:
            continue
        names: Sequence[Any] = [value] if isinstance(value, str) else value if isinstance(value, list) else ()
        if not names or not all(isinstance(name, str) for name in names):
            t.problem(key, f"expected a string or an array of strings, got {toml_type(value)}")
            continue
        for name in names:
            sources.append((key, _source(key, name, context)))
            found = _one_secret(t, key, name, context)
            if found is not None and found not in previous:
                previous.append(found)
    max_ttl = t.duration("max_ttl", DEFAULT_MAX_TTL, positive=True)
    grace = t.duration("rotation_grace", max_ttl)
    allow_plaintext = t.boolean("allow_plaintext_tokens", False)
    if secret is None:
        return None
    return TokenSettings(secret=secret, previous=tuple(p for p in previous if p != secret), max_ttl=max_ttl,
                         rotation_grace=grace, allow_plaintext_tokens=allow_plaintext, sources=tuple(sources))


def _source(key: str, name: object, context: Context) -> str:
    """What the config names (an environment variable, a file as an absolute path): never the secret."""
    text = str(name)
    return str(context.resolve(text)) if key.endswith("_file") else text


def _one_secret(t: Table, key: str, name: str | None, context: Context) -> str | None:
    if name is None:   # not a string: already reported
        return None
    if key.endswith("_file"):
        secret, _ = read_secret_file(t, key, context.resolve(name))
    else:
        secret = context.env.get(name)
        if not secret:
            t.problem(key, f"environment variable {name} is {'empty' if secret == '' else 'not set'}")
            return None
    if secret is not None and len(secret) < MIN_SECRET_LENGTH:
        t.problem(key, f"the secret must be at least {MIN_SECRET_LENGTH} characters long "
                  "(e.g. openssl rand -base64 32)")
        return None
    return secret


def check_user_auth(user: User, t: Table, tokens_given: bool) -> None:
    """Problems of one user's auth: token users need [server.tokens], no password, and are not admins."""
    if user.auth == "password":
        return
    if user.admin:
        t.problem("auth", f'auth = "{user.auth}" is not available for admin users (the admin console '
                  "takes passwords only)")
    if not tokens_given:
        t.problem("auth", f'auth = "{user.auth}" needs [server.tokens] (secret_env or secret_file)')
    if user.auth == "token" and any(key in t.data for key in ("password", "password_env", "password_file")):
        t.problem("auth", 'auth = "token" users log in with tokens only: leave out password '
                  "(the servers' login is server_user / server_password)")
