"""Session settings (GUCs) a client has set, and the SQL that makes a server connection match them.

In transaction pooling a client's `SET` and startup parameters must follow it from one server
connection to the next and never leak to other clients. Each client keeps the settings it
wants (`GucState.client`, name → SQL value text); each server connection records what has been
applied to it (`ServerConnection.gucs`). On attach, `replay_sql()` gives the SET/RESET
statements that turn the server's state into the client's.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from typing import Protocol

# Literals that read back the same whatever standard_conforming_strings the server has (a client may SET it).
from .session_state import quote_literal, quote_name
from .wire import messages as m

# Reported parameters a client cannot change with SET (or that change on their own).
_NOT_SETTABLE = frozenset({
    "server_version", "server_encoding", "is_superuser", "session_authorization", "integer_datetimes",
    "in_hot_standby", "scram_iterations",
})
_STARTUP_KEYS_NOT_GUCS = frozenset({"user", "database", "options", "replication"})
# Values for these are lists of identifiers: replay them verbatim, not as one string literal.
_LIST_VALUED = frozenset({"search_path"})
_NAME_RE = re.compile(r"^[a-z_][a-z0-9_.]*$")


class HasGucs(Protocol):
    gucs: dict[str, str]


class SetLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def value(self) -> str | None: ...


def _sql_value(name: str, value: str) -> str:
    return value if name in _LIST_VALUED else quote_literal(value)


def startup_gucs(params: dict[str, str]) -> dict[str, str]:
    """Settings requested in the startup packet, including `options=-c name=value` (a new dict).

    Reconnecting clients do not pay for this again: proxy/startup.py keeps the result per packet.
    """
    gucs: dict[str, str] = {}
    for key, value in params.items():
        name = key.lower()
        if name in _STARTUP_KEYS_NOT_GUCS or name in _NOT_SETTABLE or not _NAME_RE.match(name):
            continue
        gucs[name] = _sql_value(name, value)
    options = params.get("options", "")
    if options:
        words = split_options(options)
        i = 0
        while i < len(words):
            word = words[i]
            if word == "-c" and i + 1 < len(words):
                setting, i = words[i + 1], i + 2
            elif word.startswith("-c"):
                setting, i = word[2:], i + 1
            elif word.startswith("--"):
                setting, i = word[2:], i + 1
            else:
                raise ValueError(f"unsupported option {word!r}")
            name, sep, value = setting.partition("=")
            name = name.lower().replace("-", "_")
            if not sep or not _NAME_RE.match(name):
                raise ValueError(f"invalid option {setting!r}")
            gucs[name] = _sql_value(name, value)
    return gucs


def split_options(options: str) -> list[str]:
    """Split a startup `options` string as PostgreSQL does: on whitespace, backslash escapes."""
    words: list[str] = []
    word: list[str] = []
    escaped = False
    for ch in options:
        if escaped:
            word.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch.isspace():
            if word:
                words.append("".join(word))
                word = []
        else:
            word.append(ch)
    if word:
        words.append("".join(word))
    return words


class GucState:
    """What one client has set; see the module docstring."""

    __slots__ = ("client",)

    def __init__(self) -> None:
        self.client: dict[str, str] = {}

    def welcome_parameters(self, server_parameters: dict[str, str]) -> dict[str, str]:
        """ParameterStatus values for the client's login: server defaults overlaid with its startup values."""
        params = dict(server_parameters)
        by_lower = {k.lower(): k for k in params}
        for name, sql_value in self.client.items():
            key = by_lower.get(name)
            if key is not None:
                params[key] = canonical_value(name, _unquote(sql_value))
        return params

    def replay_sql(self, server_gucs: dict[str, str]) -> str:
        """SET/RESET statements that make a server's settings equal this client's ('' if equal)."""
        if server_gucs == self.client:
            return ""
        parts = [f"SET {quote_name(name)} TO {value}" for name, value in self.client.items()
                 if server_gucs.get(name) != value]
        parts.extend(f"RESET {quote_name(name)}" for name in server_gucs if name not in self.client)
        return "; ".join(parts)

    def apply(self, sets: Iterable[SetLike], server: HasGucs) -> None:
        """A client ran SET/RESET on server: both now have the new value."""
        for cmd in sets:
            name = cmd.name.lower()
            if cmd.value is None:
                if name == "all":
                    self.client.clear()
                    server.gucs.clear()
                else:
                    self.client.pop(name, None)
                    server.gucs.pop(name, None)
            elif _NAME_RE.match(name) and name not in _NOT_SETTABLE:
                self.client[name] = cmd.value
                server.gucs[name] = cmd.value

    def use_captured(self, names: list[str], rows: list[bytes], server: HasGucs) -> None:
        """The real values of settings SET inside a transaction, read after it (one DataRow: `names`' values)."""
        try:
            values = m.parse_data_row(rows[0]) if rows else []
        except (ValueError, struct.error):
            values = []
        for name, value in zip(names, values, strict=False):
            if value is not None:
                self.reported([(name.encode(), value.encode())], server)

    def reported(self, parameters: Iterable[tuple[bytes, bytes]], server: HasGucs) -> None:
        """ParameterStatus seen while this client used server (SET inside functions, set_config())."""
        for raw_name, raw_value in parameters:
            name = raw_name.decode("utf-8", "replace").lower()
            if name in _NOT_SETTABLE or not _NAME_RE.match(name):
                continue
            value = _sql_value(name, raw_value.decode("utf-8", "replace"))
            if self.client.get(name) != value:
                # The server's own spelling of what it now has ('utc' → 'UTC'): replays the same.
                self.client[name] = value
                server.gucs[name] = value

    def clear(self, server: HasGucs) -> None:
        self.client.clear()
        server.gucs.clear()


