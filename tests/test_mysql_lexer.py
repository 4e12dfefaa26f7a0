"""MySQL / MariaDB tokenizer: token kinds, comments and executable comments, statement splitting, totality."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.engines.mysql import lexer
from proxy.engines.mysql.lexer import TokenKind, lex, render, tokenize, unquote

W, ID, S, N = TokenKind.WORD, TokenKind.IDENT, TokenKind.STRING, TokenKind.NUMBER
U, V, Q, OP = TokenKind.USER_VAR, TokenKind.SYSTEM_VAR, TokenKind.PARAM, TokenKind.OPERATOR
H, E = TokenKind.ACCOUNT_HOST, TokenKind.ERROR


def kinds(sql: str) -> list[tuple[TokenKind, str]]:
    return [(token.kind, token.value) for token in tokenize(sql)]


TOKEN_CASES: list[tuple[str, list[tuple[TokenKind, str]]]] = [
    ("SELECT 1", [(W, "SELECT"), (N, "1")]),
    ("select a FROM t", [(W, "SELECT"), (W, "A"), (W, "FROM"), (W, "T")]),
    ("  \t\n SELECT\r\n1 ", [(W, "SELECT"), (N, "1")]),
    # strings: backslash escapes, doubled quotes, double quotes are strings (no ANSI_QUOTES)
    ("'it''s'", [(S, "it's")]),
    ("'a\\'b'", [(S, "a'b")]),
    ("'a\\\\'", [(S, "a\\")]),
    ("'\\n\\t\\0\\Z\\x'", [(S, "\n\t\x00\x1ax")]),
    ("'\\%\\_'", [(S, "\\%\\_")]),
    ('"x\\"y"', [(S, 'x"y')]),
    ('"say ""hi"""', [(S, 'say "hi"')]),
    ("''", [(S, "")]),
    ("N'abc'", [(S, "abc")]),
    ("_utf8mb4'abc'", [(W, "_UTF8MB4"), (S, "abc")]),
    ("'a;b' ';'", [(S, "a;b"), (S, ";")]),
    # numbers
    ("0x1F X'1f' x'' 0b101 b'01' B'1'", [(N, "0x1F"), (N, "X'1f'"), (N, "x''"), (N, "0b101"), (N, "b'01'"), (N, "B'1'")]),
    ("1.5e3 .5 1. 2E-3 42", [(N, "1.5e3"), (N, ".5"), (N, "1."), (N, "2E-3"), (N, "42")]),
    ("1st 2x 0xZZ", [(W, "1ST"), (W, "2X"), (W, "0XZZ")]),
    ("t1.a", [(W, "T1"), (OP, "."), (W, "A")]),
    # quoted identifiers
    ("`select`", [(ID, "select")]),
    ("`a``b`", [(ID, "a`b")]),
    ("`my table`.`col`", [(ID, "my table"), (OP, "."), (ID, "col")]),
    # variables
    ("@x @X1 @a.b @'quoted var' @\"dq\" @`bq`", [(U, "x"), (U, "x1"), (U, "a.b"), (U, "quoted var"), (U, "dq"), (U, "bq")]),
    ("@@version @@SESSION.sql_mode @@global.read_only @@local.x", [(V, "version"), (V, "session.sql_mode"), (V, "global.read_only"), (V, "local.x")]),
    ("a=@x", [(W, "A"), (OP, "="), (U, "x")]),
    ("(@x)", [(OP, "("), (U, "x"), (OP, ")")]),
    ("SELECT@x", [(W, "SELECT"), (U, "x")]),
    # account names: the host is glued to the user
    ("'u'@'localhost'", [(S, "u"), (H, "@'localhost'")]),
    ("`root`@`%`", [(ID, "root"), (H, "@`%`")]),
    ("root@localhost", [(W, "ROOT"), (H, "@localhost")]),
    ("'u' @x", [(S, "u"), (U, "x")]),
    # placeholders and operators
    ("a = ? AND b <=> ?", [(W, "A"), (OP, "="), (Q, "?"), (W, "AND"), (W, "B"), (OP, "<=>"), (Q, "?")]),
    ("@x := 1", [(U, "x"), (OP, ":="), (N, "1")]),
    ("a->>'$.b' || c != d <> e >= f <= g << h >> i && j", [
        (W, "A"), (OP, "->>"), (S, "$.b"), (OP, "||"), (W, "C"), (OP, "!="), (W, "D"), (OP, "<>"), (W, "E"),
        (OP, ">="), (W, "F"), (OP, "<="), (W, "G"), (OP, "<<"), (W, "H"), (OP, ">>"), (W, "I"), (OP, "&&"), (W, "J"),
    ]),
    # comments
    ("SELECT 1 -- comment", [(W, "SELECT"), (N, "1")]),
    ("SELECT 1 --\tcomment", [(W, "SELECT"), (N, "1")]),
    ("SELECT 1 --", [(W, "SELECT"), (N, "1")]),
    ("SELECT 1--1", [(W, "SELECT"), (N, "1"), (OP, "-"), (OP, "-"), (N, "1")]),
    ("SELECT 1 # comment\n, 2", [(W, "SELECT"), (N, "1"), (OP, ","), (N, "2")]),
    ("SELECT /* c */ 1", [(W, "SELECT"), (N, "1")]),
    ("SELECT /**/1", [(W, "SELECT"), (N, "1")]),
    ("SELECT 2*/*c*/3", [(W, "SELECT"), (N, "2"), (OP, "*"), (N, "3")]),
    ("SELECT 2 */ 3", [(W, "SELECT"), (N, "2"), (OP, "*"), (OP, "/"), (N, "3")]),
    # executable comments are code
    ("SELECT /*! FOR UPDATE */", [(W, "SELECT"), (W, "FOR"), (W, "UPDATE")]),
    ("/*!40101 SET NAMES utf8 */", [(W, "SET"), (W, "NAMES"), (W, "UTF8")]),
    ("SELECT 1 /*!50100 + 2*/", [(W, "SELECT"), (N, "1"), (OP, "+"), (N, "2")]),
    ("/*M! SELECT */ 1", [(W, "SELECT"), (N, "1")]),
    ("/*M!100100 SELECT 1 */", [(W, "SELECT"), (N, "1")]),
    ("/*!*/SELECT 1", [(W, "SELECT"), (N, "1")]),
    ("/*!50000 SELECT /* inner */ 1 */", [(W, "SELECT"), (N, "1")]),
    # unterminated → one ERROR token to the end
    ("SELECT 'abc", [(W, "SELECT"), (E, "'abc")]),
    ('SELECT "abc', [(W, "SELECT"), (E, '"abc')]),
    ("SELECT `abc", [(W, "SELECT"), (E, "`abc")]),
    ("SELECT /* abc", [(W, "SELECT"), (E, "/* abc")]),
    ("SELECT 'a''", [(W, "SELECT"), (E, "'a''")]),
    ("SELECT 'a\\'", [(W, "SELECT"), (E, "'a\\'")]),
    # odd characters are single operators, never errors
    ("\x00 { } \\ ~", [(OP, "\x00"), (OP, "{"), (OP, "}"), (OP, "\\"), (OP, "~")]),
    ("SELECT ſet, Ǳ", [(W, "SELECT"), (W, "ſet"), (OP, ","), (W, "Ǳ")]),
]


