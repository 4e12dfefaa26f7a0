"""MySQL session state for transaction pooling: SETs to replay, USE, pins, KILL, LOCAL INFILE, the pre-filter."""

from __future__ import annotations

import timeit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.engines.mysql import session_state
from proxy.engines.mysql.lexer import lex
from proxy.engines.mysql.session_state import (
    AMBIGUOUS,
    EMPTY,
    LAST_INSERT_ID_PIN,
    NON_LITERAL,
    Kill,
    MysqlSessionEffects,
    SetVariable,
    analyze,
    might_change_session,
    quote_name,
    session_effects,
    statement_effects,
)


def sets(*pairs: tuple[str, str | None]) -> MysqlSessionEffects:
    return MysqlSessionEffects(sets=tuple(SetVariable(name, value) for name, value in pairs))


def pin(reason: str) -> MysqlSessionEffects:
    return MysqlSessionEffects(pin_reason=reason)


SET_CASES: list[tuple[str, MysqlSessionEffects]] = [
    ("SET autocommit = 0", sets(("autocommit", "0"))),
    ("SET autocommit=1", sets(("autocommit", "1"))),
    ("set AUTOCOMMIT = ON", sets(("autocommit", "ON"))),
    ("SET sql_mode = 'STRICT_TRANS_TABLES,NO_ZERO_DATE'", sets(("sql_mode", "'STRICT_TRANS_TABLES,NO_ZERO_DATE'"))),
    ("SET SESSION sql_mode = ''", sets(("sql_mode", "''"))),
    ("SET LOCAL sql_mode = TRADITIONAL", sets(("sql_mode", "TRADITIONAL"))),
    ("SET @@sql_mode = 'ANSI'", sets(("sql_mode", "'ANSI'"))),
    ("SET @@session.time_zone = '+00:00'", sets(("time_zone", "'+00:00'"))),
    ("SET @@SESSION.time_zone = 'UTC'", sets(("time_zone", "'UTC'"))),
    ("SET @@local.wait_timeout = 60", sets(("wait_timeout", "60"))),
    ("SET time_zone = SYSTEM", sets(("time_zone", "SYSTEM"))),
    ("SET time_zone := 'Europe/Paris'", sets(("time_zone", "'Europe/Paris'"))),
    ("SET transaction_isolation = 'READ-COMMITTED'", sets(("transaction_isolation", "'READ-COMMITTED'"))),
    ("SET tx_isolation = 'REPEATABLE-READ'", sets(("tx_isolation", "'REPEATABLE-READ'"))),
    ("SET transaction_read_only = ON", sets(("transaction_read_only", "ON"))),
    ("SET session_track_gtids = OWN_GTID", sets(("session_track_gtids", "OWN_GTID"))),
    ("SET session_track_state_change = 1", sets(("session_track_state_change", "1"))),
    ("SET max_execution_time = 1000", sets(("max_execution_time", "1000"))),
    ("SET max_statement_time = 1.5", sets(("max_statement_time", "1.5"))),
    ("SET div_precision_increment = -1", sets(("div_precision_increment", "-1"))),
    ("SET sql_select_limit = DEFAULT", sets(("sql_select_limit", None))),
    ("SET SESSION wait_timeout = default", sets(("wait_timeout", None))),
    ("SET foreign_key_checks = FALSE, unique_checks = TRUE", sets(("foreign_key_checks", "FALSE"), ("unique_checks", "TRUE"))),
    ("SET sql_log_bin = OFF", sets(("sql_log_bin", "OFF"))),
    ("SET optimizer_switch = 'index_merge=off'", sets(("optimizer_switch", "'index_merge=off'"))),
    ("SET group_concat_max_len = 0x10000", sets(("group_concat_max_len", "0x10000"))),
    ("SET sql_mode = \"ANSI_QUOTES\"", sets(("sql_mode", '"ANSI_QUOTES"'))),
    ("SET sql_mode = _utf8mb4'STRICT_ALL_TABLES'", sets(("sql_mode", "_utf8mb4'STRICT_ALL_TABLES'"))),
    ("SET sql_mode = 'STRICT_' 'TRANS_TABLES'", sets(("sql_mode", "'STRICT_' 'TRANS_TABLES'"))),
    ("SET sql_mode = N'ANSI'", sets(("sql_mode", "N'ANSI'"))),
    ("SET `sql_mode` = ''", sets(("sql_mode", "''"))),
    ("SET character_set_results = NULL", sets(("character_set_results", "NULL"))),
    ("SET default.key_buffer_size = 1", sets(("default.key_buffer_size", "1"))),
    (
        "SET SESSION sql_mode = 'ANSI', @@session.time_zone = '+01:00', wait_timeout = DEFAULT",
        sets(("sql_mode", "'ANSI'"), ("time_zone", "'+01:00'"), ("wait_timeout", None)),
    ),
    ("SET NAMES utf8mb4", sets(("names", "utf8mb4"))),
    ("SET NAMES 'utf8mb4'", sets(("names", "'utf8mb4'"))),
    ("SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci", sets(("names", "utf8mb4 COLLATE utf8mb4_unicode_ci"))),
    ("SET NAMES 'utf8' COLLATE 'utf8_bin'", sets(("names", "'utf8' COLLATE 'utf8_bin'"))),
    ("SET NAMES utf8mb4 COLLATE DEFAULT", sets(("names", "utf8mb4 COLLATE DEFAULT"))),
    ("SET NAMES DEFAULT", sets(("names", None))),
    ("SET CHARACTER SET utf8mb4", sets(("character set", "utf8mb4"))),
    ("SET CHARSET 'latin1'", sets(("character set", "'latin1'"))),
    ("SET CHARACTER SET DEFAULT", sets(("character set", None))),
    ("SET NAMES utf8mb4, sql_mode = ''", sets(("names", "utf8mb4"), ("sql_mode", "''"))),
    (
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        sets(("transaction_isolation", "'READ-COMMITTED'")),
    ),
    (
        "SET LOCAL TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY",
        sets(("transaction_isolation", "'SERIALIZABLE'"), ("transaction_read_only", "ON")),
    ),
    ("SET SESSION TRANSACTION READ WRITE", sets(("transaction_read_only", "OFF"))),
    ("/*!40101 SET NAMES utf8 */", sets(("names", "utf8"))),
    ("/* c */ SET autocommit = 0", sets(("autocommit", "0"))),
    ("-- c\nSET autocommit = 0;", sets(("autocommit", "0"))),
    ("SELECT 1; SET autocommit = 0", sets(("autocommit", "0"))),
    ("SET a = 1; SET b = 2; SET a = DEFAULT", sets(("a", "1"), ("b", "2"), ("a", None))),
    # MariaDB SET STATEMENT ... FOR: statement-scoped, nothing tracked
    ("SET STATEMENT max_statement_time = 1 FOR SELECT 1", EMPTY),
    # global settings are server-wide: reported, never replayed (checked on MariaDB 10.11: a later
    # unscoped assignment after GLOBAL is global too, after @@global. it is a session one)
    ("SET GLOBAL max_connections = 1000", MysqlSessionEffects(global_sets=("max_connections",))),
    ("SET PERSIST max_connections = 1000", MysqlSessionEffects(global_sets=("max_connections",))),
    ("SET @@global.read_only = 1", MysqlSessionEffects(global_sets=("read_only",))),
    ("SET @@persist.max_connections = 1, @@PERSIST_ONLY.x = 2", MysqlSessionEffects(global_sets=("max_connections", "x"))),
    (
        "SET GLOBAL max_connections = 1000, wait_timeout = 10",
        MysqlSessionEffects(global_sets=("max_connections", "wait_timeout")),
    ),
    (
        "SET GLOBAL max_connections = 1000, SESSION wait_timeout = 10",
        MysqlSessionEffects(sets=(SetVariable("wait_timeout", "10"),), global_sets=("max_connections",)),
    ),
    (
        "SET @@global.max_connections = 1000, wait_timeout = 10",
        MysqlSessionEffects(sets=(SetVariable("wait_timeout", "10"),), global_sets=("max_connections",)),
    ),
    (
        "SET GLOBAL TRANSACTION ISOLATION LEVEL READ COMMITTED",
        MysqlSessionEffects(global_sets=("transaction_isolation",)),
    ),
    ("SET GLOBAL sql_mode = CONCAT(@@sql_mode, ',X')", MysqlSessionEffects(global_sets=("sql_mode",))),
    # the next transaction only
    (
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        MysqlSessionEffects(next_transaction=("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",)),
    ),
    ("set transaction read only", MysqlSessionEffects(next_transaction=("set transaction read only",))),
    # USE
    ("USE app", MysqlSessionEffects(schema="app")),
    ("USE `my db`", MysqlSessionEffects(schema="my db")),
    ("use App;", MysqlSessionEffects(schema="App")),
    ("USE a; USE b", MysqlSessionEffects(schema="b")),
    ("USE a; SET NAMES utf8mb4", MysqlSessionEffects(sets=(SetVariable("names", "utf8mb4"),), schema="a")),
    # KILL: the proxy maps n to its own connection ids
    ("KILL 42", MysqlSessionEffects(kill=Kill("connection", 42))),
    ("KILL CONNECTION 42", MysqlSessionEffects(kill=Kill("connection", 42))),
    ("KILL QUERY 42", MysqlSessionEffects(kill=Kill("query", 42))),
    ("kill query 7;", MysqlSessionEffects(kill=Kill("query", 7))),
    ("KILL HARD QUERY 42", MysqlSessionEffects(kill=Kill("query", 42))),
    ("KILL SOFT CONNECTION 3", MysqlSessionEffects(kill=Kill("connection", 3))),
    ("KILL QUERY ID 99", MysqlSessionEffects(kill=Kill("query id", 99))),
    ("KILL USER 'bob'", MysqlSessionEffects(kill=Kill("user", None))),
    ("KILL CONNECTION_ID()", MysqlSessionEffects(kill=Kill("connection", None))),
    # LOAD DATA LOCAL INFILE: refused unless allowed
    ("LOAD DATA LOCAL INFILE '/tmp/x.csv' INTO TABLE t", MysqlSessionEffects(local_infile=True)),
    ("LOAD DATA LOW_PRIORITY LOCAL INFILE 'x' INTO TABLE t", MysqlSessionEffects(local_infile=True)),
    ("load xml local infile 'x.xml' into table t", MysqlSessionEffects(local_infile=True)),
    # LAST_INSERT_ID(): a flag, not a pin
    ("SELECT LAST_INSERT_ID()", MysqlSessionEffects(uses_last_insert_id=True)),
    ("INSERT INTO child (parent_id) VALUES (LAST_INSERT_ID())", MysqlSessionEffects(uses_last_insert_id=True)),
    ("UPDATE seq SET id = LAST_INSERT_ID(id + 1)", MysqlSessionEffects(uses_last_insert_id=True)),
]

