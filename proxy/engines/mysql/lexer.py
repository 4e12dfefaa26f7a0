"""MySQL / MariaDB SQL tokenizer for routing and session tracking: tokens, comments and statements.

Sans-IO and total: `lex(sql)` never raises, whatever the text, and runs in linear time (one
compiled regex with possessive quantifiers, matched token by token).  Results for texts up to
`MAX_CACHED_SQL_LENGTH` are kept in a bounded dict, since the classifier and the session-state
analysis both lex the same statement.

What it knows of MySQL's lexical rules:

- whitespace; comments `-- ` (two dashes then a space or control character, or the end of the
  text: `1--1` is arithmetic), `#` to the end of the line, `/* ... */` (not nested, as in MySQL);
- executable comments `/*! ... */`, `/*!50100 ... */`, `/*M! ... */`, `/*M!100100 ... */`: the
  content is lexed as code, whatever the version gate says (the server may run it, so the
  router must see it); a server failing the gate (above 5.7.0, or MySQL for `/*M!`) skips it,
  up to the first `*/` (even one the code reading puts inside a string): `Script.gated` says
  whether the readings can differ.  An ordinary comment's text is kept in `Script.comments`,
  where the `dbproxy:` hints are looked for;
- strings '...' and "..." with backslash escapes and doubled quotes, `N'...'`; hex and bit
  literals `0x1F`, `X'1F'`, `0b01`, `b'01'`; numbers `1`, `1.5`, `.5e-3` (a digit run followed
  by a letter is an identifier, as in MySQL: `1st`);
- backtick identifiers with ``` `` ``` doubling; `@var`, `@'quoted var'`, `@@var`,
  `@@session.var`, `@@global.var`; the `@host` of an account name (`'u'@'h'`, `root@localhost`)
  is told apart from a user variable by being glued to the user part;
- `?` placeholders, operators, and `;`, which separates the statements of a multi-statement
  COM_QUERY (except inside the BEGIN ... END body of CREATE PROCEDURE / FUNCTION / TRIGGER /
  EVENT and MariaDB's top-level compound statements, where it ends an inner statement).

`literal_shape(sql)` is the text with every literal replaced by `?` (or None when that could
merge texts the lexer reads differently): the classifier's second cache key.

The lexer cannot know the session's sql_mode or the server's version, so `lex(sql)` is the
default reading (backslash escapes in strings, "..." a string, gated comments run) and
`alternative_readings(sql, script)` gives the others the text may have: under
NO_BACKSLASH_ESCAPES, under ANSI_QUOTES ("..." an identifier), and with version-gated comments
skipped.  The classifier sends a text to a replica only if every reading allows it.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

# Texts longer than this are lexed every time rather than kept (bulk INSERTs, generated reports).
MAX_CACHED_SQL_LENGTH = 8192
CACHE_SIZE = 2048


class TokenKind(enum.IntEnum):
    """What a token is; comments and whitespace are never tokens."""

    WORD = 1          # keyword or unquoted identifier; value: upper-cased (if ASCII)
    IDENT = 2         # `quoted identifier`; value: the name
    STRING = 3        # '...', "...", N'...'; value: the decoded content
    NUMBER = 4        # 12, 1.5e3, .5, 0x1F, X'1F', 0b01, b'01'; value: the text
    USER_VAR = 5      # @name, @'name'; value: the name, lower-cased (names ignore case)
    SYSTEM_VAR = 6    # @@name, @@session.name; value: the text after @@, lower-cased
    PARAM = 7         # ? (a prepared statement's parameter)
    OPERATOR = 8      # punctuation and operators: ( ) , . = := <=> ...; `;` only when split off
    ACCOUNT_HOST = 9  # the @host glued to a user name ('u'@'h'); value: the text
    ERROR = 10        # an unterminated string, identifier or comment: the rest of the text


_WORD, _OPERATOR = TokenKind.WORD, TokenKind.OPERATOR


class Token(NamedTuple):
    kind: TokenKind
    text: str
    value: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement of a text: its code tokens (comments dropped, executable comments opened)."""

    tokens: tuple[Token, ...]
    error: bool = False   # an unterminated string / identifier / comment: the server will reject it

    @property
    def first_word(self) -> str:
        """The upper-cased leading keyword, or "" if the statement does not start with a word."""
        first = self.tokens[0] if self.tokens else None
        return first.value if first is not None and first.kind is TokenKind.WORD else ""

    def text(self) -> str:
        """The statement rebuilt from its tokens (comments dropped)."""
        return render(self.tokens)