@pytest.mark.parametrize(("sql", "expected"), TOKEN_CASES, ids=[repr(c[0])[:50] for c in TOKEN_CASES])
def test_tokens(sql: str, expected: list[tuple[TokenKind, str]]) -> None:
    assert kinds(sql) == expected


def test_semicolons_are_operator_tokens_in_tokenize() -> None:
    assert kinds("SELECT 1; SELECT 2") == [(W, "SELECT"), (N, "1"), (OP, ";"), (W, "SELECT"), (N, "2")]


def statements(sql: str) -> list[str]:
    return [statement.text() for statement in lex(sql).statements]


SPLIT_CASES: list[tuple[str, list[str]]] = [
    ("SELECT 1", ["SELECT 1"]),
    ("SELECT 1;", ["SELECT 1"]),
    ("SELECT 1; SELECT 2", ["SELECT 1", "SELECT 2"]),
    (";; SELECT 1 ;; ;", ["SELECT 1"]),
    ("", []),
    ("   ", []),
    ("-- only a comment", []),
    ("SELECT ';'; SELECT \";\"; SELECT `;`", ["SELECT ';'", 'SELECT ";"', "SELECT `;`"]),
    ("SELECT 1 /* ; */; SELECT 2 -- ;\n", ["SELECT 1", "SELECT 2"]),
    ("SELECT 1 # ; DELETE FROM t\n; SELECT 2", ["SELECT 1", "SELECT 2"]),
    ("SELECT 1 /*!; DELETE FROM t */", ["SELECT 1", "DELETE FROM t"]),
    ("/*!40101 SET NAMES utf8 */;\nSELECT 1", ["SET NAMES utf8", "SELECT 1"]),
    # routine bodies keep their inner `;` (as the server parses them)
    (
        "CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END; CALL p()",
        ["CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END", "CALL p()"],
    ),
    (
        "CREATE DEFINER=`root`@`%` PROCEDURE p() BEGIN IF a THEN SET @x = 1; END IF; END; SELECT 2",
        ["CREATE DEFINER=`root`@`%` PROCEDURE p() BEGIN IF a THEN SET @x = 1; END IF; END", "SELECT 2"],
    ),
    (
        "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN CASE WHEN 1 THEN SET NEW.a = 1; END CASE; "
        "WHILE x DO SET x = x - 1; END WHILE; REPEAT SET x = REPEAT('a', 2); UNTIL 1 END REPEAT; "
        "l: LOOP LEAVE l; END LOOP; END; SELECT 3",
        [
            "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN CASE WHEN 1 THEN SET NEW.a = 1; END CASE; "
            "WHILE x DO SET x = x - 1; END WHILE; REPEAT SET x = REPEAT('a', 2); UNTIL 1 END REPEAT; "
            "l: LOOP LEAVE l; END LOOP; END",
            "SELECT 3",
        ],
    ),
    ("CREATE FUNCTION f() RETURNS INT RETURN 1; SELECT f()", ["CREATE FUNCTION f() RETURNS INT RETURN 1", "SELECT f()"]),
    (
        "CREATE FUNCTION f() RETURNS INT RETURN CASE WHEN 1 THEN 1 ELSE 2 END; SELECT f()",
        ["CREATE FUNCTION f() RETURNS INT RETURN CASE WHEN 1 THEN 1 ELSE 2 END", "SELECT f()"],
    ),
    ("CREATE TABLE t (a INT); CREATE FUNCTION f() RETURNS INT RETURN 1", ["CREATE TABLE t (a INT)", "CREATE FUNCTION f() RETURNS INT RETURN 1"]),
    # MariaDB top-level compound statements (checked on MariaDB 10.11)
    ("BEGIN NOT ATOMIC SET @z = 5; SELECT @z; END; SELECT 13", ["BEGIN NOT ATOMIC SET @z = 5; SELECT @z; END", "SELECT 13"]),
    ("IF 1 THEN SELECT 10; SELECT 11; END IF; SELECT 12", ["IF 1 THEN SELECT 10; SELECT 11; END IF", "SELECT 12"]),
    # BEGIN alone is a transaction start, not a block
    ("BEGIN; SELECT 1; COMMIT", ["BEGIN", "SELECT 1", "COMMIT"]),
    ("SELECT IF(a, 1, 2); SELECT CASE WHEN a THEN 1 END; SELECT 3", ["SELECT IF(a, 1, 2)", "SELECT CASE WHEN a THEN 1 END", "SELECT 3"]),
]


