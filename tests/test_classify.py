"""Split-endpoint classification: a table of SQL → expected route (and reason), cache, fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pglast import parser

from proxy.engines.postgres.classify import (
    MAX_CACHED_SQL_LENGTH,
    ReadOnlyFunctions,
    classify_sql,
    classify_tree,
)
from proxy.engines.postgres.classify import (
    PgClassifier as Classifier,
)
from proxy.routing.classify import Classification, Route

R = Route.REPLICA
P = Route.PRIMARY
CONFIG_FUNCTIONS = ("report_total", "analytics.safe_sum", "MixedCase")

# (sql, route, reason or None when any reason will do)
CASES: list[tuple[str, Route, str | None]] = [
    # --- plain reads -------------------------------------------------------------------------------
    ("SELECT 1", R, "select"),
    ("select 1", R, "select"),
    ("select 1;", R, "select"),
    ("  select 1 ;;  \n\t", R, "select"),
    ("SeLeCt 1", R, "select"),
    ("SELECT abalance FROM pgbench_accounts WHERE aid = 1", R, "select"),
    ("SELECT * FROM t WHERE a = $1 AND b = $2", R, "select"),
    ("SELECT count(*) FROM t", R, "select"),
    ("SELECT sum(a), avg(a), min(a), max(a) FROM t GROUP BY b HAVING count(*) > 1", R, "select"),
    ("SELECT now(), current_timestamp, current_date, localtimestamp", R, "select"),
    ("SELECT coalesce(a, 0), nullif(a, 1), greatest(a, b), least(a, b) FROM t", R, "select"),
    ("SELECT lower(a), upper(a), length(a), substr(a, 1, 2), abs(-1), round(1.5) FROM t", R, "select"),
    ("SELECT random(), pg_sleep(0)", R, "select"),
    ("SELECT * FROM generate_series(1, 10) g", R, "select"),
    ("SELECT array_agg(a ORDER BY a), string_agg(b, ',') FROM t", R, "select"),
    ("SELECT json_build_object('a', 1), jsonb_agg(t), row_to_json(t), to_jsonb(t) FROM t", R, "select"),
    ("SELECT data->>'a', data #> '{b,c}', jsonb_extract_path(data, 'x') FROM t", R, "select"),
    ("SELECT date_trunc('day', ts), extract(year FROM ts), to_char(ts, 'YYYY') FROM t", R, "select"),
    ("SELECT md5(a), pg_is_in_recovery(), version(), current_setting('search_path')", R, "select"),
    ("SELECT pg_last_wal_replay_lsn(), pg_last_xact_replay_timestamp()", R, "select"),
    ("SELECT pg_catalog.count(*) FROM t", R, "select"),
    ("SELECT pg_catalog.lower('A')", R, "select"),
    (
        "SELECT position('a' IN 'abc'), overlay('abc' PLACING 'x' FROM 1), trim(both ' ' FROM a) FROM t",
        R,
        "select",
    ),
    (
        "SELECT substring(a FROM 1 FOR 2), now() AT TIME ZONE 'UTC', a::int, CAST(b AS text) FROM t",
        R,
        "select",
    ),
    (
        "SELECT row_number() OVER (PARTITION BY a ORDER BY b), lag(a) OVER w FROM t WINDOW w AS ()",
        R,
        "select",
    ),
    ("SELECT count(*) FILTER (WHERE a > 1) FROM t", R, "select"),
    ("SELECT EXISTS (SELECT 1 FROM u WHERE u.id = t.id) FROM t", R, "select"),
    (
        "SELECT * FROM t JOIN u USING (id) LEFT JOIN v ON v.id = t.id ORDER BY 1 LIMIT 10 OFFSET 5",
        R,
        "select",
    ),
    ("SELECT a FROM t UNION SELECT b FROM u INTERSECT SELECT c FROM v", R, "select"),
    ("SELECT * FROM t TABLESAMPLE system (10)", R, "select"),
    ("SELECT * FROM t, LATERAL (SELECT * FROM u WHERE u.id = t.id) s", R, "select"),
    ("WITH x AS (SELECT 1 AS a) SELECT * FROM x", R, "select"),
    (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT * FROM r",
        R,
        "select",
    ),
    ("WITH x AS MATERIALIZED (SELECT * FROM t) SELECT count(*) FROM x", R, "select"),
    ("SELECT * FROM pg_stat_activity", R, "select"),
    ("SELECT 'INSERT INTO t VALUES (1)' AS looks_like_a_write", R, "select"),
    ("SELECT 'for update' AS s", R, "select"),
    ('SELECT "for", "into", "update" FROM t', R, "select"),
    ("SELECT $$ DELETE FROM t $$", R, "select"),
    ("TABLE t", R, "select"),
    ("VALUES (1), (2)", R, "select"),
    ("VALUES (1)", R, "select"),
    ("SHOW search_path", R, "show"),
    ("SHOW ALL", R, "show"),
    ("SELECT 1; SELECT 2", R, "select"),
    ("SELECT 1; SHOW work_mem; VALUES (3)", R, "select"),
    ("/* leading comment */ SELECT 1", R, "select"),
    ("SELECT 1 -- trailing comment", R, "select"),
    ("SELECT /* inline /* nested */ comment */ 1", R, "select"),
    # --- EXPLAIN ---------------------------------------------------------------------------------
    ("EXPLAIN SELECT * FROM t", R, "explain"),
    ("EXPLAIN (COSTS OFF) SELECT * FROM t", R, "explain"),
    ("EXPLAIN DELETE FROM t", R, "explain"),
    ("EXPLAIN (ANALYZE false) DELETE FROM t", R, "explain"),
    ("EXPLAIN (ANALYZE off) UPDATE t SET a = 1", R, "explain"),
    ("EXPLAIN ANALYZE SELECT * FROM t", R, "explain analyze"),
    ("EXPLAIN (ANALYZE, BUFFERS) SELECT count(*) FROM t", R, "explain analyze"),
    ("EXPLAIN ANALYZE DELETE FROM t", P, "explain analyze dml"),
    ("EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1", P, "explain analyze dml"),
    ("EXPLAIN (ANALYZE true) INSERT INTO t VALUES (1)", P, "explain analyze dml"),
    ("EXPLAIN ANALYZE VERBOSE DELETE FROM t", P, "explain analyze dml"),
    ("EXPLAIN ANALYZE SELECT nextval('s')", P, "explain analyze volatile function nextval"),
    ("EXPLAIN ANALYZE SELECT * FROM t FOR UPDATE", P, "explain analyze for update"),
    ("EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1", P, "explain analyze create table as"),
    ("EXPLAIN EXECUTE p(1)", P, "explain execute"),
    # --- writes ------------------------------------------------------------------------------------
    ("INSERT INTO t VALUES (1)", P, "dml"),
    ("insert into t select * from u", P, "dml"),
    ("UPDATE t SET a = 1 WHERE id = 2", P, "dml"),
    ("DELETE FROM t WHERE id = 1 RETURNING *", P, "dml"),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", P, "dml"),
    ("INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = excluded.a", P, "dml"),
    ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", P, "dml in cte"),
    ("WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT count(*) FROM x", P, "dml in cte"),
    ("WITH x AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM x", P, "dml in cte"),
    ("WITH a AS (SELECT 1), b AS (DELETE FROM t) SELECT * FROM a", P, "dml in cte"),
    ("WITH x AS (SELECT * FROM t) DELETE FROM u WHERE id IN (SELECT id FROM x)", P, "dml"),
    ("SELECT * INTO newtable FROM t", P, "select into"),
    ("SELECT 1 AS a INTO TEMP x", P, "select into"),
    ("CREATE TABLE x AS SELECT * FROM t", P, "create table as"),
    ("CREATE MATERIALIZED VIEW m AS SELECT 1", P, "create table as"),
    ("REFRESH MATERIALIZED VIEW m", P, "ddl"),
    ("CREATE TABLE t (a int)", P, "ddl"),
    ("ALTER TABLE t ADD COLUMN b int", P, "ddl"),
    ("DROP TABLE t", P, "ddl"),
    ("CREATE INDEX ON t (a)", P, "ddl"),
    ("TRUNCATE t", P, "ddl"),
    ("GRANT SELECT ON t TO u", P, "ddl"),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", P, "ddl"),
    ("COMMENT ON TABLE t IS 'x'", P, "ddl"),
    ("COPY t FROM STDIN", P, "copy"),
    ("COPY t TO STDOUT", P, "copy"),
    ("COPY (SELECT * FROM t) TO STDOUT WITH (FORMAT csv)", P, "copy"),
    ("LOCK t", P, "lock"),
    ("LOCK TABLE t IN ACCESS SHARE MODE", P, "lock"),
    ("CALL p(1)", P, "call"),
    ("DO $$ BEGIN PERFORM 1; END $$", P, "do"),
    ("VACUUM t", P, "vacuum"),
    ("VACUUM (ANALYZE) t", P, "vacuum"),
    ("ANALYZE t", P, "analyze"),
    ("CHECKPOINT", P, "checkpoint"),
    ("LISTEN ch", P, "listen"),
    ("UNLISTEN *", P, "unlisten"),
    ("NOTIFY ch, 'x'", P, "notify"),
    ("PREPARE p AS SELECT 1", P, "prepare"),
    ("EXECUTE p", P, "execute"),
    ("DEALLOCATE p", P, "deallocate"),
    ("DECLARE c CURSOR FOR SELECT * FROM t", P, "declare cursor"),
    ("FETCH 10 FROM c", P, "fetch"),
    ("CLOSE c", P, "close cursor"),
    ("DISCARD ALL", P, "discard"),
    ("LOAD 'auto_explain'", P, "load"),
    ("SET statement_timeout = '5s'", P, "set"),
    ("SET LOCAL work_mem = '64MB'", P, "set"),
    ("RESET ALL", P, "set"),
    ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", P, "set"),
    ("SET CONSTRAINTS ALL DEFERRED", P, "set constraints"),
    # --- row locks ---------------------------------------------------------------------------------
    ("SELECT * FROM t FOR UPDATE", P, "for update"),
    ("select * from t where id = 1 for update nowait", P, "for update"),
    ("SELECT * FROM t FOR UPDATE SKIP LOCKED", P, "for update"),
    ("SELECT * FROM t FOR NO KEY UPDATE", P, "for no key update"),
    ("SELECT * FROM t FOR SHARE", P, "for share"),
    ("SELECT * FROM t FOR KEY SHARE", P, "for key share"),
    ("SELECT * FROM t JOIN u USING (id) FOR UPDATE OF t", P, "for update"),
    ("SELECT * FROM (SELECT * FROM t FOR SHARE) s", P, "for share"),
    ("SELECT * FROM t WHERE id IN (SELECT id FROM u FOR UPDATE)", P, "for update"),
    ("WITH x AS (SELECT * FROM t FOR UPDATE) SELECT * FROM x", P, "for update"),
    ("SELECT a FROM t UNION SELECT b FROM u FOR UPDATE", P, "for update"),
    ("SELECT EXISTS (SELECT 1 FROM t FOR KEY SHARE)", P, "for key share"),
    # --- functions ---------------------------------------------------------------------------------
    ("SELECT nextval('s')", P, "volatile function nextval"),
    ("SELECT pg_catalog.nextval('s')", P, "volatile function nextval"),
    ("SELECT setval('s', 1)", P, "volatile function setval"),
    ("SELECT currval('s')", P, "volatile function currval"),
    ("SELECT lastval()", P, "volatile function lastval"),
    ("SELECT id, nextval('s') FROM t", P, "volatile function nextval"),
    ("SELECT * FROM t WHERE id = (SELECT nextval('s'))", P, "volatile function nextval"),
    ("SELECT pg_advisory_lock(1)", P, "volatile function pg_advisory_lock"),
    ("SELECT pg_try_advisory_xact_lock(1)", P, "volatile function pg_try_advisory_xact_lock"),
    ("SELECT pg_advisory_unlock_all()", P, "volatile function pg_advisory_unlock_all"),
    ("SELECT pg_notify('ch', 'x')", P, "volatile function pg_notify"),
    ("SELECT set_config('app.user', '42', false)", P, "volatile function set_config"),
    ("SELECT txid_current()", P, "volatile function txid_current"),
    ("SELECT pg_current_xact_id()", P, "volatile function pg_current_xact_id"),
    ("SELECT pg_current_wal_lsn()", P, "volatile function pg_current_wal_lsn"),
    ("SELECT lo_create(0)", P, "volatile function lo_create"),
    ("SELECT lo_unlink(42)", P, "volatile function lo_unlink"),
    ("SELECT lowrite(0, 'x')", P, "volatile function lowrite"),
    ("SELECT pg_terminate_backend(123)", P, "volatile function pg_terminate_backend"),
    ("SELECT pg_cancel_backend(123)", P, "volatile function pg_cancel_backend"),
    ("SELECT pg_reload_conf()", P, "volatile function pg_reload_conf"),
    ("SELECT pg_promote()", P, "volatile function pg_promote"),
    ("SELECT pg_switch_wal()", P, "volatile function pg_switch_wal"),
    (
        "SELECT pg_create_physical_replication_slot('s')",
        P,
        "volatile function pg_create_physical_replication_slot",
    ),
    ("SELECT * FROM dblink('conn', 'DELETE FROM t') AS x(a int)", P, "volatile function dblink"),
    ("SELECT query_to_xml('DELETE FROM t RETURNING 1', true, false, '')", P, None),
    ("SELECT my_function(1)", P, "unknown function my_function"),
    ("SELECT * FROM my_set_returning_function()", P, "unknown function my_set_returning_function"),
    ("SELECT myschema.f(1)", P, "unknown function myschema.f"),
    ("SELECT myschema.count(*) FROM t", P, "unknown function myschema.count"),
    ("SELECT a FROM t WHERE b = my_function(a)", P, "unknown function my_function"),
    (
        "SELECT count(*) FROM t WHERE a = ANY (SELECT my_function(b) FROM u)",
        P,
        "unknown function my_function",
    ),
    ('SELECT "Weird ""Name"""()', P, 'unknown function Weird "Name"'),
    # read_only_functions from config
    ("SELECT report_total(1)", R, "select"),
    ("SELECT public.report_total(1)", R, "select"),
    ("SELECT analytics.safe_sum(a) FROM t", R, "select"),
    ("SELECT safe_sum(a) FROM t", P, "unknown function safe_sum"),
    ("SELECT other.safe_sum(a) FROM t", P, "unknown function other.safe_sum"),
    ('SELECT "MixedCase"()', R, "select"),
    ("SELECT mixedcase()", R, "select"),
    # --- transactions ------------------------------------------------------------------------------
    ("BEGIN", P, "begin"),
    ("begin;", P, "begin"),
    ("BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ", P, "begin"),
    ("START TRANSACTION", P, "begin"),
    ("START TRANSACTION READ WRITE", P, "begin"),
    ("BEGIN READ ONLY", R, "begin read only"),
    ("begin read only;", R, "begin read only"),
    ("START TRANSACTION READ ONLY", R, "begin read only"),
    ("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", R, "begin read only"),
    ("BEGIN READ ONLY ISOLATION LEVEL READ COMMITTED", R, "begin read only"),
    # a hot standby refuses SERIALIZABLE ("cannot use serializable mode in a hot standby")
    ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY", P, "begin serializable"),
    ("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE", P, "begin serializable"),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY", P, "set transaction serializable"),
    ("BEGIN TRANSACTION READ ONLY, READ WRITE", P, "begin"),
    ("SET TRANSACTION READ ONLY", R, "set transaction read only"),
    ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", P, "set transaction"),
    ("COMMIT", R, "commit"),
    ("END", R, "commit"),
    ("ROLLBACK", R, "rollback"),
    ("ABORT", R, "rollback"),
    ("COMMIT AND CHAIN", R, "commit and chain"),
    ("SAVEPOINT a", R, "savepoint"),
    ("RELEASE SAVEPOINT a", R, "release savepoint"),
    ("ROLLBACK TO SAVEPOINT a", R, "rollback to savepoint"),
    ("PREPARE TRANSACTION 'x'", P, "prepare transaction"),
    ("COMMIT PREPARED 'x'", P, "commit prepared"),
    ("BEGIN READ ONLY; SELECT * FROM t; COMMIT", R, "begin read only"),
    ("BEGIN; SELECT * FROM t; COMMIT", P, "begin"),
    # --- multi-statement mixes ---------------------------------------------------------------------
    ("SELECT 1; INSERT INTO t VALUES (1)", P, "dml"),
    ("INSERT INTO t VALUES (1); SELECT 1", P, "dml"),
    ("SELECT 1; SELECT nextval('s')", P, "volatile function nextval"),
    ("SELECT 1; SET x.y = 1", P, "set"),
    ("SELECT 1; COMMIT", R, "select"),
    ("SELECT 'a;b'; SELECT 2", R, "select"),
    # --- hints -------------------------------------------------------------------------------------
    ("/* dbproxy:route=primary */ SELECT 1", P, "hint"),
    ("SELECT 1 /* dbproxy:route=primary */", P, "hint"),
    ("SELECT 1 -- dbproxy:route=primary", P, "hint"),
    ("/* DBPROXY:ROUTE = Primary */ select 1", P, "hint"),
    ("/* dbproxy:route=replica */ SELECT nextval('s')", R, "hint"),
    ("/* dbproxy:route=replica */ DELETE FROM t", R, "hint"),
    ("-- dbproxy:route=replica\nSELECT my_function()", R, "hint"),
    ("/* dbproxy:route=replica */ /* dbproxy:route=primary */ SELECT 1", P, "hint"),
    ("SELECT '/* dbproxy:route=replica */' FROM t FOR UPDATE", P, "for update"),
    ("SELECT 'dbproxy:route=primary'", R, "select"),
    ('SELECT 1 AS "dbproxy:route=primary"', R, "select"),
    ("/* dbproxy:route=nowhere */ SELECT 1", R, "select"),
    ("/* dbproxy:route=replica */ SELEC 1", R, "hint"),
    # --- unparsable and odd input ------------------------------------------------------------------
    ("SELEC 1", P, "unparsable"),
    ("SELECT FROM WHERE", P, "unparsable"),
    ("SELECT 'unterminated", P, "unparsable"),
    ("SELECT 1 /* unterminated", P, "unparsable"),
    ("SELECT 1\x00; DELETE FROM t", P, "unparsable"),
    ("DELETE", P, "unparsable"),
    ("", R, "empty"),
    ("   ", R, "empty"),
    (";", R, "empty"),
    ("-- only a comment", R, "empty"),
]


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier(read_only_functions=CONFIG_FUNCTIONS)


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 100
    assert len({sql for sql, _, _ in CASES}) == len(CASES), "duplicate SQL in the table"