@dataclass(frozen=True, slots=True)
class Script:
    """A lexed text: its non-empty statements in order, and every ordinary comment's text.

    `gated`: the text has a version-gated (above 5.7.0) or MariaDB-only executable comment, which
    a server may run or skip (then `lex(sql, gated_as_code=False)` is what it runs).
    """

    statements: tuple[Statement, ...]
    comments: tuple[str, ...] = ()
    gated: bool = False

    @property
    def error(self) -> bool:
        return any(statement.error for statement in self.statements)


def render(tokens: Sequence[Token]) -> str:
    """Tokens back to SQL: one space where the source had a gap, none where tokens touched."""
    parts: list[str] = []
    previous_end = -1
    for token in tokens:
        if parts and token.start != previous_end:
            parts.append(" ")
        parts.append(token.text)
        previous_end = token.end
    return "".join(parts)


# ---- the token regex -------------------------------------------------------------------------------

# The three ways a server may read quotes, by sql_mode: backslash escapes in '...' and "..."
# strings (the default), none at all (NO_BACKSLASH_ESCAPES), or "..." an identifier, where a
# backslash is never an escape (ANSI_QUOTES).
DEFAULT_QUOTES, NO_BACKSLASH_ESCAPES, ANSI_QUOTES = "default", "no_backslash_escapes", "ansi_quotes"
QUOTE_MODES = (DEFAULT_QUOTES, NO_BACKSLASH_ESCAPES, ANSI_QUOTES)
_SQ_ESCAPED = r"'(?:[^'\\]++|\\[\s\S]|'')*+'"
_DQ_ESCAPED = r'"(?:[^"\\]++|\\[\s\S]|"")*+"'
_SQ_PLAIN = r"'(?:[^']++|'')*+'"
_DQ_PLAIN = r'"(?:[^"]++|"")*+"'
_BQ = r"`(?:[^`]++|``)*+`"


def _token_regex(sq: str, dq: str) -> re.Pattern[str]:
    # Each match is optional whitespace, then one token (or comment); a token's text starts where
    # its group starts.  Words come first (the commonest token): they may not start like a
    # prefixed string (N'', X'', B'') or a number, which have their own branches; `word2` takes
    # identifiers that start with digits (`1st`), once `number` has refused them.  `-`, `.`, `/`,
    # `*`, `#` and quotes are left to the later branches (comments, `.5`, `*/`, strings).
    return re.compile(
        r"[ \t\n\r\f\v]*+(?:"
        r"(?P<word>(?![nNxXbB]')[^\W\d][\w$]*+|\$[\w$]*+)"
        r"|(?P<op><=>|->>|->|:=|<=|>=|<>|!=|<<|>>|&&|\|\||[+=<>(),;!~^%&|{}\[\]\\:])"
        r"|(?P<number>0[xX][0-9a-fA-F]++(?![\w$])|0[bB][01]++(?![\w$])"
        r"|(?>\d++(?:\.\d*+)?|\.\d++)(?>[eE][-+]?\d++)?(?![\w$]))"
        r"|(?P<word2>\d[\w$]*+)"
        rf"|(?P<string>[nN]?{sq}|{dq})"
        r"|(?P<exec>/\*M?![0-9]{0,6})"
        r"|(?P<comment>/\*[\s\S]*?\*/|\#[^\n]*+|--(?:[\x00-\x20][^\n]*+|\Z))"
        r"|(?P<close>\*/)"
        r"|(?P<bits>[xX]'[0-9a-fA-F]*+'|[bB]'[01]*+')"
        rf"|(?P<ident>{_BQ})"
        r"|(?P<param>\?)"
        r"|(?P<sysvar>@@[\w$.]*+)"
        rf"|(?P<uservar>@(?:[\w$.]++|{sq}|{dq}|{_BQ}))"
        r"|(?P<unterminated>[nN]?['\"`][\s\S]*|/\*[\s\S]*)"
        r"|(?P<other>[\s\S])"
        r"|(?P<end>\Z)"   # trailing whitespace: one match, not one failed attempt per position
        r")"
    )