@pytest.mark.parametrize(("sql", "expected"), SPLIT_CASES, ids=[repr(c[0])[:50] for c in SPLIT_CASES])
def test_statement_split(sql: str, expected: list[str]) -> None:
    assert statements(sql) == expected


def test_comments_are_kept_for_hints_but_executable_comments_are_code() -> None:
    script = lex("/* dbproxy:route=replica */ SELECT 1 -- tail\n # hash\n /*!50000 + 1 */")
    assert script.comments == ("/* dbproxy:route=replica */", "-- tail", "# hash")
    assert [t.value for t in script.statements[0].tokens] == ["SELECT", "1", "+", "1"]


def test_gated_executable_comments_have_a_second_reading() -> None:
    sql = "SELECT 1 /*!99999 ' */ , 2 -- ' */"
    code, skipped = lex(sql), lex(sql, gated_as_code=False)
    assert lex("SELECT 1 /*!50000 ' */ , 2 -- ' */").gated is False
    assert code.gated and skipped.gated
    assert [t.value for t in code.statements[0].tokens] == ["SELECT", "1", " */ , 2 -- "]
    assert [t.value for t in skipped.statements[0].tokens] == ["SELECT", "1", ",", "2"]   # as MariaDB runs it
    assert [t.value for t in lex("/*M! SELECT */ 1", gated_as_code=False).statements[0].tokens] == ["1"]
    assert not lex("SELECT /*! 1 */").gated   # no version: every server runs it
    assert lex("SELECT 1 /*!50000 open", gated_as_code=False).error


@pytest.mark.parametrize(("quotes", "values"), [
    ("default", ["SELECT", "a' ; DELETE FROM t -- "]),
    ("no_backslash_escapes", ["SELECT", "a\\", "DELETE", "FROM", "T"]),
    ("ansi_quotes", ["SELECT", "a' ; DELETE FROM t -- "]),
])
def test_quote_modes(quotes: str, values: list[str]) -> None:
    sql = "SELECT 'a\\' ; DELETE FROM t -- '"
    script = lex(sql, quotes=quotes)
    assert [t.value for s in script.statements for t in s.tokens] == values


