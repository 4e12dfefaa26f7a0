"""MySQL / MariaDB session state in a query text: settings to replay elsewhere, and what pins a client.

In transaction pooling a client's next statement may run on another server connection, so the
proxy tracks what the client changed and replays it there (SPEC §4, §12).  `session_effects(sql)`
reports, for every statement of a COM_QUERY text in order (lexer.py splits multi-statements):

- `sets`: session changes to replay, in order: `SET [SESSION | LOCAL | @@session. | @@local. |
  @@] var = literal` for any variable (several per SET, `:=` too; `DEFAULT` gives value None,
  "reset to the default"), `SET NAMES cs [COLLATE co]` (name "names"), `SET CHARACTER SET cs` /
  `SET CHARSET cs` (name "character set"), and `SET SESSION TRANSACTION ISOLATION LEVEL ... |
  READ ONLY | READ WRITE` (names "transaction_isolation" / "transaction_read_only").  A literal is
  a number (also signed, hex, bit), a string (also N'', _charset'', adjacent strings) or a bare
  word (ON, OFF, TRUE, FALSE, NULL, utf8mb4, SYSTEM ...; not `READ-COMMITTED`, which servers
  parse as a subtraction and reject); values are kept as the client wrote them, so
  `SetVariable.to_sql()` replays them as the server read them.
  `autocommit` is tracked like any variable: with autocommit = 0 the client is in a transaction
  as soon as it runs a statement (the session logic must keep its server connection).
- `schema`: the last `USE db`.
- `global_sets`: variables set with `SET GLOBAL | PERSIST | PERSIST_ONLY` or `@@global.` —
  server-wide, not session state, so never replayed; reported for logging.
- `next_transaction`: `SET TRANSACTION ...` texts (no scope: they apply to the next transaction
  only, and are lost if that transaction starts on another server connection).
- `pin_reason`, the first of: "user variable" (any `@x`, assigned, read, or `SELECT ... INTO @x`;
  never `@@system_var`), "LOCK TABLES", "LOCK INSTANCE", "BACKUP LOCK", "FLUSH TABLES WITH READ
  LOCK", "GET_LOCK", "temporary table" (CREATE TEMPORARY TABLE), "SQL PREPARE" (PREPARE, EXECUTE,
  DEALLOCATE / DROP PREPARE, EXECUTE IMMEDIATE), "SQL_CALC_FOUND_ROWS", "FOUND_ROWS()", "FLUSH
  TABLES FOR EXPORT", "SET with
  a non-literal value" (`SET sql_mode = CONCAT(@@sql_mode, ',X')`, `SET x = ?`), "SET ROLE", "SET
  RESOURCE GROUP", "unrecognized SET", "HANDLER", "XA" (XA START / BEGIN), "compound statement"
  (MariaDB's top-level BEGIN NOT ATOMIC / IF / CASE / LOOP / WHILE / REPEAT blocks), and
  `AMBIGUOUS` (a text whose effects differ between the readings sql_mode or the server version
  may give it: backslashes under NO_BACKSLASH_ESCAPES / ANSI_QUOTES, version-gated comments).
- `uses_last_insert_id`: the text calls LAST_INSERT_ID(); not a pin by itself (the session may
  answer it from the client's last OK packet); pin with `LAST_INSERT_ID_PIN` if it cannot.
- `local_infile`: LOAD DATA / LOAD XML LOCAL INFILE (refused unless allowed, SPEC §12).
- `kill`: `KILL [HARD | SOFT] [CONNECTION | QUERY [ID]] n` as `Kill(kind, n)`, so that the proxy can
  map n (one of its own connection ids) to the right server thread.

Effects describe what the text does if it succeeds; a statement with an unterminated string,
identifier or comment is rejected by the server and has none.  Words inside strings, quoted
identifiers and ordinary comments never count; executable comments `/*! */` are code.

`might_change_session(sql: bytes)` is the cheap pre-filter for the hot path: False only for texts
that certainly have no effect (a plain SELECT / INSERT / UPDATE / ... with no `@`, no lock or
FOUND_ROWS / LAST_INSERT_ID words, one statement); `session_effects()` applies it itself and
caches analysed texts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from .lexer import Script, Statement, Token, TokenKind, alternative_readings, lex, render

MAX_CACHED_SQL_LENGTH = 8192
CACHE_SIZE = 4096
LAST_INSERT_ID_PIN = "LAST_INSERT_ID()"
NON_LITERAL = "SET with a non-literal value"
AMBIGUOUS = "text read differently by sql_mode or server version"

WORD, OPERATOR = TokenKind.WORD, TokenKind.OPERATOR
NAMES, CHARACTER_SET = "names", "character set"
_ISOLATION_NAMES = frozenset({"transaction_isolation", "tx_isolation"})
_READ_ONLY_NAMES = frozenset({"transaction_read_only", "tx_read_only"})
_LEVELS = {"READ-UNCOMMITTED", "READ-COMMITTED", "REPEATABLE-READ", "SERIALIZABLE"}


@dataclass(frozen=True, slots=True)
class SetVariable:
    """One session change: `value` is the literal as SQL text; None means `= DEFAULT`."""

    name: str
    value: str | None

    def to_sql(self) -> str:
        """The statement that replays this change on another server connection."""
        value = "DEFAULT" if self.value is None else self.value
        if self.name == NAMES:
            return f"SET NAMES {value}"
        if self.name == CHARACTER_SET:
            return f"SET CHARACTER SET {value}"
        plain = (self.value or "").strip("'\"").upper().replace(" ", "-")
        if self.name in _ISOLATION_NAMES and plain in _LEVELS:   # portable across MySQL / MariaDB
            return f"SET SESSION TRANSACTION ISOLATION LEVEL {plain.replace('-', ' ')}"
        if self.name in _READ_ONLY_NAMES and plain in ("ON", "OFF", "1", "0", "TRUE", "FALSE"):
            mode = "ONLY" if plain in ("ON", "1", "TRUE") else "WRITE"
            return f"SET SESSION TRANSACTION READ {mode}"
        return f"SET SESSION {quote_name(self.name)} = {value}"


@dataclass(frozen=True, slots=True)
class Kill:
    """A KILL statement: kind "connection", "query", "query id" or "user"; target None if not a number."""

    kind: str
    target: int | None


@dataclass(frozen=True, slots=True)
class MysqlSessionEffects:
    """What a query text does to session state; see the module docstring."""

    sets: tuple[SetVariable, ...] = ()
    schema: str | None = None
    pin_reason: str | None = None
    uses_last_insert_id: bool = False
    global_sets: tuple[str, ...] = ()
    next_transaction: tuple[str, ...] = ()
    local_infile: bool = False
    kill: Kill | None = None

    @property
    def charset(self) -> SetVariable | None:
        """The last SET NAMES / SET CHARACTER SET of the text, if any."""
        return next((s for s in reversed(self.sets) if s.name in (NAMES, CHARACTER_SET)), None)

    @property
    def autocommit(self) -> bool | None:
        """The autocommit value the text leaves literally set (None: untouched, DEFAULT or unknown)."""
        last = next((s for s in reversed(self.sets) if s.name == "autocommit"), None)
        plain = (last.value or "").strip("'\"").upper() if last is not None else ""
        return True if plain in ("1", "ON", "TRUE") else False if plain in ("0", "OFF", "FALSE") else None


EMPTY = MysqlSessionEffects()


def quote_name(name: str) -> str:
    """A variable name for SET: plain lower-case parts as they are, others backtick-quoted."""
    parts = []
    for part in name.split("."):
        plain = part.replace("_", "").replace("$", "").isalnum() and part.isascii() and not part[:1].isdigit()
        parts.append(part if plain else "`" + part.replace("`", "``") + "`")
    return ".".join(parts)


# ---- the cheap pre-filter -------------------------------------------------------------------------

# Statement-leading words after which only the words in _ANYWHERE can cause an effect.
_PLAIN_STARTS = frozenset(
    b"select insert update delete replace with show explain describe desc commit rollback "
    b"savepoint release values table start call do alter drop truncate rename analyze optimize "
    b"repair check checksum help grant revoke create load begin".split()
)
_ANYWHERE = re.compile(rb"@|get_lock|found_rows|last_insert_id")   # found_rows: SQL_CALC_ too
# A plain-looking start that still needs a look when one of these words is in the text.
_UNLESS = {b"create": b"temporary", b"load": b"local", b"begin": b"not", b"drop": b"prepare"}   # BEGIN NOT [ATOMIC]
_LEADING_WORD = re.compile(rb"[ \t\n\r\f\v]*+([a-z_]*+)")


def _plain_start(lowered: bytes, position: int) -> bool:
    match = _LEADING_WORD.match(lowered, position)
    word = match.group(1) if match is not None else b""
    if not word:
        return match is not None and match.end() == len(lowered)   # an empty statement
    if word not in _PLAIN_STARTS:
        return False
    unless = _UNLESS.get(word)
    return unless is None or unless not in lowered


def might_change_session(sql: bytes) -> bool:
    """Cheap and conservative: False only if `sql` certainly has no session effects."""
    lowered = sql.lower()
    if _ANYWHERE.search(lowered) is not None or not _plain_start(lowered, 0):
        return True
    position = lowered.find(b";") + 1
    while position:   # every `;` may start a statement (even one inside a string: conservative)
        if not _plain_start(lowered, position):
            return True
        position = lowered.find(b";", position) + 1
    return False


# ---- analysis ----------------------------------------------------------------------------------------


def _is_word(token: Token | None, value: str) -> bool:
    return token is not None and token.kind is WORD and token.value == value


def _is_op(token: Token | None, text: str) -> bool:
    return token is not None and token.kind is OPERATOR and token.text == text


@dataclass
class _Effects:
    """Accumulates effects statement by statement."""

    sets: list[SetVariable] = field(default_factory=list)
    schema: str | None = None
    pin_reason: str | None = None
    uses_last_insert_id: bool = False
    global_sets: list[str] = field(default_factory=list)
    next_transaction: list[str] = field(default_factory=list)
    local_infile: bool = False
    kill: Kill | None = None

    def pin(self, reason: str) -> None:
        if self.pin_reason is None:
            self.pin_reason = reason

    def result(self) -> MysqlSessionEffects:
        effects = MysqlSessionEffects(
            tuple(self.sets), self.schema, self.pin_reason, self.uses_last_insert_id,
            tuple(self.global_sets), tuple(self.next_transaction), self.local_infile, self.kill,
        )
        return EMPTY if effects == EMPTY else effects


def _literal(tokens: Sequence[Token]) -> str | None:
    """The SQL text of a literal value, "" for DEFAULT, or None if the value is an expression."""
    count = len(tokens)
    if count == 0:
        return None
    kinds = [token.kind for token in tokens]
    first = tokens[0]
    if count == 1:
        if first.kind in (TokenKind.NUMBER, TokenKind.STRING, TokenKind.IDENT):
            return first.text
        if first.kind is WORD:
            return "" if first.value == "DEFAULT" else first.text
        return None
    if count == 2 and first.kind is OPERATOR and first.text in ("-", "+") and kinds[1] is TokenKind.NUMBER:
        return render(tokens)
    if all(kind is TokenKind.STRING for kind in kinds[1:]) and (
        first.kind is TokenKind.STRING or (first.kind is WORD and first.value.startswith("_"))
    ):
        return render(tokens)   # _utf8mb4'x', 'a' 'b'
    return None


def _split_commas(tokens: Sequence[Token], start: int) -> list[list[Token]]:
    """tokens[start:] cut at top-level commas."""
    pieces: list[list[Token]] = [[]]
    depth = 0
    for token in tokens[start:]:
        if token.kind is OPERATOR:
            if token.text == "(":
                depth += 1
            elif token.text == ")":
                depth -= 1
            elif token.text == "," and depth == 0:
                pieces.append([])
                continue
        pieces[-1].append(token)
    return pieces


_SCOPES = {"GLOBAL": "global", "PERSIST": "global", "PERSIST_ONLY": "global", "SESSION": "session", "LOCAL": "session"}
_PREFIX_SCOPES = {scope.lower(): value for scope, value in _SCOPES.items()}   # @@global.x, @@persist.x
_LEVEL_WORDS = {
    ("READ", "UNCOMMITTED"): "'READ-UNCOMMITTED'",
    ("READ", "COMMITTED"): "'READ-COMMITTED'",
    ("REPEATABLE", "READ"): "'REPEATABLE-READ'",
    ("SERIALIZABLE",): "'SERIALIZABLE'",
}


def _transaction_characteristics(tokens: Sequence[Token], start: int) -> list[SetVariable] | None:
    """`ISOLATION LEVEL x, READ ONLY | READ WRITE` as settings, None if not understood."""
    changes: list[SetVariable] = []
    for piece in _split_commas(tokens, start):
        words = tuple(token.value for token in piece if token.kind is WORD)
        if len(words) != len(piece):
            return None
        if words[:2] == ("ISOLATION", "LEVEL") and words[2:] in _LEVEL_WORDS:
            changes.append(SetVariable("transaction_isolation", _LEVEL_WORDS[words[2:]]))
        elif words in (("READ", "ONLY"), ("READ", "WRITE")):
            changes.append(SetVariable("transaction_read_only", "ON" if words[1] == "ONLY" else "OFF"))
        else:
            return None
    return changes


def _charset(keyword: str, value: list[Token], effects: _Effects) -> None:
    """SET NAMES cs [COLLATE co] | SET CHARACTER SET cs | SET CHARSET cs (value: what follows)."""
    if keyword == "CHARACTER":
        if not _is_word(value[0] if value else None, "SET"):
            effects.pin("unrecognized SET")
            return
        value = value[1:]
    collate = next((i for i, token in enumerate(value) if _is_word(token, "COLLATE")), None)
    parts = [value] if collate is None or keyword != "NAMES" else [value[:collate], value[collate + 1 :]]
    if any(_literal(part) is None for part in parts):
        effects.pin(NON_LITERAL)
        return
    text = None if len(value) == 1 and _is_word(value[0], "DEFAULT") else render(value)
    effects.sets.append(SetVariable(NAMES if keyword == "NAMES" else CHARACTER_SET, text))


def _assignment(piece: list[Token], scope: str, effects: _Effects) -> str:
    """One `[scope] name = value` of a SET; returns the scope for the assignments that follow."""
    index = 0
    if piece and piece[0].kind is WORD and piece[0].value in _SCOPES:
        scope = _SCOPES[piece[0].value]
        index = 1
    head = piece[index] if index < len(piece) else None
    if head is None:
        effects.pin("unrecognized SET")
        return scope
    if head.kind is WORD and head.value in ("NAMES", "CHARSET", "CHARACTER"):
        _charset(head.value, piece[index + 1 :], effects)
        return scope
    if head.kind is TokenKind.USER_VAR:
        effects.pin("user variable")
        return scope
    this_scope = scope
    if head.kind is TokenKind.SYSTEM_VAR:
        name = head.value
        prefix, _, rest = name.partition(".")
        if rest and prefix in _PREFIX_SCOPES:
            this_scope = _PREFIX_SCOPES[prefix]
            name = rest
        index += 1
    elif head.kind in (WORD, TokenKind.IDENT):
        names = [head.value.lower() if head.kind is WORD else head.value]
        index += 1
        while index + 1 < len(piece) and _is_op(piece[index], ".") and piece[index + 1].kind in (WORD, TokenKind.IDENT):
            names.append(piece[index + 1].value.lower() if piece[index + 1].kind is WORD else piece[index + 1].value)
            index += 2
        name = ".".join(names)
    else:
        effects.pin("unrecognized SET")
        return scope
    if not (index < len(piece) and piece[index].kind is OPERATOR and piece[index].text in ("=", ":=")) or not name:
        effects.pin("unrecognized SET")
        return scope
    literal = _literal(piece[index + 1 :])
    if this_scope == "global":
        effects.global_sets.append(name)
    elif literal is None:
        effects.pin(NON_LITERAL)
    else:
        effects.sets.append(SetVariable(name, literal or None))
    return scope


def _set(tokens: Sequence[Token], effects: _Effects) -> None:
    second = tokens[1] if len(tokens) > 1 else None
    third = tokens[2] if len(tokens) > 2 else None
    if _is_word(second, "TRANSACTION"):
        effects.next_transaction.append(render(tokens))
        return
    if second is not None and second.kind is WORD and second.value in _SCOPES and _is_word(third, "TRANSACTION"):
        changes = _transaction_characteristics(tokens, 3)
        if changes is None:
            effects.pin("unrecognized SET")
        elif _SCOPES[second.value] == "global":
            effects.global_sets.extend(change.name for change in changes)
        else:
            effects.sets.extend(changes)
        return
    if _is_word(second, "STATEMENT"):   # MariaDB: SET STATEMENT a = 1 FOR statement (statement scope)
        depth = 0
        for index in range(2, len(tokens)):
            token = tokens[index]
            if token.kind is OPERATOR and token.text in ("(", ")"):
                depth += 1 if token.text == "(" else -1
            elif depth == 0 and _is_word(token, "FOR"):
                _statement(tokens[index + 1 :], effects)
                return
        effects.pin("unrecognized SET")
        return
    if _is_word(second, "PASSWORD") or (_is_word(second, "DEFAULT") and _is_word(third, "ROLE")):
        return   # account changes, not session state
    if _is_word(second, "ROLE"):
        effects.pin("SET ROLE")
        return
    if _is_word(second, "RESOURCE"):
        effects.pin("SET RESOURCE GROUP")
        return
    scope = "session"
    for piece in _split_commas(tokens, 1):
        scope = _assignment(piece, scope, effects)


def _kill(tokens: Sequence[Token], effects: _Effects) -> None:
    index = 1
    while index < len(tokens) and tokens[index].kind is WORD and tokens[index].value in ("HARD", "SOFT"):
        index += 1
    kind = "connection"
    if index < len(tokens) and tokens[index].kind is WORD:
        word = tokens[index].value
        if word in ("CONNECTION", "QUERY", "USER"):
            kind = word.lower()
            index += 1
            if word == "QUERY" and _is_word(tokens[index] if index < len(tokens) else None, "ID"):
                kind = "query id"
                index += 1
    rest = tokens[index:]
    target = int(rest[0].text) if len(rest) == 1 and rest[0].kind is TokenKind.NUMBER and rest[0].text.isdigit() else None
    effects.kill = Kill(kind, target)


_DEFINITIONS = frozenset({"PROCEDURE", "FUNCTION", "TRIGGER", "EVENT", "VIEW"})


def _leading(tokens: Sequence[Token], effects: _Effects) -> bool:
    """Effects of the statement's kind; False if its tokens must not be scanned for calls and
    variables (routine definitions: their body runs later, elsewhere)."""
    first = tokens[0].value if tokens[0].kind is WORD else ""
    second = tokens[1] if len(tokens) > 1 else None
    words = [token.value for token in tokens[:12] if token.kind is WORD]
    if first == "SET":
        _set(tokens, effects)
    elif first == "USE" and second is not None and second.kind in (WORD, TokenKind.IDENT):
        effects.schema = second.text if second.kind is WORD else second.value
    elif first == "LOCK":
        if _is_word(second, "INSTANCE"):
            effects.pin("LOCK INSTANCE")
        elif second is not None and second.value in ("TABLE", "TABLES"):
            effects.pin("LOCK TABLES")
    elif first == "BACKUP" and second is not None and second.value in ("LOCK", "STAGE"):
        effects.pin("BACKUP LOCK")
    elif first == "FLUSH":   # the table list may be long: look at every word
        every = {token.value for token in tokens if token.kind is WORD}
        if "READ" in every and "LOCK" in every:
            effects.pin("FLUSH TABLES WITH READ LOCK")
        elif "EXPORT" in every:
            effects.pin("FLUSH TABLES FOR EXPORT")
    elif first in ("CREATE", "ALTER"):
        kinds = [word for word in words if word in _DEFINITIONS or word == "TABLE"]
        if kinds and kinds[0] != "TABLE":
            return False
        if first == "CREATE" and "TEMPORARY" in words:
            effects.pin("temporary table")
    elif first in ("PREPARE", "EXECUTE", "DEALLOCATE") or (first == "DROP" and _is_word(second, "PREPARE")):
        effects.pin("SQL PREPARE")
    elif first == "HANDLER":
        effects.pin("HANDLER")
    elif first == "XA" and second is not None and second.value in ("START", "BEGIN"):
        effects.pin("XA")
    elif first == "LOAD" and "LOCAL" in words and ("DATA" in words or "XML" in words):
        effects.local_infile = True
    elif first == "KILL":
        _kill(tokens, effects)
    elif (first == "BEGIN" and _is_word(second, "NOT")) or first in ("IF", "CASE", "LOOP", "WHILE", "REPEAT") or (
        first and _is_op(second, ":")
    ):
        effects.pin("compound statement")
    return True


def _scan(tokens: Sequence[Token], effects: _Effects) -> None:
    """User variables and session-bound functions anywhere in a statement."""
    count = len(tokens)
    for index in range(count):
        token = tokens[index]
        kind = token.kind
        if kind is TokenKind.USER_VAR:
            effects.pin("user variable")
        elif kind is WORD or (
            (kind is TokenKind.IDENT or (kind is TokenKind.STRING and token.text[:1] == '"')) and token.value.isascii()
        ):   # "GET_LOCK"(...) is a call under ANSI_QUOTES
            value = token.value.upper()
            if value == "SQL_CALC_FOUND_ROWS":
                effects.pin("SQL_CALC_FOUND_ROWS")
            elif value in ("GET_LOCK", "FOUND_ROWS", "LAST_INSERT_ID") and index + 1 < count and _is_op(tokens[index + 1], "("):
                if value == "LAST_INSERT_ID":
                    effects.uses_last_insert_id = True
                else:
                    effects.pin("GET_LOCK" if value == "GET_LOCK" else "FOUND_ROWS()")


def _statement(tokens: Sequence[Token], effects: _Effects) -> None:
    if tokens and _leading(tokens, effects):
        _scan(tokens, effects)


def _script_effects(script: Script) -> MysqlSessionEffects:
    effects = _Effects()
    for statement in script.statements:
        if not statement.error:
            _statement(statement.tokens, effects)
    return effects.result()


def analyze(sql: str) -> MysqlSessionEffects:
    """Lex `sql` and collect its session effects (no pre-filter, no cache).

    A text that sql_mode or the server version can make read differently (lexer.
    alternative_readings) and whose effects differ between readings pins the client: the proxy
    cannot know which one the server ran.
    """
    script = lex(sql)
    effects = _script_effects(script)
    for other in alternative_readings(sql, script):
        if _script_effects(other) != effects:
            return effects if effects.pin_reason else replace(effects, pin_reason=AMBIGUOUS)
    return effects


def statement_effects(statement: Statement) -> MysqlSessionEffects:
    """The effects of one already-lexed statement."""
    effects = _Effects()
    if not statement.error:
        _statement(statement.tokens, effects)
    return effects.result()


_cache: dict[str, MysqlSessionEffects] = {}


def session_effects(sql: str) -> MysqlSessionEffects:
    """The session effects of a COM_QUERY / COM_STMT_PREPARE text (`EMPTY` for ordinary statements)."""
    effects = _cache.get(sql)
    if effects is not None:
        return effects
    if not might_change_session(sql.encode("utf-8", "surrogatepass")):
        return EMPTY
    effects = analyze(sql)
    if len(sql) <= MAX_CACHED_SQL_LENGTH:
        if len(_cache) >= CACHE_SIZE:
            _cache.clear()
        _cache[sql] = effects
    return effects


def clear_cache() -> None:
    _cache.clear()
