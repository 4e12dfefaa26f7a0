"""Routing hints in SQL comments: `/* dbproxy:route=primary */`, `-- dbproxy:route=replica`."""

from __future__ import annotations

import re
from typing import Literal

from pglast import parser

HintRoute = Literal["primary", "replica"]

_HINT = re.compile(r"dbproxy:route\s*=\s*(primary|replica)\b", re.IGNORECASE)


def route_hint(sql: str) -> HintRoute | None:
    """The route a comment in `sql` asks for, or None.

    Only real comments count: the same words inside a string literal or an identifier are not a
    hint.  If hints disagree, "primary" wins.  Text the SQL lexer rejects (an unterminated quote
    or comment) has no hint.
    """
    if "dbproxy:route" not in sql.lower():
        return None
    try:
        comments = parser.comments(sql)
    except (parser.ParseError, ValueError):
        return None
    found: set[str] = set()
    for comment in comments:
        found.update(match.group(1).lower() for match in _HINT.finditer(comment.str))
    if "primary" in found:
        return "primary"
    if "replica" in found:
        return "replica"
    return None
