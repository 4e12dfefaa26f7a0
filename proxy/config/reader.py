"""Reading TOML tables: typed getters that record problems (with key paths and hints) instead of raising,
and secrets given inline, from the environment or from a file."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.core.admission import parse_network
from proxy.durations import parse_duration

from .model import Address


def syntax_problem(message: str, text: str) -> tuple[str, str]:
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if match is None:
        return "end of file" if "end of document" in message else "syntax", f"invalid TOML: {message}"
    line, column = int(match[1]), int(match[2])
    what = f"invalid TOML: {message[: match.start()]}"
    lines = text.splitlines()
    if line <= len(lines) and lines[line - 1][column - 1 : column] == ";":
        what += " (TOML has no ';' separator: put each key = value on its own line)"
    return f"line {line}, column {column}", what


class Problems:
    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: list[str] = []

    def add(self, key: str, what: str) -> None:
        self.lines.append(f"config error: {self.path}: {key}: {what}")


@dataclass
class Context:
    problems: Problems
    env: Mapping[str, str]
    base_dir: Path

    def resolve(self, name: str) -> Path:
        return self.base_dir / Path(name).expanduser()


def toml_type(value: object) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"{'integer' if isinstance(value, int) else 'float'} {value}"
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a date/time {value}"


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Table:
    """A TOML table being read: typed getters record problems (and return a default) instead of raising."""

    def __init__(self, data: Mapping[str, Any], key: str, problems: Problems, known: Iterable[str]) -> None:
        self.data = data
        self.key = key
        self.problems = problems
        self.known = tuple(known)
        for name in data:
            if name not in self.known:
                hint = difflib.get_close_matches(name, self.known, n=1)
                self.problems.add(
                    self.path(name), "unknown key" + (f" (did you mean {hint[0]}?)" if hint else "")
                )

    def path(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def problem(self, name: str | None, what: str) -> None:
        self.problems.add(self.key if name is None else self.path(name), what)

    def _get(self, name: str, accept: Callable[[Any], bool], expected: str, required: bool = False) -> Any:
        if name not in self.data:
            if required:
                self.problem(name, "required key is missing")
            return None
        value = self.data[name]
        if not accept(value):
            self.problem(name, f"expected {expected}, got {toml_type(value)}")
            return None
        return value

    def optional_text(self, name: str, *, required: bool = False) -> str | None:
        value: str | None = self._get(name, lambda v: isinstance(v, str), "a string", required)
        if value == "" and required:
            self.problem(name, "must not be empty")
            return None
        return value

    def text(self, name: str, default: str, *, required: bool = False) -> str:
        value = self.optional_text(name, required=required)
        return default if value is None else value

    def choice(
        self, name: str, choices: tuple[str, ...], default: str, *, required: bool = False, note: str = ""
    ) -> str:
        value = self.optional_text(name, required=required)
        if value is None:
            return default
        if value not in choices:
            hint = difflib.get_close_matches(value, choices, n=1)
            self.problem(
                name,
                f'invalid value "{value}": expected one of {" | ".join(choices)}{note}'
                + (f' (did you mean "{hint[0]}"?)' if hint else ""),
            )
            return default
        return value

    def integer(self, name: str, default: int, *, minimum: int = 0) -> int:
        value: int | None = self._get(name, is_int, "an integer")
        if value is None:
            return default
        if value < minimum:
            self.problem(name, f"must be at least {minimum} (got {value})")
            return default
        return value

    def optional_boolean(self, name: str) -> bool | None:
        value: bool | None = self._get(name, lambda v: isinstance(v, bool), "true or false")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.optional_boolean(name)
        return default if value is None else value

    def fraction(self, name: str, default: float) -> float:
        """A number in (0, 1] (a probability, a sample rate)."""
        value: float | None = self._get(name, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
                                        "a number")
        if value is None:
            return default
        if not 0 < value <= 1:
            self.problem(name, f"must be greater than 0 and at most 1 (got {value})")
            return default
        return float(value)

    def duration(self, name: str, default: float, *, positive: bool = False) -> float:
        text: str | None = self._get(
            name, lambda v: isinstance(v, str), 'a duration string with a unit (e.g. "500ms", "2s", "5m")'
        )
        if text is None:
            return default
        try:
            seconds = parse_duration(text)
        except ValueError as exc:
            self.problem(name, str(exc))
            return default
        if positive and seconds <= 0:
            self.problem(name, "must be greater than zero")
            return default
        return seconds

    def address(self, name: str, *, required: bool = False) -> Address | None:
        text = self.optional_text(name, required=required)
        return None if text is None else self._parse_address(self.path(name), text)

    def address_list(self, name: str, *, required: bool = False) -> tuple[Address, ...] | None:
        items: list[Any] | None = self._get(
            name, lambda v: isinstance(v, list), 'an array of "host:port" strings', required
        )
        if items is None:
            return None
        addresses: list[Address] = []
        for index, item in enumerate(items):
            key = f"{self.path(name)}[{index}]"
            if not isinstance(item, str):
                self.problems.add(key, f'expected a "host:port" string, got {toml_type(item)}')
                continue
            address = self._parse_address(key, item)
            if address in addresses:
                self.problems.add(key, f"{address} is listed twice")
            elif address is not None:
                addresses.append(address)
        return tuple(addresses)

    def _parse_address(self, key: str, text: str) -> Address | None:
        try:
            return Address.parse(text)
        except ValueError as exc:
            self.problems.add(key, str(exc))
            return None

    def parse_address(self, key: str, text: str) -> Address | None:
        """`text` as an address, or None with a problem recorded under the full key path `key`."""
        return self._parse_address(key, text)

    def value(self, name: str, accept: Callable[[Any], bool], expected: str, *, required: bool = False) -> Any:
        """The raw value of `name` if `accept` takes it, else None (a problem recorded: "expected ...")."""
        return self._get(name, accept, expected, required)

    def network_list(self, name: str) -> tuple[str, ...]:
        """An allowlist: CIDR strings, normalized; each bad entry is a problem with its index."""
        items: list[Any] | None = self._get(name, lambda v: isinstance(v, list), 'an array of CIDR strings')
        networks: list[str] = []
        for index, item in enumerate(items or ()):
            key = f"{self.path(name)}[{index}]"
            if not isinstance(item, str):
                self.problems.add(key, f'expected a CIDR string such as "10.0.0.0/8", got {toml_type(item)}')
                continue
            try:
                networks.append(parse_network(item))
            except ValueError as exc:
                self.problems.add(key, str(exc))
        if items == []:
            self.problem(name, "must not be empty (leave it out to accept every address)")
        return tuple(networks)

    def text_list(self, name: str) -> tuple[str, ...]:
        items: list[Any] | None = self._get(
            name, lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v), "an array of strings"
        )
        return tuple(items or ())

    def table(self, name: str, known: Iterable[str]) -> Table:
        value: dict[str, Any] | None = self._get(name, lambda v: isinstance(v, dict), "a table")
        return Table(value or {}, self.path(name), self.problems, known)

    def table_list(self, name: str, known: Iterable[str], *, header: str) -> list[Table] | None:
        items: list[Any] | None = self._get(
            name,
            lambda v: isinstance(v, list) and all(isinstance(i, dict) for i in v),
            f"an array of tables ({header})",
        )
        if items is None:
            return None
        return [Table(item, f"{self.path(name)}[{i}]", self.problems, known) for i, item in enumerate(items)]


def read_secret(t: Table, prefix: str, context: Context) -> tuple[str | None, bool]:
    """Read `prefix`, `prefix_env` or `prefix_file`; returns (secret or None, False if a problem was recorded)."""
    given = [key for key in (prefix, f"{prefix}_env", f"{prefix}_file") if key in t.data]
    if not given:
        return None, True
    if len(given) > 1:
        t.problem(None, f"give only one of {', '.join(given)}")
        return None, False
    key = given[0]
    text = t.optional_text(key)
    if text is None:  # not a string: already reported
        return None, False
    if key.endswith("_file"):
        return read_secret_file(t, key, context.resolve(text))
    if key.endswith("_env"):
        value = context.env.get(text)
        if value:
            return value, True
        t.problem(key, f"environment variable {text} is {'empty' if value == '' else 'not set'}")
        return None, False
    if text:
        return text, True
    t.problem(key, "must not be empty (leave it out for trust authentication)")
    return None, False


def read_secret_file(t: Table, key: str, path: Path) -> tuple[str | None, bool]:
    try:
        secret = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        t.problem(key, f"cannot read {path}: {exc.strerror or exc}")
        return None, False
    except UnicodeDecodeError:
        t.problem(key, f"{path} is not UTF-8 text")
        return None, False
    if not secret:
        t.problem(key, f"{path} is empty")
        return None, False
    return secret, True
