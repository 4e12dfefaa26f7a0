"""Token logins on a client session, whatever its engine (SPEC §10; the tokens themselves: proxy/tokens.py).

A token user's secret arrives as a cleartext password: PostgreSQL AuthenticationCleartextPassword,
MySQL mysql_clear_password. These functions say whether it may be sent on this connection, decide
it, and log a refusal's real reason (the client only hears "wrong password").
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import TYPE_CHECKING

from ..errors import AuthenticationFailed
from ..tokens import looks_like_token

if TYPE_CHECKING:
    from ..config import User
    from .session import ClientSessionCore

log = logging.getLogger("dbproxy.client")


def tokens_usable(session: ClientSessionCore) -> bool:
    """Whether a token may be sent here as a cleartext password: over TLS, or with allow_plaintext_tokens."""
    return session.tls_version is not None or session.app.tokens.allow_plaintext


def postgres_method(session: ClientSessionCore, user: User, client_auth: str) -> str:
    """The PostgreSQL client authentication of this login: "password" (cleartext, for the token) for token
    users over TLS (or with allow_plaintext_tokens) and password_or_token users there (unless trust);
    elsewhere client_auth for password_or_token users, and a token user is refused without being asked
    (the token never crosses in plain text)."""
    if user.auth == "password" or (user.auth == "password_or_token" and client_auth == "trust"):
        return client_auth
    if tokens_usable(session):
        return "password"
    if user.auth == "password_or_token":
        return client_auth
    session._login_method = "token"
    log_refusal(session, user.name, "token login over plain text refused (allow_plaintext_tokens = false)")
    session.auth_failed()
    raise AuthenticationFailed(f'password authentication failed for user "{user.name}"')


def check_cleartext(session: ClientSessionCore, user: User, secret: bytes) -> str | None:
    """None when a cleartext secret lets a token user in — a valid token, or for password_or_token
    users their password over TLS — else the reason, for the server log (never the secret)."""
    session._login_method = "token" if user.auth == "token" or looks_like_token(secret) else "password"
    if user.auth == "password_or_token" and user.password is not None and session.tls_version is not None \
            and hmac.compare_digest(secret, user.password.encode()):
        return None
    if not looks_like_token(secret):
        return "wrong password" if user.auth == "password_or_token" else "not a dbproxy token"
    if session.tls_version is None and not session.app.tokens.allow_plaintext:
        return "token login over plain text refused (allow_plaintext_tokens = false)"
    return session.app.tokens.verify(secret, user=user.name, cluster=session.cluster.name,
                                     endpoint=session.endpoint.name, now=time.time())


def log_refusal(session: ClientSessionCore, user_name: str, reason: str) -> None:
    """A token user's refusal: the real reason in the log and the audit log (the client is told less)."""
    if not session._close_reason:
        session._close_reason = f"login refused: {reason}"
    log.info("client %s: login refused for user %r on %s/%s: %s", session.peer, user_name[:64], session.cluster.name,
             session.endpoint.name, reason)
