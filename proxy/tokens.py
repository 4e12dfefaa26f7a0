"""Signed login tokens (SPEC §10, the RDS IAM-token pattern), sans-IO: every check takes `now`.

A token is `dbp1.<payload>.<tag>`: `payload` is the base64url (no padding) of the UTF-8 text
"<expiry>\\n<endpoint>\\n<user>" (expiry in Unix seconds, endpoint "*" for any endpoint, else an
endpoint name or "cluster/endpoint"), and `tag` the base64url of HMAC-SHA256(secret, "dbp1.<payload>").
The tag is compared as text, in constant time, before the payload is read: a token whose bytes were
changed anywhere (including the unused bits of a base64 character) never verifies.

Rotation (`TokenKeys`): the current secret signs and verifies; each previous secret verifies for
`rotation_grace` (default: max_ttl) after this process first saw it listed as a previous secret —
at start, or at the reload that moved it there. Since no token lives longer than max_ttl, every
token issued before a rotation keeps working until it expires, and a leaked old secret stops
working by itself once the grace has passed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass, field

VERSION = "dbp1"
ANY_ENDPOINT = "*"
MIN_SECRET_LENGTH = 32
# A token may expire at most this much later than now + max_ttl (clocks of the issuing host and the proxy).
CLOCK_SKEW = 60.0


@dataclass(frozen=True)
class TokenSettings:
    """[server.tokens]: the signing secret, previous secrets still accepted, and the lifetime rules."""

    secret: str = field(repr=False)
    previous: tuple[str, ...] = field(default=(), repr=False)
    max_ttl: float = 3600.0
    rotation_grace: float = 3600.0
    allow_plaintext_tokens: bool = False
    # Where the secrets come from, for display: ("secret_env", "VAR"), ("previous_secret_file", "/path"), ...
    sources: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says."""

    user: str
    endpoint: str
    expires: int
    key: str = "current"   # which secret signed it: "current" or "previous[i]"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tag(secret: str, signed: str) -> str:
    return _b64(hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest())


def sign(secret: str, user: str, endpoint: str, expires: int) -> str:
    """A token for `user` on `endpoint` ("*": any) valid until `expires` (Unix seconds)."""
    if "\n" in endpoint:
        raise ValueError("an endpoint name cannot contain a newline")
    payload = "\n".join((str(int(expires)), endpoint, user))
    signed = f"{VERSION}.{_b64(payload.encode())}"
    return f"{signed}.{_tag(secret, signed)}"


def issue(settings: TokenSettings, user: str, endpoint: str, ttl: float, now: float) -> str:
    """`dbproxy token`: a token signed with the current secret; ttl must be within (0, max_ttl]."""
    if not 0 < ttl <= settings.max_ttl:
        raise ValueError(f"ttl must be greater than zero and at most max_ttl ({settings.max_ttl:g}s)")
    return sign(settings.secret, user, endpoint, int(now + ttl))


def looks_like_token(text: str | bytes) -> bool:
    """Whether a cleartext password has the token's shape (for password_or_token users)."""
    prefix = VERSION + "."
    return text.startswith(prefix) if isinstance(text, str) else text.startswith(prefix.encode())


def endpoint_matches(claimed: str, cluster: str, endpoint: str) -> bool:
    return claimed in (ANY_ENDPOINT, endpoint, f"{cluster}/{endpoint}")


class TokenError(Exception):
    """Why a token was refused: for the server log only (clients see a wrong-password error)."""


def _open(token: str, secrets: list[tuple[str, str]]) -> tuple[str, str]:
    """(payload text, label of the secret that signed it); TokenError when no secret did."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION or not parts[1] or not parts[2]:
        raise TokenError("not a dbproxy token (malformed)")
    signed = f"{parts[0]}.{parts[1]}"
    given = parts[2].encode("ascii", "replace")
    match = ""
    for label, secret in secrets:   # every secret is tried: the time taken does not say which one matched
        if hmac.compare_digest(_tag(secret, signed).encode(), given) and not match:
            match = label
    if not match:
        raise TokenError("token signature does not verify (tampered, or signed with another secret)")
    try:
        return _unb64(parts[1]).decode("utf-8"), match
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise TokenError("token payload is malformed") from None


def verify(token: str, secrets: list[tuple[str, str]], *, user: str, cluster: str, endpoint: str, now: float,
           max_ttl: float) -> TokenClaims:
    """The token's claims if one of `secrets` ((label, secret) pairs) signed it and it is valid for this
    login at `now`; else TokenError saying why (never containing the token)."""
    payload, label = _open(token, secrets)
    fields = payload.split("\n", 2)
    if len(fields) != 3 or not fields[0].isdigit():
        raise TokenError("token payload is malformed")
    claims = TokenClaims(user=fields[2], endpoint=fields[1], expires=int(fields[0]), key=label)
    if claims.expires <= now:
        raise TokenError(f"token expired {now - claims.expires:.0f}s ago")
    if claims.expires > now + max_ttl + CLOCK_SKEW:
        raise TokenError(f"token lifetime exceeds max_ttl ({max_ttl:g}s)")
    if claims.user != user:
        raise TokenError(f"token was issued for another user ({claims.user!r})")
    if not endpoint_matches(claims.endpoint, cluster, endpoint):
        raise TokenError(f"token is for endpoint {claims.endpoint!r}, not {cluster}/{endpoint}")
    return claims


def _fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenKeys:
    """The secrets a running proxy accepts, with the time each previous secret was first seen as one.

    Rebuilt at each reload from the new settings and the old TokenKeys (`TokenKeys(settings, old, now)`).
    """

    def __init__(self, settings: TokenSettings | None, previous: TokenKeys | None = None, now: float = 0.0) -> None:
        self.settings = settings
        old_since = previous._since if previous is not None else {}
        self._since: dict[str, float] = {}
        if settings is not None:
            for secret in settings.previous:
                key = _fingerprint(secret)
                self._since[key] = old_since.get(key, now)

    @property
    def allow_plaintext(self) -> bool:
        return self.settings is not None and self.settings.allow_plaintext_tokens

    def verify(self, token: str | bytes, *, user: str, cluster: str, endpoint: str, now: float) -> str | None:
        """None if the token lets `user` in on cluster/endpoint at `now`, else the reason (for the log)."""
        settings = self.settings
        if settings is None:
            return "token logins are not configured ([server.tokens])"
        if isinstance(token, bytes):
            try:
                token = token.decode("ascii")
            except UnicodeDecodeError:
                return "not a dbproxy token (malformed)"
        secrets = [("current", settings.secret)]
        expired_grace = False
        for index, secret in enumerate(settings.previous):
            if now < self._since.get(_fingerprint(secret), now) + settings.rotation_grace:
                secrets.append((f"previous[{index}]", secret))
            else:
                expired_grace = True
        try:
            verify(token, secrets, user=user, cluster=cluster, endpoint=endpoint, now=now, max_ttl=settings.max_ttl)
        except TokenError as exc:
            reason = str(exc)
            if expired_grace and reason.startswith("token signature"):
                reason += "; a previous secret's rotation grace has ended"
            return reason
        return None