# PostgreSQL's encoding names (encnames.c): the server reports client_encoding by these, whatever
# spelling the client used ('utf8', 'UTF-8', 'unicode' → 'UTF8'). Keys: lower case, letters and digits only.
_ENCODINGS = {name.lower().replace("_", ""): name for name in (
    "SQL_ASCII EUC_JP EUC_CN EUC_KR EUC_TW EUC_JIS_2004 UTF8 MULE_INTERNAL LATIN1 LATIN2 LATIN3 LATIN4 LATIN5 "
    "LATIN6 LATIN7 LATIN8 LATIN9 LATIN10 WIN1256 WIN1258 WIN866 WIN874 KOI8R WIN1251 WIN1252 ISO_8859_5 "
    "ISO_8859_6 ISO_8859_7 ISO_8859_8 WIN1250 WIN1253 WIN1254 WIN1255 WIN1257 KOI8U SJIS BIG5 GBK UHC GB18030 "
    "JOHAB SHIFT_JIS_2004").split()}
_ENCODINGS.update({
    "unicode": "UTF8", "iso88591": "LATIN1", "iso88592": "LATIN2", "iso88593": "LATIN3", "iso88594": "LATIN4",
    "iso88599": "LATIN5", "iso885910": "LATIN6", "iso885913": "LATIN7", "iso885914": "LATIN8",
    "iso885915": "LATIN9", "iso885916": "LATIN10", "alt": "WIN866", "win": "WIN1251", "koi8": "KOI8R",
    "mskanji": "SJIS", "shiftjis": "SJIS", "tcvn": "WIN1258", "tcvn5712": "WIN1258", "vscii": "WIN1258",
    "abc": "WIN1258", "windows1250": "WIN1250", "windows1251": "WIN1251", "windows1252": "WIN1252",
    "windows1253": "WIN1253", "windows1254": "WIN1254", "windows1255": "WIN1255", "windows1256": "WIN1256",
    "windows1257": "WIN1257", "windows1258": "WIN1258", "windows866": "WIN866", "windows874": "WIN874",
    "win932": "SJIS", "windows932": "SJIS", "win936": "GBK", "windows936": "GBK", "win949": "UHC",
    "windows949": "UHC", "win950": "BIG5", "windows950": "BIG5", "eucjis2004": "EUC_JIS_2004",
    "shiftjis2004": "SHIFT_JIS_2004", "iso88595": "ISO_8859_5", "iso88596": "ISO_8859_6",
    "iso88597": "ISO_8859_7", "iso88598": "ISO_8859_8",
})


def canonical_value(name: str, value: str) -> str:
    """A startup setting as the server would report it in ParameterStatus (client_encoding by
    PostgreSQL's encoding name; other settings as given)."""
    if name == "client_encoding":
        return _ENCODINGS.get("".join(ch for ch in value.lower() if ch.isalnum()), value)
    return value


def _unquote(sql_value: str) -> str:
    if len(sql_value) >= 2 and sql_value[0] == "'" and sql_value[-1] == "'":
        return sql_value[1:-1].replace("''", "'")
    return sql_value
