"""The bytes-level shortcut before session_effects(): a lone SELECT that cannot change session state,
remembered per statement stem (point lookups that differ only in a trailing number share one verdict)."""

from __future__ import annotations

from ...core.stems import by_statement_stem
from .session_state import EMPTY, session_effects


def plain_select_text(sql: bytes) -> bool:
    """A lone SELECT with none of the words that could change session state (see
    session_state.might_change_session)."""
    low = sql.lower().rstrip(b"; \t\r\n")   # one trailing ';' (as pgbench sends) is still one statement
    return (low[:7] == b"select " and b";" not in low and b"advisory" not in low
            and b"set_config" not in low and b"temp" not in low and b"notify" not in low)


PLAIN_STEMS: dict[bytes, bool] = {}
plain_select = by_statement_stem(plain_select_text, PLAIN_STEMS)


def effect_free(query: bytes) -> bool:
    """The text changes no session state (the plain-SELECT shortcut, else session_effects)."""
    return plain_select(query) or session_effects(query.decode("utf-8", "replace")) is EMPTY
