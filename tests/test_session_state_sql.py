"""SQL-level session state for transaction pooling: SETs to replay, pins, DISCARD ALL, and the cheap check."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.engines.postgres.session_state import (
    EMPTY,
    SessionEffects,
    SetCommand,
    analyze,
    cache_info,
    might_change_session,
    quote_literal,
    session_effects,
)


def sets(*pairs: tuple[str, str | None]) -> SessionEffects:
    return SessionEffects(sets=tuple(SetCommand(name, value) for name, value in pairs))


def pin(reason: str) -> SessionEffects:
    return SessionEffects(pin_reason=reason)


CASES: list[tuple[str, SessionEffects]] = [
    # --- SET / RESET that are tracked and replayed -------------------------------------------------
    ("SET statement_timeout = '5s'", sets(("statement_timeout", "'5s'"))),
    ("SET statement_timeout TO 5000", sets(("statement_timeout", "5000"))),
    ("set application_name = 'x'", sets(("application_name", "'x'"))),
    ("SET application_name = 'it''s'", sets(("application_name", "'it''s'"))),
    ("SET application_name = E'a\\\\b'", sets(("application_name", "E'a\\\\b'"))),
    ("SET TIME ZONE 'UTC'", sets(("timezone", "'UTC'"))),
    ("SET TIME ZONE 5", sets(("timezone", "5"))),
    ("SET TIME ZONE LOCAL", sets(("timezone", None))),
    ("SET SESSION search_path = public", sets(("search_path", "public"))),
    ('SET search_path TO "My Schema", public', sets(("search_path", '"My Schema", public'))),
    ("SET search_path TO 'My Schema', 'public'", sets(("search_path", '"My Schema", public'))),
    ('SET search_path TO "$user", public', sets(("search_path", '"$user", public'))),
    ('SET search_path TO "user"', sets(("search_path", '"user"'))),
    ("SET search_path TO ''", sets(("search_path", "''"))),
    ("SET SCHEMA 'app'", sets(("search_path", "app"))),
    ("SET NAMES 'UTF8'", sets(("client_encoding", "'UTF8'"))),
    ("SET XML OPTION DOCUMENT", sets(("xmloption", "'DOCUMENT'"))),
    ("SET enable_seqscan = off", sets(("enable_seqscan", "'off'"))),
    ("SET extra_float_digits = -1", sets(("extra_float_digits", "-1"))),
    ("SET geqo_selection_bias = 1.5", sets(("geqo_selection_bias", "1.5"))),
    ("SET app.tenant_id = '42'", sets(("app.tenant_id", "'42'"))),
    ("SET \"Application_Name\" TO 'x'", sets(("application_name", "'x'"))),
    ("SET work_mem TO DEFAULT", sets(("work_mem", None))),
    ("RESET statement_timeout", sets(("statement_timeout", None))),
    ("RESET ALL", sets(("all", None))),
    ("/* comment */ SET x.y = 1", sets(("x.y", "1"))),
    ("-- comment\nSET x.y = 1", sets(("x.y", "1"))),
    ("/* a /* nested */ comment */ SET x.y = 1", sets(("x.y", "1"))),
    ("   \n\tSET x.y = 1;", sets(("x.y", "1"))),
    ("SELECT 1; SET x.y = 2", sets(("x.y", "2"))),
    ("SET a.b = 1; SET c.d = 2; RESET a.b", sets(("a.b", "1"), ("c.d", "2"), ("a.b", None))),
    (
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY",
        sets(("default_transaction_isolation", "'serializable'"), ("default_transaction_read_only", "on")),
    ),
    ("SELECT set_config('app.user', '42', false)", sets(("app.user", "'42'"))),
    ("SELECT pg_catalog.set_config('statement_timeout', '1s', 'f')", sets(("statement_timeout", "'1s'"))),
    # --- DISCARD ALL -------------------------------------------------------------------------------
    ("DISCARD ALL", SessionEffects(discard_all=True)),
    (
        "SET a.b = 1; DISCARD ALL; SET c.d = 2",
        SessionEffects(sets=(SetCommand("c.d", "2"),), discard_all=True),
    ),
    # --- pins --------------------------------------------------------------------------------------
    ("CREATE TEMP TABLE t (a int)", pin("temp table")),
    ("create temporary table t (a int)", pin("temp table")),
    ("CREATE GLOBAL TEMPORARY TABLE t (a int)", pin("temp table")),
    ("CREATE TABLE pg_temp.t (a int)", pin("temp table")),
    ("CREATE TEMP TABLE t AS SELECT 1", pin("temp table")),
    ("CREATE TEMP SEQUENCE s", pin("temp table")),
    ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", pin("temp table")),
    ("SELECT 1 AS a INTO TEMP t", pin("temp table")),
    ("SELECT 1 AS a INTO TEMPORARY TABLE t", pin("temp table")),
    ("EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1", pin("temp table")),
    ("SELECT pg_advisory_lock(1)", pin("advisory lock")),
    ("SELECT pg_try_advisory_lock(1, 2)", pin("advisory lock")),
    ("SELECT pg_advisory_lock_shared(1)", pin("advisory lock")),
    ("select pg_catalog.pg_try_advisory_lock_shared(1)", pin("advisory lock")),
    ("SELECT * FROM jobs WHERE pg_try_advisory_lock(id) LIMIT 1", pin("advisory lock")),
    ("LISTEN jobs", pin("listen")),
    ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", pin("with hold cursor")),
    ("PREPARE q (int) AS SELECT $1", pin("sql prepare")),
    ("SET ROLE admin", pin("set role")),
    ("SET SESSION AUTHORIZATION alice", pin("set role")),
    ("SELECT set_config('role', 'admin', false)", pin("set role")),
    ("LOAD 'auto_explain'", pin("load")),
    ("SET TIME ZONE INTERVAL '+02:00' HOUR TO MINUTE", pin("set time zone interval")),
    ("SELECT set_config('app.user', $1, false)", SessionEffects(reread=("app.user",))),
    ("SELECT set_config('JIT', current_setting('x.y'), 'off')", SessionEffects(reread=("jit",))),
    ("SELECT set_config($1, 'on', false)", pin("set_config")),
    ("SELECT set_config('app.user', '42', $1)", pin("set_config")),
    ("SELECT set_config('search_path', '', false)", pin("set_config")),
    ("SET x.y = ", pin("unparsable")),
    ("CREATE TABLE pg_temp_3.t (a int)", pin("temp table")),
    ("DO $$ BEGIN SET search_path = a; END $$", pin("do block")),
    ("DO $$ BEGIN CREATE TEMP TABLE t (a int); END $$", pin("do block")),
    ("do language plpgsql 'begin perform pg_advisory_lock(1); end'", pin("do block")),
    # conservative: the DO body is only searched for words, so an UPDATE ... SET pins too
    ("DO $$ BEGIN UPDATE t SET a = 1; END $$", pin("do block")),
    (
        "SET search_path = a; CREATE TEMP TABLE t (a int); LISTEN c",
        SessionEffects(sets=(SetCommand("search_path", "a"),), pin_reason="temp table"),
    ),
    # --- nothing to track --------------------------------------------------------------------------
    ("SELECT 'SET x = 1'", EMPTY),
    ("SELECT 1 -- SET x = 1", EMPTY),
    ("SELECT 1 /* ; SET x = 1 */", EMPTY),
    ("SET LOCAL statement_timeout = '1s'", EMPTY),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", EMPTY),
    ("SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", EMPTY),
    ("SET transaction_read_only = on", EMPTY),
    ("SET CONSTRAINTS ALL DEFERRED", EMPTY),
    ("SET work_mem FROM CURRENT", EMPTY),
    ("SET ROLE NONE", EMPTY),
    ("RESET ROLE", EMPTY),
    ("SET SESSION AUTHORIZATION DEFAULT", EMPTY),
    ("SELECT set_config('app.user', '42', true)", EMPTY),
    ("SELECT pg_advisory_xact_lock(1)", EMPTY),
    ("SELECT pg_try_advisory_xact_lock(1)", EMPTY),
    ("SELECT pg_advisory_unlock(1)", EMPTY),
    ("SELECT myschema.pg_advisory_lock(1)", EMPTY),
    ("UPDATE accounts SET balance = 0", EMPTY),
    ("UPDATE accounts\nSET balance = 0", EMPTY),
    ("INSERT INTO settings (k) VALUES ('set')", EMPTY),
    ("SELECT temp FROM weather", EMPTY),
    ("SELECT * FROM temperatures", EMPTY),
    ("SELECT * FROM pg_temp.t", EMPTY),
    ("CREATE UNLOGGED TABLE t (a int)", EMPTY),
    ("DECLARE c CURSOR FOR SELECT 1", EMPTY),
    ("DECLARE c SCROLL CURSOR WITHOUT HOLD FOR SELECT 1", EMPTY),
    ("PREPARE TRANSACTION 'x'", EMPTY),
    ("UNLISTEN *", EMPTY),
    ("DISCARD PLANS", EMPTY),
    ("DISCARD TEMP", EMPTY),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = a AS 'SELECT 1'", EMPTY),
    ("ALTER ROLE bob SET search_path = a", EMPTY),
    ("DO $$ BEGIN INSERT INTO log VALUES (1); END $$", EMPTY),
    ("SELECT dose FROM t", EMPTY),
    ("SELECT abalance FROM pgbench_accounts WHERE aid = 1", EMPTY),
    ("BEGIN", EMPTY),
    ("", EMPTY),
    ("DROP DATABASE scratch", SessionEffects(database_gone="scratch")),
    ('drop database if exists "Odd Name" with (force)', SessionEffects(database_gone="Odd Name")),
    ("ALTER DATABASE scratch RENAME TO scratch2", SessionEffects(database_gone="scratch")),
    ("ALTER DATABASE scratch SET work_mem = '1MB'", EMPTY),
    ("DROP TABLE t", EMPTY),
]


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({sql for sql, _ in CASES}) == len(CASES), "duplicate SQL in the table"


@pytest.mark.parametrize(("sql", "expected"), CASES, ids=[repr(c[0])[:60] for c in CASES])
def test_session_effects(sql: str, expected: SessionEffects) -> None:
    assert session_effects(sql) == expected


@pytest.mark.parametrize(("sql", "expected"), CASES, ids=[repr(c[0])[:60] for c in CASES])
def test_cheap_check_never_hides_effects(sql: str, expected: SessionEffects) -> None:
    if expected != EMPTY:
        assert might_change_session(sql)
    assert analyze(sql) == expected


def test_ordinary_statements_share_the_empty_instance() -> None:
    assert session_effects("SELECT abalance FROM pgbench_accounts WHERE aid = 1") is EMPTY
    assert session_effects("SET LOCAL work_mem = '1MB'") is EMPTY
    assert not might_change_session("SELECT abalance FROM pgbench_accounts WHERE aid = 1")
    assert not might_change_session("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 1")


def test_cache_serves_repeated_stateful_texts() -> None:
    sql = "SET application_name = 'cache-test'"
    before = cache_info()
    first = session_effects(sql)
    second = session_effects(sql)
    after = cache_info()
    assert first is second
    assert after.hits >= before.hits + 1
    assert after.maxsize is not None and after.currsize <= after.maxsize


@pytest.mark.parametrize(
    ("command", "sql"),
    [
        (SetCommand("statement_timeout", "'5s'"), "SET statement_timeout TO '5s'"),
        (SetCommand("search_path", '"My Schema", public'), 'SET search_path TO "My Schema", public'),
        (SetCommand("app.select", "1"), 'SET app."select" TO 1'),
        (SetCommand("timezone", None), "RESET timezone"),
        (SetCommand("all", None), "RESET ALL"),
    ],
)
def test_set_command_sql(command: SetCommand, sql: str) -> None:
    assert command.to_sql() == sql


@pytest.mark.parametrize(
    "sql",
    [
        'SET search_path TO "My Schema", public',
        "SET statement_timeout = '5s'",
        "SET application_name = 'it''s'",
        "SET application_name = E'a\\\\b\\'c'",
        "SET TIME ZONE 'Europe/Paris'",
        'SET search_path TO "$user", "select", Public',
        "SET app.select_1 = 'x'",
    ],
)
def test_replayed_set_reparses_to_the_same_effect(sql: str) -> None:
    (command,) = analyze(sql).sets
    assert analyze(command.to_sql()).sets == (command,)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_quote_literal_round_trips(value: str) -> None:
    if "\x00" in value:
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return
    (command,) = analyze(f"SET app.v TO {quote_literal(value)}").sets
    assert command.value == quote_literal(value)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_never_raises_on_arbitrary_text(sql: str) -> None:
    assert isinstance(session_effects(sql), SessionEffects)


def _per_call_us(function: object, sql: str, calls: int) -> float:
    assert callable(function)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(calls):
            function(sql)
        best = min(best, time.perf_counter() - start)
    return best / calls * 1e6


def test_timing_sanity(capsys: pytest.CaptureFixture[str]) -> None:
    """Not an assertion: prints µs per call for the hot path, for the record."""
    pgbench = "SELECT abalance FROM pgbench_accounts WHERE aid = 1"
    stateful = "SET application_name = 'timing'"
    session_effects(stateful)
    lines = [
        f"session_effects(pgbench SELECT), cheap check (never parsed or cached): "
        f"{_per_call_us(session_effects, pgbench, 20000):.2f} us",
        f"analyze(pgbench SELECT), what a parse would cost instead: {_per_call_us(analyze, pgbench, 2000):.2f} us",
        f"session_effects(SET ...), cached: {_per_call_us(session_effects, stateful, 20000):.2f} us",
        f"session_effects(SET ...), uncached (analyze): {_per_call_us(analyze, stateful, 2000):.2f} us",
    ]
    with capsys.disabled():
        print("\n" + "\n".join(lines))


@pytest.mark.parametrize("sql", [
    "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
    "SELECT 1;;",
    "select 1",
    "SELECT PG_Advisory_Lock(1)",
    "SELECT pg_catalog.SET_CONFIG('a.b', 'c', false)",
    "SELECT * INTO TEMP t FROM x",
    "SELECT 1; SET search_path = x",
    "SELECT 'temp'",
])
def test_the_sessions_bytes_shortcut_never_hides_an_effect(sql: str) -> None:
    from proxy.engines.postgres.plain_select import plain_select as _plain_select

    if _plain_select(sql.encode()):
        assert session_effects(sql) == SessionEffects()


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="selctSELCT ;_-'()*,.0123456789abdfghijkmnopqruvwxyzADVISORYTEMPGONFI", max_size=60))
def test_the_sessions_bytes_shortcut_never_hides_an_effect_on_any_text(tail: str) -> None:
    from proxy.engines.postgres.plain_select import plain_select as _plain_select

    sql = "SELECT " + tail
    if _plain_select(sql.encode()):
        assert session_effects(sql) == SessionEffects()


def test_statements_that_differ_in_a_trailing_number_share_the_shortcuts_verdict() -> None:
    from proxy.engines.postgres.plain_select import PLAIN_STEMS as _PLAIN_STEMS
    from proxy.engines.postgres.plain_select import plain_select as _plain_select

    _PLAIN_STEMS.clear()
    assert _plain_select(b"SELECT abalance FROM pgbench_accounts WHERE aid = 17;")
    assert _plain_select(b"SELECT abalance FROM pgbench_accounts WHERE aid = 90210")
    assert len(_PLAIN_STEMS) == 1                     # one verdict for both
    assert not _plain_select(b"SELECT abalance FROM pgbench_accounts WHERE aid = 17; SET search_path = x")
    assert not _plain_select(b"SELECT pg_advisory_lock(17)")
    assert not _plain_select(b"SELECT * INTO TEMP t1 FROM x")


def test_long_statements_are_checked_but_not_remembered() -> None:
    from proxy.engines.postgres.plain_select import PLAIN_STEMS as _PLAIN_STEMS
    from proxy.engines.postgres.plain_select import plain_select as _plain_select

    _PLAIN_STEMS.clear()
    assert _plain_select(b"SELECT '" + b"x" * 1000 + b"'")
    assert not _plain_select(b"SELECT '" + b"x" * 1000 + b"'; SET search_path = x")
    assert not _PLAIN_STEMS