def test_alternative_readings() -> None:
    plain = "SELECT 'a' FROM t"
    assert lexer.alternative_readings(plain, lex(plain)) == []
    escaped = 'SELECT "a\\" FROM t'
    readings = lexer.alternative_readings(escaped, lex(escaped))
    assert len(readings) == 2   # NO_BACKSLASH_ESCAPES, ANSI_QUOTES
    assert [t.text for t in readings[1].statements[0].tokens] == ["SELECT", '"a\\"', "FROM", "t"]
    gated = "SELECT 1 /*!80000 + 1 */ + 'x\\'"
    assert len(lexer.alternative_readings(gated, lex(gated))) == 5
    assert not lex("SELECT /*!50000 1 */").gated and not lex("SELECT /*!40101 1 */").gated
    assert lex("SELECT /*!50701 1 */").gated and lex("SELECT /*M!100100 1 */").gated


def test_unterminated_text_marks_the_statement() -> None:
    script = lex("SELECT 1; SELECT 'x")
    assert [s.error for s in script.statements] == [False, True]
    assert script.error
    assert lex("/*!50000 SELECT 1").statements[0].error     # an executable comment left open
    assert lex("/*!50000 SELECT 1;").error
    assert not lex("SELECT 1").error


def test_first_word_and_render() -> None:
    (statement,) = lex("  select  a,b FROM `t` WHERE x=-1 ").statements
    assert statement.first_word == "SELECT"
    assert statement.text() == "select a,b FROM `t` WHERE x=-1"
    assert render(()) == ""
    (other,) = lex("(SELECT 1)").statements
    assert other.first_word == ""


@pytest.mark.parametrize(("text", "value"), [
    ("'a''b'", "a'b"), ('"a""b"', 'a"b'), ("`a``b`", "a`b"), ("N'x'", "x"), ("'a\\'b''c'", "a'b'c"), ("'\\\\'", "\\"),
])
def test_unquote(text: str, value: str) -> None:
    assert unquote(text) == value


def test_cache_is_bounded_and_skips_long_texts() -> None:
    lexer.clear_cache()
    first = lex("SELECT 1")
    assert lex("SELECT 1") is first
    for i in range(lexer.CACHE_SIZE + 10):
        lex(f"SELECT {i}")
    assert len(lexer._cache) <= lexer.CACHE_SIZE
    long_text = "SELECT " + "1," * lexer.MAX_CACHED_SQL_LENGTH + "1"
    lex(long_text)
    assert long_text not in lexer._cache


@pytest.mark.parametrize("text", [
    "'" * 200_000,
    "'a" + "\\'" * 100_000,
    "/*" * 100_000,
    "/*!" * 50_000,
    "1" * 200_000 + "a",
    "`" + "x``" * 60_000,
    "@" * 200_000,
    "-- \n" * 50_000,
    "SELECT " + "(" * 50_000 + ")" * 50_000,
    "BEGIN NOT ATOMIC " + "IF 1 THEN " * 20_000,
    "SELECT " + "a, " * 60_000 + "1",
    "SELECT 1" + " " * 200_000,
    "SELECT 1 " + "2 */ " * 40_000,
    "SELECT 1 " + "/*!80000 x */ " * 30_000 + "/*!80000 '",
    "SELECT 1" + "\n\t " * 70_000 + ";" + " " * 100_000,
])
def test_lexing_is_linear(text: str) -> None:
    started = time.perf_counter()
    script = lex(text)
    for other in lexer.alternative_readings(text, script):
        assert isinstance(other, lexer.Script)
    assert time.perf_counter() - started < 3.0


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_never_raises_and_tokens_are_ordered(sql: str) -> None:
    tokens = tokenize(sql)
    position = 0
    for token in tokens:
        assert position <= token.start < token.end <= len(sql)
        assert sql[token.start : token.end] == token.text
        position = token.end
    script = lex(sql)
    assert all(statement.tokens for statement in script.statements)


FRAGMENTS = st.sampled_from([
    "SELECT", "1", "'", '"', "`", "/*", "*/", "/*!", "/*!50000", "/*M!", "--", "-- ", "#", "\n", ";", "@", "@@",
    "@x", "'a'", "\\", "BEGIN", "END", "IF", "CASE", "NOT ATOMIC", "CREATE PROCEDURE p()", "THEN", "x", "(", ")",
])


@settings(max_examples=500, deadline=None)
@given(st.lists(FRAGMENTS, max_size=25).map("".join), st.lists(FRAGMENTS, max_size=25).map(" ".join))
def test_never_raises_on_sql_like_text(glued: str, spaced: str) -> None:
    for sql in (glued, spaced):
        script = lex(sql)
        for statement in script.statements:
            assert all(token.kind is not TokenKind.OPERATOR or token.text != ";" or statement.tokens
                       for token in statement.tokens)
