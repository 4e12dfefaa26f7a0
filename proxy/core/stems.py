"""Statement stems: texts that differ only in trailing digits share routing and session-state verdicts."""

from __future__ import annotations

from collections.abc import Callable


def statement_stem(sql: bytes) -> bytes:
    """The statement without trailing digits, ';' and spaces: texts that differ only there (a numeric
    literal at the end, as in point lookups) get the same routing and session-state verdicts."""
    return sql.rstrip(b"0123456789; \t\r\n")


def by_statement_stem(check: Callable[[bytes], bool], verdicts: dict[bytes, bool], kept: int = 4096,
                      max_length: int = 512) -> Callable[[bytes], bool]:
    """`check` remembered per statement stem (see statement_stem): point lookups that differ only in
    a trailing number share one verdict. For bytes-level session-state pre-filters, which trailing
    digits cannot change (a statement made of digits alone changes nothing). Only texts up to
    max_length are remembered in `verdicts`, at most `kept` of them (then the memo starts over)."""

    def remembered(sql: bytes) -> bool:
        if len(sql) > max_length:
            return check(sql)
        stem = statement_stem(sql)
        verdict = verdicts.get(stem)
        if verdict is None:
            verdict = check(sql)
            if len(verdicts) >= kept:
                verdicts.clear()
            verdicts[stem] = verdict
        return verdict

    return remembered