PIN_CASES: list[tuple[str, MysqlSessionEffects]] = [
    ("SET @x = 1", pin("user variable")),
    ("SET @x := 1, @y = 2", pin("user variable")),
    ("SELECT @x", pin("user variable")),
    ("SELECT @x := 1", pin("user variable")),
    ("SELECT a INTO @v FROM t", pin("user variable")),
    ("SELECT a FROM t INTO @v", pin("user variable")),
    ("SELECT * FROM t WHERE a = @`quoted`", pin("user variable")),
    ("SELECT @'quoted var'", pin("user variable")),
    ("UPDATE t SET a = @x", pin("user variable")),
    ("CALL p(@out)", pin("user variable")),
    ("SELECT /*!50000 @x */", pin("user variable")),
    ("/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */", pin("user variable")),
    ("SET sql_mode = CONCAT(@@sql_mode, ',NO_ZERO_DATE')", pin(NON_LITERAL)),
    ("SET time_zone = @tz", pin(NON_LITERAL)),
    ("SET wait_timeout = 60 * 60", pin(NON_LITERAL)),
    ("SET wait_timeout = (SELECT 1)", pin(NON_LITERAL)),
    ("SET sql_mode = @@global.sql_mode", pin(NON_LITERAL)),
    ("SET sql_mode = ?", pin(NON_LITERAL)),
    ("SET tx_isolation = READ-COMMITTED", pin(NON_LITERAL)),   # a syntax error on the server
    ("SET NAMES @cs", pin(NON_LITERAL)),
    ("SET sql_mode = 'a' COLLATE utf8mb4_bin", pin(NON_LITERAL)),
    ("SET autocommit = 0, time_zone = @tz", MysqlSessionEffects(sets=(SetVariable("autocommit", "0"),), pin_reason=NON_LITERAL)),
    ("LOCK TABLES t READ", pin("LOCK TABLES")),
    ("lock table t write, u read", pin("LOCK TABLES")),
    ("LOCK INSTANCE FOR BACKUP", pin("LOCK INSTANCE")),
    ("BACKUP LOCK t", pin("BACKUP LOCK")),
    ("FLUSH TABLES WITH READ LOCK", pin("FLUSH TABLES WITH READ LOCK")),
    ("FLUSH TABLES t FOR EXPORT", pin("FLUSH TABLES FOR EXPORT")),
    ("FLUSH TABLES a, b, c, d, e, f, g, h, i, j, k WITH READ LOCK", pin("FLUSH TABLES WITH READ LOCK")),
    ("SELECT GET_LOCK('job', 10)", pin("GET_LOCK")),
    ("SELECT * FROM jobs WHERE GET_LOCK(CONCAT('job', id), 0) LIMIT 1", pin("GET_LOCK")),
    ("DO GET_LOCK('a', 1)", pin("GET_LOCK")),
    ("SELECT get_lock ('a', 1)", pin("GET_LOCK")),
    ("SELECT `GET_LOCK`('a', 1)", pin("GET_LOCK")),
    ("CREATE TEMPORARY TABLE t (a INT)", pin("temporary table")),
    ("create temporary table if not exists t select 1", pin("temporary table")),
    ("CREATE OR REPLACE TEMPORARY TABLE t (a INT)", pin("temporary table")),
    ("PREPARE s FROM 'SELECT 1'", pin("SQL PREPARE")),
    ("EXECUTE s", pin("SQL PREPARE")),
    ("DEALLOCATE PREPARE s", pin("SQL PREPARE")),
    ("DROP PREPARE s", pin("SQL PREPARE")),
    ("EXECUTE IMMEDIATE 'SELECT 1'", pin("SQL PREPARE")),
    ("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 10", pin("SQL_CALC_FOUND_ROWS")),
    ("SELECT /*!40001 SQL_CALC_FOUND_ROWS */ * FROM t", pin("SQL_CALC_FOUND_ROWS")),
    ("SELECT FOUND_ROWS()", pin("FOUND_ROWS()")),
    ("HANDLER t OPEN", pin("HANDLER")),
    ("HANDLER t READ FIRST", pin("HANDLER")),
    ("XA START 'x'", pin("XA")),
    ("XA BEGIN 'x'", pin("XA")),
    ("SET ROLE admin", pin("SET ROLE")),
    ("SET ROLE DEFAULT", pin("SET ROLE")),
    ("SET RESOURCE GROUP batch", pin("SET RESOURCE GROUP")),
    ("SET CHARACTER utf8", pin("unrecognized SET")),
    ("SET x", pin("unrecognized SET")),
    ("SET STATEMENT max_statement_time = 1", pin("unrecognized SET")),
    ("SET STATEMENT max_statement_time = 1 FOR SELECT @x", pin("user variable")),
    ("SET SESSION TRANSACTION ISOLATION LEVEL SOMETHING", pin("unrecognized SET")),
    ("BEGIN NOT ATOMIC SELECT 1; END", pin("compound statement")),
    ("IF 1 THEN SELECT 1; END IF", pin("compound statement")),
    ("lbl: LOOP LEAVE lbl; END LOOP", pin("compound statement")),
    # read differently under NO_BACKSLASH_ESCAPES / ANSI_QUOTES or by servers failing a version gate
    ("SELECT 'a\\' ; SET NAMES latin1 -- '", pin(AMBIGUOUS)),
    ("SELECT 1 /*!80000 ' */ ; SET NAMES latin1 -- ' */", pin(AMBIGUOUS)),
    ("/*!80000 SET NAMES latin1 */", MysqlSessionEffects(sets=(SetVariable("names", "latin1"),), pin_reason=AMBIGUOUS)),
    ('SELECT "GET_LOCK"(\'a\', 1)', pin("GET_LOCK")),
    (
        "SET autocommit = 0; SELECT GET_LOCK('a', 1); LOCK TABLES t READ",
        MysqlSessionEffects(sets=(SetVariable("autocommit", "0"),), pin_reason="GET_LOCK"),
    ),
    (
        "SELECT LAST_INSERT_ID(); SET @x = 1",
        MysqlSessionEffects(pin_reason="user variable", uses_last_insert_id=True),
    ),
]