@pytest.mark.parametrize(("sql", "route", "reason"), CASES, ids=[repr(c[0])[:60] for c in CASES])
def test_classification(classifier: Classifier, sql: str, route: Route, reason: str | None) -> None:
    result = classifier.classify(sql)
    assert result.route is route, result
    if reason is not None:
        assert result.reason == reason


@pytest.mark.parametrize(("sql", "route", "reason"), CASES, ids=[repr(c[0])[:60] for c in CASES])
def test_fast_path_agrees_with_full_walk(sql: str, route: Route, reason: str | None) -> None:
    functions = ReadOnlyFunctions(CONFIG_FUNCTIONS)
    try:
        tree = parser.parse_sql_json(sql)
    except (parser.ParseError, ValueError):
        return
    assert classify_tree(tree, sql, functions, fast=True) == classify_tree(tree, sql, functions, fast=False)


FLAG_CASES: list[tuple[str, dict[str, bool]]] = [
    ("BEGIN", {"begins_transaction": True}),
    ("BEGIN READ ONLY", {"begins_transaction": True, "begins_read_only": True}),
    (
        "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        {"begins_transaction": True, "begins_read_only": True},
    ),
    ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY", {"begins_transaction": True}),
    ("SET TRANSACTION READ ONLY", {"begins_read_only": True}),
    ("COMMIT", {"ends_transaction": True, "neutral": True}),
    ("END", {"ends_transaction": True, "neutral": True}),
    ("ROLLBACK", {"ends_transaction": True, "neutral": True}),
    ("ABORT", {"ends_transaction": True, "neutral": True}),
    ("ROLLBACK TO SAVEPOINT a", {"neutral": True}),
    ("SAVEPOINT a", {"neutral": True}),
    ("RELEASE a", {"neutral": True}),
    ("", {"neutral": True}),
    ("PREPARE TRANSACTION 'x'", {"ends_transaction": True}),
    ("SELECT 1", {}),
    (
        "BEGIN READ ONLY; SELECT 1; COMMIT",
        {"begins_transaction": True, "begins_read_only": True, "ends_transaction": True},
    ),
    ("BEGIN; SET TRANSACTION READ ONLY", {"begins_transaction": True}),
    ("COMMIT; ROLLBACK", {"ends_transaction": True, "neutral": True}),
    ("/* dbproxy:route=replica */ BEGIN", {"begins_transaction": True}),
    ("/* dbproxy:route=primary */ COMMIT", {"ends_transaction": True}),
]


