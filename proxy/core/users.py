"""Who may log in through the proxy: configured users with each engine's verifiers derived once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..config import User
from ..engines import get_engine


@dataclass(frozen=True)
class Login:
    """A configured user plus what client authentication needs precomputed, per engine name."""

    user: User
    secrets: dict[str, Any] = field(default_factory=dict)

    @property
    def verifier(self) -> Any:
        """The PostgreSQL SCRAM verifier (clients and the admin console), or None without a password."""
        return self.secrets.get("postgres")


class UserDirectory:
    """Users by name. Verifiers are derived at load (PBKDF2 once), and kept across reloads."""

    def __init__(self, users: tuple[User, ...], previous: UserDirectory | None = None,
                 engines: Iterable[str] = ("postgres",)) -> None:
        self._logins: dict[str, Login] = {}
        names = sorted(set(engines) | {"postgres"})   # the admin console speaks PostgreSQL
        for user in users:
            secrets: dict[str, Any] = {}
            old = previous.get(user.name) if previous else None
            if user.password is not None:
                for name in names:
                    if old is not None and old.user.password == user.password and name in old.secrets:
                        secrets[name] = old.secrets[name]
                    else:
                        secrets[name] = get_engine(name).derive_secret(user.password)
            self._logins[user.name] = Login(user, secrets)

    def get(self, name: str) -> Login | None:
        return self._logins.get(name)

    def users(self) -> list[User]:
        """Every configured user, in configuration order."""
        return [login.user for login in self._logins.values()]

    def __len__(self) -> int:
        return len(self._logins)