NON_PIN_CASES: list[tuple[str, MysqlSessionEffects]] = [
    ("SELECT '@x'", EMPTY),
    ("SELECT \"@x\", `@x` FROM t", EMPTY),
    ("SELECT @@version", EMPTY),
    ("SELECT @@session.sql_mode, @@global.read_only", EMPTY),
    ("SELECT 1 /* GET_LOCK('a', 1) */", EMPTY),
    ("SELECT 1 -- SET @x = 1", EMPTY),
    ("SELECT 1 # LOCK TABLES t READ", EMPTY),
    ("SELECT 'GET_LOCK(1)', 'LAST_INSERT_ID()', 'FOUND_ROWS()'", EMPTY),
    ("SELECT get_lock FROM t", EMPTY),
    ("SELECT 1 /* ; SET NAMES x */", EMPTY),
    ("SELECT 'x; SET NAMES latin1'", EMPTY),
    ("UPDATE t SET a = 1", EMPTY),
    ("UPDATE t\nSET a = 1, b = 'x'", EMPTY),
    ("INSERT INTO t (a, b) VALUES (1, 'a@b.c')", EMPTY),
    ("INSERT INTO t SET a = 1", EMPTY),
    ("INSERT INTO settings (k) VALUES ('set')", EMPTY),
    ("SELECT * FROM t FOR UPDATE", EMPTY),
    ("SELECT * FROM t INTO OUTFILE '/tmp/x'", EMPTY),
    ("SELECT RELEASE_LOCK('a'), IS_FREE_LOCK('a')", EMPTY),
    ("SELECT db.LAST_INSERT_ID2()", EMPTY),
    ("CREATE TABLE t (a INT)", EMPTY),
    ("DROP TEMPORARY TABLE t", EMPTY),
    ("CREATE USER 'u'@'localhost' IDENTIFIED BY 'p'", EMPTY),
    ("GRANT SELECT ON db.* TO 'u'@'%'", EMPTY),
    ("CREATE DEFINER=`root`@`localhost` VIEW v AS SELECT 1", EMPTY),
    ("CREATE PROCEDURE p() BEGIN SET @x = 1; SET SESSION sql_mode = ''; CREATE TEMPORARY TABLE t (a INT); END", EMPTY),
    ("CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.a = @x", EMPTY),
    ("CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO SELECT GET_LOCK('a', 1)", EMPTY),
    ("ALTER TABLE t LOCK = NONE", EMPTY),
    ("SET PASSWORD = 'secret'", EMPTY),
    ("SET PASSWORD FOR 'u'@'%' = 'x'", EMPTY),
    ("SET DEFAULT ROLE r TO 'u'@'%'", EMPTY),
    ("UNLOCK TABLES", EMPTY),
    ("FLUSH TABLES", EMPTY),
    ("FLUSH PRIVILEGES", EMPTY),
    ("LOAD DATA INFILE '/tmp/local' INTO TABLE t", EMPTY),
    ("START TRANSACTION READ ONLY", EMPTY),
    ("BEGIN", EMPTY),
    ("COMMIT", EMPTY),
    ("XA END 'x'", EMPTY),
    ("SHOW VARIABLES LIKE 'sql_mode'", EMPTY),
    ("SET x = 'a", EMPTY),        # unterminated: the server rejects it, nothing happens
    ("SET @x = 1 /*", EMPTY),
    ("SET sql_mode = 'a\\b', time_zone = '+00:00'", sets(("sql_mode", "'a\\b'"), ("time_zone", "'+00:00'"))),
    ("/*!40101 SET NAMES utf8mb4 */ ; /*!50003 SET sql_mode = '' */", sets(("names", "utf8mb4"), ("sql_mode", "''"))),
    ("", EMPTY),
    (";", EMPTY),
    ("SELECT c FROM sbtest1 WHERE id = 5023", EMPTY),
]

