"""Who may log in through the proxy: configured users with their SCRAM verifiers derived once."""

from __future__ import annotations

from dataclasses import dataclass

from .config import User
from .protocol.postgres.auth import ScramVerifier


@dataclass(frozen=True)
class Login:
    """A configured user plus what client authentication needs precomputed."""

    user: User
    verifier: ScramVerifier | None


class UserDirectory:
    """Users by name. Verifiers are derived at load (PBKDF2 once), and kept across reloads."""

    def __init__(self, users: tuple[User, ...], previous: UserDirectory | None = None) -> None:
        self._logins: dict[str, Login] = {}
        for user in users:
            verifier = None
            old = previous.get(user.name) if previous else None
            if old is not None and old.user.password == user.password:
                verifier = old.verifier
            elif user.password is not None:
                verifier = ScramVerifier.from_password(user.password)
            self._logins[user.name] = Login(user, verifier)

    def get(self, name: str) -> Login | None:
        return self._logins.get(name)

    def __len__(self) -> int:
        return len(self._logins)