_TOKEN = {
    DEFAULT_QUOTES: _token_regex(_SQ_ESCAPED, _DQ_ESCAPED),
    NO_BACKSLASH_ESCAPES: _token_regex(_SQ_PLAIN, _DQ_PLAIN),
    ANSI_QUOTES: _token_regex(_SQ_ESCAPED, _DQ_PLAIN),
}
# Version gates every supported server passes (MySQL 5.7+, MariaDB 10+ report higher versions):
# mysqldump's /*!40101 SET NAMES utf8 */ is plain code.
_ALWAYS_RUN_GATE = 50700

# A word glued before `@x` makes it an account's host (`root@localhost`), unless the word is one
# of these keywords, after which `@x` is a user variable (`SELECT@x`, `WHERE a=1 AND@x`).
_BEFORE_VARIABLE = frozenset(
    "SELECT SET WHERE AND OR XOR NOT INTO ON THEN ELSE WHEN RETURN BY LIKE IN IS VALUES DO CASE "
    "HAVING LIMIT OFFSET BETWEEN DIV MOD IF ELSEIF UNTIL EXISTS ANY ALL SOME REGEXP RLIKE WITH AS "
    "CALL EXECUTE USING FROM JOIN DISTINCT KILL".split()
)
_ESCAPES = {"0": "\x00", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a", "%": "\\%", "_": "\\_"}
_PIECES = {quote: re.compile(r"\\([\s\S])|" + quote * 2) for quote in ("'", '"')}


def _piece(match: re.Match[str]) -> str:
    escaped = match.group(1)
    if escaped is None:   # a doubled quote
        return match.group()[0]
    return _ESCAPES.get(escaped, escaped)


def unquote(text: str) -> str:
    """The content of a quoted string or identifier token's text ('it''s' → it's, `a``b` → a`b)."""
    if text[:1] in ("n", "N"):
        text = text[1:]
    quote = text[:1]
    body = text[1:-1]
    if quote == "`":
        return body.replace("``", "`")
    pieces = _PIECES.get(quote)
    if pieces is None:
        return body
    if "\\" in body:   # escapes and doubled quotes in one left-to-right pass, as the server reads them
        return pieces.sub(_piece, body)
    return body.replace(quote * 2, quote)


_KINDS = {
    "word": TokenKind.WORD, "word2": TokenKind.WORD, "op": TokenKind.OPERATOR, "other": TokenKind.OPERATOR,
    "number": TokenKind.NUMBER, "bits": TokenKind.NUMBER, "param": TokenKind.PARAM,
}
_new_token = tuple.__new__   # Token(...) without NamedTuple's Python-level __new__


def _tokens(
    sql: str, gated_as_code: bool = True, quotes: str = DEFAULT_QUOTES
) -> tuple[list[Token], list[str], bool, bool]:
    """(code tokens incl. `;`, ordinary comments, unterminated?, any gated executable comment?).

    A gated executable comment (`/*!80000 ...*/`, `/*M! ...*/`) is read as code, or with
    `gated_as_code=False` skipped as a server failing the gate does: up to the first `*/`.
    `quotes` is one of QUOTE_MODES.
    """
    pattern = _TOKEN[quotes]
    tokens: list[Token] = []
    comments: list[str] = []
    append = tokens.append
    executable = 0   # open executable comments (MySQL does not nest them; count defensively)
    error = gated = False
    position = 0
    restart = True
    while restart:
        restart = False
        for found in pattern.finditer(sql, position):
            group = found.lastgroup
            end = found.end()
            start = found.start(group) if group is not None else end
            text = sql[start:end]
            if group == "end":
                break
            if group == "word":
                if text.isascii():   # keywords are ASCII: other words keep their case (no 'ſ' → 'S')
                    append(_new_token(Token, (_WORD, text, text.upper(), start, end)))
                else:
                    append(_new_token(Token, (_WORD, text, text, start, end)))
            elif group == "op" or group == "number":
                append(_new_token(Token, (_KINDS[group], text, text, start, end)))
            elif group == "string":
                append(_new_token(Token, (TokenKind.STRING, text, unquote(text), start, end)))
            elif group in _KINDS:   # word2, bits, param, other
                value = text.upper() if group == "word2" and text.isascii() else text
                append(_new_token(Token, (_KINDS[group], text, value, start, end)))
            elif group == "comment":
                comments.append(text)
            elif group == "ident":
                append(_new_token(Token, (TokenKind.IDENT, text, unquote(text), start, end)))
            elif group == "sysvar":
                append(_new_token(Token, (TokenKind.SYSTEM_VAR, text, text[2:].lower(), start, end)))
            elif group == "uservar":
                append(_variable(tokens, text, start, end))
            elif group == "exec":
                if text[2] == "M" or (len(text) > 3 and int(text[3:]) > _ALWAYS_RUN_GATE):
                    gated = True
                    if not gated_as_code:
                        close = sql.find("*/", end)
                        if close < 0:
                            append(_new_token(Token, (TokenKind.ERROR, sql[start:], sql[start:], start, len(sql))))
                            error = True
                            break
                        position = close + 2
                        restart = True
                        break
                executable += 1
            elif group == "close":
                if executable:
                    executable -= 1
                else:   # `*/` outside any comment is the operator *, then whatever `/` starts
                    append(_new_token(Token, (TokenKind.OPERATOR, "*", "*", start, start + 1)))
                    position = start + 1
                    restart = True
                    break
            elif group == "unterminated":
                append(_new_token(Token, (TokenKind.ERROR, text, text, start, end)))
                error = True
    if executable:
        error = True   # an executable comment left open: the server rejects the text
    return tokens, comments, error, gated


def _variable(tokens: list[Token], text: str, start: int, end: int) -> Token:
    """`@name`, or the host part of an account name when glued to the user part."""
    previous = tokens[-1] if tokens else None
    if previous is not None and previous.end == start and (
        previous.kind is TokenKind.STRING
        or previous.kind is TokenKind.IDENT
        or (previous.kind is TokenKind.WORD and previous.value not in _BEFORE_VARIABLE)
    ):
        return Token(TokenKind.ACCOUNT_HOST, text, text, start, end)
    name = text[1:]
    if name[:1] in ("'", '"', "`"):
        name = unquote(name)
    return Token(TokenKind.USER_VAR, text, name.lower(), start, end)


# ---- statements ------------------------------------------------------------------------------------

_ROUTINES = frozenset({"PROCEDURE", "FUNCTION", "TRIGGER", "EVENT"})
_COMPOUND_STARTS = frozenset({"IF", "CASE", "LOOP", "REPEAT", "WHILE"})
_ALWAYS_OPEN = frozenset({"BEGIN", "CASE", "LOOP", "WHILE"})
_STATEMENT_POSITION = frozenset({"THEN", "ELSE", "DO", "BEGIN", "LOOP", "REPEAT", "ATOMIC"})


def _is_word(token: Token | None, values: str | frozenset[str]) -> bool:
    """Whether token is the keyword `values` (one word, or any word of a set)."""
    if token is None or token.kind is not _WORD:
        return False
    return token.value == values if isinstance(values, str) else token.value in values


def _compound(tokens: list[Token], start: int) -> bool:
    """Whether the statement starting at tokens[start] may hold `;` inside a BEGIN ... END body."""
    first = tokens[start]
    if first.kind is not _WORD:
        return False
    following = tokens[start + 1 : start + 14]
    if first.value in ("CREATE", "ALTER"):
        for token in following:
            if token.kind is _OPERATOR and token.text == ";":
                return False
            if token.kind is _WORD and token.value in _ROUTINES:
                return True
        return False
    if first.value == "BEGIN":
        return len(following) >= 2 and _is_word(following[0], "NOT") and _is_word(following[1], "ATOMIC")
    if first.value in _COMPOUND_STARTS:
        return True
    return bool(following) and following[0].kind is _OPERATOR and following[0].text == ":"


def _split(tokens: list[Token], error: bool) -> tuple[Statement, ...]:
    statements: list[Statement] = []
    start = 0
    depth = 0
    compound: bool | None = None
    count = len(tokens)
    for index in range(count):
        token = tokens[index]
        if token.kind is _OPERATOR and token.text == ";":
            if compound and depth > 0:
                continue
            if index > start:
                statements.append(Statement(tuple(tokens[start:index])))
            start = index + 1
            depth = 0
            compound = None
            continue
        if compound is None:
            compound = _compound(tokens, index)
        if not compound or token.kind is not _WORD:
            continue
        previous = tokens[index - 1] if index > start else None
        after_end = _is_word(previous, "END")
        value = token.value
        if value == "END":
            depth = max(0, depth - 1)
        elif after_end:
            continue
        elif value in _ALWAYS_OPEN:
            depth += 1
        elif value in ("IF", "REPEAT") and (
            previous is None
            or (previous.kind is _OPERATOR and previous.text in (";", ":"))
            or _is_word(previous, _STATEMENT_POSITION)
        ):
            depth += 1
    if start < count:
        statements.append(Statement(tuple(tokens[start:]), error))
    elif error and statements:   # an executable comment left open before a final `;`
        statements[-1] = Statement(statements[-1].tokens, True)
    return tuple(statements)


_cache: dict[str, Script] = {}


def lex(sql: str, gated_as_code: bool = True, quotes: str = DEFAULT_QUOTES) -> Script:
    """Split `sql` into statements of code tokens, and collect its comments (cached by text).

    The other readings (not cached): `gated_as_code=False` skips version-gated and `/*M!`
    executable comments, as a server that fails the gate does; `quotes` reads quotes as under
    NO_BACKSLASH_ESCAPES or ANSI_QUOTES.
    """
    default = gated_as_code and quotes == DEFAULT_QUOTES
    script = _cache.get(sql) if default else None
    if script is not None:
        return script
    tokens, comments, error, gated = _tokens(sql, gated_as_code, quotes)
    if ";" in sql:
        statements = _split(tokens, error)
    else:   # the common case: one statement (or none)
        statements = (Statement(tuple(tokens), error),) if tokens else ()
    script = Script(statements, tuple(comments), gated)
    if default and len(sql) <= MAX_CACHED_SQL_LENGTH:
        if len(_cache) >= CACHE_SIZE:
            _cache.clear()
        _cache[sql] = script
    return script


def alternative_readings(sql: str, script: Script) -> list[Script]:
    """The other ways a server may read `sql` (lexed as `script`), by its version and sql_mode.

    Empty for most texts; with a backslash in the text, the NO_BACKSLASH_ESCAPES and ANSI_QUOTES
    readings; with a version-gated or MariaDB-only executable comment, the reading that skips it.
    """
    gates = (True, False) if script.gated else (True,)
    quotes = QUOTE_MODES if "\\" in sql else (DEFAULT_QUOTES,)
    return [
        lex(sql, gated, mode) for gated in gates for mode in quotes if not (gated and mode == DEFAULT_QUOTES)
    ]


def tokenize(sql: str) -> list[Token]:
    """Every code token of `sql` in order, `;` included (no cache: for tests and tools)."""
    return _tokens(sql)[0]


def clear_cache() -> None:
    _cache.clear()


# Literals never change a route, so texts that differ only in them share one verdict (sysbench's
# point selects).  Only texts without comments (hints live there) or backslashes (escapes) take
# this path; '...' strings become `?`, a number counts only when it stands alone (not `t1`, `1st`,
# `x.5`, `@v1`), and quoted identifiers are kept as they are — "..." too, which is one under
# ANSI_QUOTES.  A text with an unterminated quote gets no shape: its tail must not look like a literal.
_STRING_OR_NUMBER = r"'(?:[^']|'')*+'|(?<![\w$.@])\d++(?:\.\d++)?(?:[eE][-+]?\d++)?(?![\w$.])"
_LITERAL = re.compile(r"(`(?:[^`]|``)*+`|\"(?:[^\"]|\"\")*+\")|" + _STRING_OR_NUMBER + r"|(['\"`])")
_LITERAL_UNQUOTED = re.compile(_STRING_OR_NUMBER)


def literal_shape(sql: str) -> str | None:
    """sql with every literal replaced by '?', or None when that would not be safe."""
    if "/*" in sql or "--" in sql or "#" in sql or "\\" in sql:
        return None
    if "`" not in sql and '"' not in sql:
        shape = _LITERAL_UNQUOTED.sub("?", sql)
        return None if "'" in shape else shape   # a quote left: unterminated
    unterminated = False

    def piece(match: re.Match[str]) -> str:
        nonlocal unterminated
        if match.group(2) is not None:
            unterminated = True
        return match.group(1) or "?"

    shape = _LITERAL.sub(piece, sql)
    return None if unterminated else shape