CASES = SET_CASES + PIN_CASES + NON_PIN_CASES


def test_tables_are_large_enough_and_unique() -> None:
    assert len(SET_CASES) >= 60 and len(PIN_CASES) >= 40 and len(NON_PIN_CASES) >= 30
    assert len({sql for sql, _ in CASES}) == len(CASES), "duplicate SQL in the tables"


@pytest.mark.parametrize(("sql", "expected"), CASES, ids=[repr(c[0])[:60] for c in CASES])
def test_session_effects(sql: str, expected: MysqlSessionEffects) -> None:
    assert analyze(sql) == expected
    assert session_effects(sql) == expected


@pytest.mark.parametrize(("sql", "expected"), CASES, ids=[repr(c[0])[:60] for c in CASES])
def test_pre_filter_never_hides_an_effect(sql: str, expected: MysqlSessionEffects) -> None:
    if expected != EMPTY:
        assert might_change_session(sql.encode())


@pytest.mark.parametrize("sql", [
    "SELECT c FROM sbtest1 WHERE id = 5023",
    "select c from sbtest1 where id=1;",
    "SELECT * FROM t WHERE a IN (1, 2, 3)",
    "INSERT INTO t (a, b) VALUES (1, 'x')",
    "INSERT INTO sbtest1 (id, k, c, pad) VALUES (1, 2, 'c', 'pad')",
    "UPDATE sbtest1 SET k = k + 1 WHERE id = 7",
    "DELETE FROM sbtest1 WHERE id = 7",
    "REPLACE INTO t VALUES (1)",
    "BEGIN",
    "START TRANSACTION",
    "COMMIT",
    "ROLLBACK",
    "SHOW TABLES",
    "WITH x AS (SELECT 1) SELECT * FROM x",
    "CREATE TABLE t (a INT)",
    "SELECT 1; SELECT 2",
])
def test_pre_filter_passes_ordinary_statements(sql: str) -> None:
    assert not might_change_session(sql.encode())
    assert session_effects(sql) is EMPTY


