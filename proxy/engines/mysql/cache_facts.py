"""What the query cache needs to know of a MySQL text (SPEC §11): may its result be cached, which
tables it reads, which tables it writes. From the split classifier's verdict and the lexer's tokens
(table names follow FROM / JOIN / UPDATE / INTO / TABLE), judged against the catalog snapshot
(cache_catalog): views and the like are cached only through a rule naming their tables, writes to
tables with triggers or cascading foreign keys invalidate everything. Pure, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...cache.catalog import CatalogSnapshot
from ...cache.policy import ReadFacts
from ...cache.scopes import ALL_TABLES
from ...routing.classify import Route
from .classify import MysqlClassifier, MysqlFunctions
from .lexer import Statement, Token, TokenKind, lex

_WORD, _IDENT, _OP = TokenKind.WORD, TokenKind.IDENT, TokenKind.OPERATOR
# Words that end a list of table references.
_STOP = frozenset("""WHERE GROUP ORDER LIMIT JOIN INNER LEFT RIGHT CROSS NATURAL STRAIGHT_JOIN ON USING HAVING
WINDOW UNION EXCEPT INTERSECT FOR LOCK SET VALUES VALUE SELECT PARTITION USE IGNORE FORCE INTO PROCEDURE
OUTER FULL RETURNING DUPLICATE""".split())
_REFERENCE_STARTS = frozenset({"FROM", "JOIN", "STRAIGHT_JOIN"})
# Statements that write no table.
_NO_WRITE = frozenset({"SELECT", "WITH", "SHOW", "SET", "USE", "BEGIN", "START", "COMMIT", "ROLLBACK", "SAVEPOINT",
                       "RELEASE", "EXPLAIN", "DESCRIBE", "DESC", "HELP", "LOCK", "UNLOCK", "PREPARE", "DEALLOCATE",
                       "XA", "DO", "VALUES", "TABLE", "KILL", "CHECKSUM", "CHECK"})
_NO_FUNCTIONS = MysqlFunctions()


@dataclass(frozen=True, slots=True)
class Written:
    """Tables a text writes (ALL_TABLES: anything) and whether it changes the catalog."""

    tables: tuple[str, ...] = ()
    ddl: bool = False


NOTHING = Written()


def _name(token: Token) -> str | None:
    if token.kind is _IDENT:
        return token.value.lower()
    if token.kind is _WORD and token.value not in _STOP:
        return token.text.lower()
    return None


def _references(tokens: tuple[Token, ...], i: int, out: set[str]) -> int | None:
    """Table references `name [. name] [[AS] alias] [, ...]` from tokens[i] into out; the index after
    them, or None when they are not plain names (a derived table is read by its own FROM)."""
    size = len(tokens)
    while i < size:
        if tokens[i].kind is _OP and tokens[i].text == "(":
            return i   # a derived table or a parenthesized join: its FROMs are scanned on their own
        name = _name(tokens[i])
        if name is None:
            return None
        i += 1
        if i + 1 < size and tokens[i].kind is _OP and tokens[i].text == ".":
            name = _name(tokens[i + 1])
            if name is None:
                return None
            i += 2
        out.add(name)
        if i < size and tokens[i].kind is _WORD and tokens[i].value == "AS":
            i += 2
        elif i < size and _name(tokens[i]) is not None:
            i += 1   # an alias
        if i < size and tokens[i].kind is _OP and tokens[i].text == ",":
            i += 1
            continue
        return i
    return i


def read_tables(statement: Statement) -> tuple[str, ...] | None:
    """Every table named after a FROM or JOIN of `statement` (None: one could not be read)."""
    tokens = statement.tokens
    out: set[str] = set()
    for i, token in enumerate(tokens):
        if token.kind is _WORD and token.value in _REFERENCE_STARTS:
            if _references(tokens, i + 1, out) is None:
                return None
    return tuple(sorted(out))


def _user_functions(tokens: tuple[Token, ...], functions: MysqlFunctions) -> bool:
    """True if the text calls a function `read_only_functions` allows that is not a built-in."""
    for i in range(len(tokens) - 1):
        token, after = tokens[i], tokens[i + 1]
        if token.kind in (_WORD, _IDENT) and after.kind is _OP and after.text == "(":
            parts = [token.value if token.kind is _IDENT else token.text]
            if i >= 2 and tokens[i - 1].text == "." and tokens[i - 2].kind in (_WORD, _IDENT):
                parts.insert(0, tokens[i - 2].value if tokens[i - 2].kind is _IDENT else tokens[i - 2].text)
            quoted = token.kind is _IDENT
            if functions.blocker(parts, quoted) is None and _NO_FUNCTIONS.blocker(parts, quoted) is not None:
                return True
    return False


class MysqlCacheFacts:
    """Per cluster: read facts and written tables of MySQL texts."""

    def __init__(self, classifier: MysqlClassifier) -> None:
        self.classifier = classifier

    def read(self, sql: str, catalog: CatalogSnapshot | None) -> ReadFacts:
        verdict = self.classifier.classify(sql)
        if verdict.route is not Route.REPLICA or verdict.reason not in ("select", "hint"):
            return ReadFacts(False, verdict.reason)
        if verdict.volatile:
            return ReadFacts(False, "volatile")
        script = lex(sql)
        if len(script.statements) != 1 or script.gated or script.error:
            return ReadFacts(False, "not one select")
        statement = script.statements[0]
        if statement.first_word != "SELECT" or any(t.kind is _WORD and t.value == "INTO" for t in statement.tokens):
            return ReadFacts(False, "not one select")
        tables = read_tables(statement)
        if tables is None:
            return ReadFacts(False, "view")   # a name the scan could not read: only a rule's tables
        if any(t in ("information_schema", "mysql", "performance_schema", "sys") for t in tables):
            return ReadFacts(False, "catalog")
        if catalog is None:
            return ReadFacts(False, "catalog not read yet")
        if _user_functions(statement.tokens, self.classifier.functions):
            return ReadFacts(False, "view")
        for name in tables:
            relation = catalog.get(name)
            if relation is None or relation.opaque:
                return ReadFacts(False, "view")
        return ReadFacts(True, "select", tables)

    def written(self, sql: str, catalog: CatalogSnapshot | None) -> Written:
        """What `sql` may write (ALL_TABLES when it cannot be known)."""
        script = lex(sql)
        if script.error:
            return NOTHING   # the server refuses it
        if script.gated:
            return Written((ALL_TABLES,))   # a server may run or skip parts of it
        tables: set[str] = set()
        for statement in script.statements:
            word = statement.first_word
            if word in _NO_WRITE:
                if word in ("SELECT", "DO", "WITH", "VALUES") and self.classifier.classify(
                        statement.text()).reason.startswith("unknown function"):
                    return Written((ALL_TABLES,))   # a user function may write anything
                if word == "WITH" and any(t.kind is _WORD and t.value in ("UPDATE", "DELETE", "INSERT")
                                          for t in statement.tokens):
                    return Written((ALL_TABLES,))
                continue
            named = _written_by(word, statement)
            if named is None:
                return Written((ALL_TABLES,), True)   # DDL, CALL, EXECUTE, HANDLER ...: anything
            tables.update(named)
        if not tables:
            return NOTHING
        if catalog is None:
            return Written((ALL_TABLES,))
        for name in tables:
            relation = catalog.get(name)
            if relation is None or relation.opaque or relation.writes_elsewhere:
                return Written((ALL_TABLES,))
        return Written(tuple(sorted(tables)))


def _written_by(word: str, statement: Statement) -> set[str] | None:
    """The tables a DML statement names (None: not DML, or names not read)."""
    tokens = statement.tokens
    out: set[str] = set()
    if word in ("INSERT", "REPLACE"):
        i = 1
        while i < len(tokens) and tokens[i].kind is _WORD and tokens[i].value in (
                "LOW_PRIORITY", "DELAYED", "HIGH_PRIORITY", "IGNORE", "INTO"):
            i += 1
        return out if i < len(tokens) and _references(tokens, i, out) is not None and out else None
    if word == "UPDATE" or word == "DELETE":
        for i, token in enumerate(tokens):
            if token.kind is _WORD and token.value == "SET" and word == "UPDATE":
                break
            if i == 0 or token.kind is _WORD and token.value in ("FROM", "JOIN", "USING", "STRAIGHT_JOIN"):
                j = i + 1
                while j < len(tokens) and tokens[j].kind is _WORD and tokens[j].value in (
                        "LOW_PRIORITY", "QUICK", "IGNORE"):
                    j += 1
                if j < len(tokens) and tokens[j].kind is _WORD and tokens[j].value == "FROM":
                    continue
                if _references(tokens, j, out) is None:
                    return None
        return out or None
    if word == "TRUNCATE":
        i = 2 if len(tokens) > 1 and tokens[1].kind is _WORD and tokens[1].value == "TABLE" else 1
        return out if _references(tokens, i, out) is not None and out else None
    if word == "LOAD":
        for i, token in enumerate(tokens):
            if token.kind is _WORD and token.value == "TABLE" and i > 0 and tokens[i - 1].value == "INTO":
                return out if _references(tokens, i + 1, out) is not None and out else None
        return None
    return None