@pytest.mark.parametrize(("sql", "flags"), FLAG_CASES)
def test_transaction_flags(classifier: Classifier, sql: str, flags: dict[str, bool]) -> None:
    result = classifier.classify(sql)
    for name in ("begins_transaction", "begins_read_only", "ends_transaction", "neutral"):
        assert getattr(result, name) is flags.get(name, False), (name, result)


def test_hint_keeps_structural_flags() -> None:
    result = Classifier().classify("/* dbproxy:route=replica */ BEGIN")
    assert result == Classification(Route.REPLICA, "hint", begins_transaction=True)


def test_configured_function_cannot_whitelist_side_effects() -> None:
    classifier = Classifier(read_only_functions=["nextval", "pg_advisory_lock"])
    assert classifier.classify("SELECT nextval('s')").route is P
    assert classifier.classify("SELECT pg_advisory_lock(1)").route is P
    assert classifier.classify("SELECT myschema.nextval('s')").route is R  # not the built-in


def test_cache_counts_hits_and_misses() -> None:
    classifier = Classifier()
    assert (classifier.hits, classifier.misses) == (0, 0)
    first = classifier.classify("SELECT 1")
    assert (classifier.hits, classifier.misses) == (0, 1)
    assert classifier.classify("SELECT 1") is first
    assert (classifier.hits, classifier.misses) == (1, 1)
    classifier.classify("select 1")  # keyed by exact text
    assert (classifier.hits, classifier.misses) == (1, 2)
    assert classifier.cached_entries == 2
    classifier.clear_cache()
    assert (classifier.hits, classifier.misses, classifier.cached_entries) == (0, 0, 0)