def test_effect_of_one_statement() -> None:
    first, second = lex("SET NAMES utf8mb4; SELECT @x").statements
    assert statement_effects(first) == sets(("names", "utf8mb4"))
    assert statement_effects(second) == pin("user variable")


def test_convenience_properties() -> None:
    effects = analyze("SET NAMES latin1, autocommit = OFF; SET CHARACTER SET utf8mb4")
    assert effects.charset == SetVariable("character set", "utf8mb4")
    assert effects.autocommit is False
    assert analyze("SET autocommit = 1").autocommit is True
    assert analyze("SET autocommit = DEFAULT").autocommit is None
    assert analyze("SET sql_mode = ''").autocommit is None and analyze("SET sql_mode = ''").charset is None
    assert LAST_INSERT_ID_PIN == "LAST_INSERT_ID()"


@pytest.mark.parametrize(("change", "sql"), [
    (SetVariable("autocommit", "0"), "SET SESSION autocommit = 0"),
    (SetVariable("sql_mode", "'ANSI'"), "SET SESSION sql_mode = 'ANSI'"),
    (SetVariable("wait_timeout", None), "SET SESSION wait_timeout = DEFAULT"),
    (SetVariable("default.key_buffer_size", "1"), "SET SESSION default.key_buffer_size = 1"),
    (SetVariable("select", "1"), "SET SESSION select = 1"),
    (SetVariable("odd name", "1"), "SET SESSION `odd name` = 1"),
    (SetVariable("names", "utf8mb4 COLLATE utf8mb4_bin"), "SET NAMES utf8mb4 COLLATE utf8mb4_bin"),
    (SetVariable("names", None), "SET NAMES DEFAULT"),
    (SetVariable("character set", "latin1"), "SET CHARACTER SET latin1"),
    (SetVariable("transaction_isolation", "'READ-COMMITTED'"), "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"),
    (SetVariable("tx_isolation", "'SERIALIZABLE'"), "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
    (SetVariable("transaction_read_only", "ON"), "SET SESSION TRANSACTION READ ONLY"),
    (SetVariable("tx_read_only", "0"), "SET SESSION TRANSACTION READ WRITE"),
    (SetVariable("transaction_isolation", None), "SET SESSION transaction_isolation = DEFAULT"),
])
def test_replay_sql(change: SetVariable, sql: str) -> None:
    assert change.to_sql() == sql


@pytest.mark.parametrize(("sql", "expected"), SET_CASES, ids=[repr(c[0])[:60] for c in SET_CASES])
def test_replayed_sets_reparse_to_the_same_changes(sql: str, expected: MysqlSessionEffects) -> None:
    for change in expected.sets:
        (again,) = analyze(change.to_sql()).sets
        if change.name in ("tx_isolation", "tx_read_only"):   # replayed in the portable form
            assert again.name in ("transaction_isolation", "transaction_read_only")
        else:
            assert again == change


def test_quote_name() -> None:
    assert quote_name("sql_mode") == "sql_mode"
    assert quote_name("a.b") == "a.b"
    assert quote_name("1x") == "`1x`"
    assert quote_name("a`b") == "`a``b`"


def test_cache_serves_repeated_stateful_texts_and_is_bounded() -> None:
    session_state.clear_cache()
    sql = "SET NAMES utf8mb4"
    assert session_effects(sql) is session_effects(sql)
    for i in range(session_state.CACHE_SIZE + 5):
        session_effects(f"SET wait_timeout = {i}")
    assert len(session_state._cache) <= session_state.CACHE_SIZE
    session_effects("SELECT 1")
    assert "SELECT 1" not in session_state._cache   # the pre-filter answered: nothing cached


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_never_raises_on_arbitrary_text(sql: str) -> None:
    assert isinstance(session_effects(sql), MysqlSessionEffects)
    assert isinstance(might_change_session(sql.encode("utf-8", "surrogatepass")), bool)


FRAGMENTS = st.sampled_from([
    "SET", "SESSION", "GLOBAL", "@@session.", "@@global.", "@@", "@x", "@", "x", "sql_mode", "=", ":=", "'a'",
    "1", "-", ",", "DEFAULT", "NAMES", "utf8mb4", "COLLATE", "CHARACTER", "CHARSET", "TRANSACTION", "ISOLATION",
    "LEVEL", "READ", "COMMITTED", "ONLY", "USE", "db", "LOCK", "TABLES", "TABLE", "UNLOCK", "GET_LOCK(", "(", ")",
    "CREATE", "TEMPORARY", "PREPARE", "EXECUTE", "DEALLOCATE", "DROP", "SQL_CALC_FOUND_ROWS", "FOUND_ROWS()",
    "LAST_INSERT_ID()", "HANDLER", "XA", "START", "KILL", "QUERY", "LOAD", "DATA", "LOCAL", "INFILE", "SELECT",
    "INTO", "FROM", "t", ";", "/*", "*/", "/*!", "--", "-- ", "#", "\n", "`", '"', "'", "BEGIN", "NOT", "ATOMIC",
    "END", "IF", "STATEMENT", "FOR", "FLUSH", "BACKUP", "ROLE", "RESOURCE", "PROCEDURE", "lbl:", "\\",
])


@settings(max_examples=1500, deadline=None)
@given(st.lists(FRAGMENTS, max_size=16), st.sampled_from([" ", "", "\n"]))
def test_pre_filter_is_conservative_on_sql_like_text(pieces: list[str], glue: str) -> None:
    sql = glue.join(pieces)
    if analyze(sql) != EMPTY:
        assert might_change_session(sql.encode()), sql


def test_pre_filter_sees_begin_not_with_or_without_atomic() -> None:
    """Found by the property above: the analyzer takes `BEGIN NOT` for a compound statement, ATOMIC or not."""
    for sql in ("BEGIN NOT", "begin not atomic select 1; end", "BEGIN\nNOT ATOMIC"):
        assert analyze(sql) != EMPTY and might_change_session(sql.encode()), sql


def _per_call_us(function: object, sql: object, number: int) -> float:
    assert callable(function)
    return min(timeit.repeat(lambda: function(sql), number=number, repeat=3)) / number * 1e6


def test_timing_sanity(capsys: pytest.CaptureFixture[str]) -> None:
    """Not an assertion: prints µs per call for the hot path, for the record."""
    point = "SELECT c FROM sbtest1 WHERE id = 5023"
    stateful = "SET SESSION sql_mode = 'ANSI', time_zone = '+00:00'"
    session_effects(stateful)
    lines = [
        f"might_change_session(point select bytes): {_per_call_us(might_change_session, point.encode(), 50000):.2f} us",
        f"session_effects(point select), pre-filter only: {_per_call_us(session_effects, point, 50000):.2f} us",
        f"session_effects(SET ...), cached: {_per_call_us(session_effects, stateful, 50000):.2f} us",
        f"analyze(SET ...), uncached but lexer-cached: {_per_call_us(analyze, stateful, 5000):.2f} us",
    ]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