def test_caches_are_bounded_and_literals_share_one_verdict() -> None:
    classifier = Classifier(cache_size=3)
    for i in range(10):
        classifier.classify(f"SELECT {i}, 'x{i}'")
    assert (classifier.misses, classifier.hits) == (1, 9)   # one parse for the shape "SELECT ?, ?"
    assert classifier.cached_entries <= 3
    for i in range(10):
        classifier.classify(f"SELECT {i} FROM t{i}")       # t0..t9: ten shapes
    assert classifier.misses == 11
    assert classifier.cached_entries <= 3


@pytest.mark.parametrize(("first", "second"), [
    # The literal regex could pair quotes wrongly in these: they must never share a cache entry.
    ("/* ' */ SELECT 1 /* ' */", "/* ' */ DELETE FROM t /* ' */"),
    ("SELECT E'a\\'; DELETE FROM t; --'", "SELECT E'x'; DELETE FROM t; --'"),
    ('SELECT "it\'s" FROM t', 'SELECT "it\'s" FROM t FOR UPDATE'),
    ("SELECT $$'$$, 1", "SELECT $$'$$, nextval('s')"),
    ("SELECT 1 /* dbproxy:route=primary */", "SELECT 2"),
])
def test_texts_the_literal_shape_could_confuse_are_classified_on_their_own(first: str, second: str) -> None:
    classifier = Classifier()
    expected = Classifier(cache_size=0).classify(second).route
    classifier.classify(first)
    assert classifier.classify(second).route is expected


def test_cache_size_zero_disables_caching() -> None:
    classifier = Classifier(cache_size=0)
    classifier.classify("SELECT 1")
    classifier.classify("SELECT 1")
    assert (classifier.hits, classifier.misses, classifier.cached_entries) == (0, 2, 0)


def test_long_texts_are_not_cached() -> None:
    classifier = Classifier()
    sql = "SELECT " + ", ".join(["1"] * MAX_CACHED_SQL_LENGTH)
    assert classifier.classify(sql).route is R
    assert classifier.classify(sql).route is R
    assert (classifier.hits, classifier.misses, classifier.cached_entries) == (0, 2, 0)


def test_negative_cache_size_is_rejected() -> None:
    with pytest.raises(ValueError):
        Classifier(cache_size=-1)


def test_deeply_nested_query_does_not_crash() -> None:
    sql = "SELECT " + "(SELECT " * 300 + "1" + ")" * 300
    result = classify_sql(sql, ReadOnlyFunctions())
    assert result.route in (R, P)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_classify_never_raises_on_arbitrary_text(sql: str) -> None:
    result = Classifier(cache_size=0).classify(sql)
    assert isinstance(result, Classification)


SQL_FRAGMENTS = st.sampled_from(
    [
        "SELECT",
        "1",
        "FROM",
        "t",
        "WHERE",
        "(",
        ")",
        ";",
        "'",
        '"',
        "/*",
        "*/",
        "--",
        "\n",
        "FOR UPDATE",
        "nextval('s')",
        "WITH",
        "x AS",
        "DELETE",
        "INSERT INTO",
        "VALUES",
        "BEGIN",
        "READ ONLY",
        "COMMIT",
        "dbproxy:route=replica",
        "dbproxy:route=primary",
        "$1",
        "::int",
        ",",
        "EXPLAIN",
        "ANALYZE",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(SQL_FRAGMENTS, max_size=20).map(" ".join))
def test_classify_never_raises_on_sql_like_text(sql: str) -> None:
    result = Classifier(cache_size=0).classify(sql)
    assert isinstance(result, Classification)
    try:
        tree = parser.parse_sql_json(sql)
    except (parser.ParseError, ValueError):
        assert result.route is P or result.reason == "hint"
        return
    functions = ReadOnlyFunctions()
    assert classify_tree(tree, sql, functions, fast=True) == classify_tree(tree, sql, functions, fast=False)


@pytest.mark.parametrize(("sql", "shape"), [
    ("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;", "SELECT abalance FROM pgbench_accounts WHERE aid = ?;"),
    ("SELECT t1.a, 'x''y', 3.5e3, -7 FROM t1", "SELECT t1.a, ?, ?, -? FROM t1"),
    ("SELECT f1(2), f22(x)", "SELECT f1(?), f22(x)"),   # digits inside names are not literals
    ("1", "?"),
    ("SELECT 1 -- c", None),
    ('SELECT "t 1"', None),
    ("SELECT $1", None),
])
def test_literal_shape(sql: str, shape: str | None) -> None:
    from proxy.engines.postgres.classify import literal_shape

    assert literal_shape(sql) == shape


def test_functions_whose_names_differ_only_in_digits_do_not_share_a_verdict() -> None:
    classifier = Classifier(read_only_functions=["f1"])
    assert classifier.classify("SELECT f1(1)").route is Route.REPLICA
    assert classifier.classify("SELECT f2(1)").route is Route.PRIMARY
