"""MySQL split-endpoint classification: a table of SQL → expected route (and reason), flags, cache, fuzzing."""

from __future__ import annotations

import time
import timeit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.engines.mysql.classify import (
    MAX_CACHED_SQL_LENGTH,
    MysqlClassification,
    MysqlClassifier,
    MysqlFunctions,
    classify_sql,
    literal_shape,
)
from proxy.engines.mysql.lexer import lex
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
    ("SELECT c FROM sbtest1 WHERE id = 5023", R, "select"),
    ("SELECT c FROM sbtest1 WHERE id BETWEEN 1 AND 100 ORDER BY c", R, "select"),
    ("SELECT DISTINCT c FROM sbtest1 WHERE id BETWEEN ? AND ? ORDER BY c", R, "select"),
    ("SELECT * FROM t WHERE a = ? AND b = ?", R, "select"),
    ("SELECT count(*), SUM(a), AVG(a), MIN(a), MAX(a) FROM t GROUP BY b HAVING COUNT(*) > 1", R, "select"),
    ("SELECT COALESCE(a, 0), IFNULL(a, 1), NULLIF(a, 1), GREATEST(a, b), LEAST(a, b), IF(a, b, c) FROM t", R, "select"),
    ("SELECT CONCAT(a, b), CONCAT_WS(',', a, b), LOWER(a), UPPER(a), LENGTH(a), SUBSTRING(a, 1, 2) FROM t", R, "select"),
    ("SELECT REPLACE(name, 'a', 'b'), INSERT(name, 1, 2, 'x'), LEFT(a, 2), RIGHT(a, 2) FROM t", R, "select"),
    ("SELECT DATE_FORMAT(ts, '%Y'), DATE_ADD(ts, INTERVAL 1 DAY), EXTRACT(YEAR FROM ts), DATEDIFF(a, b) FROM t", R, "select"),
    ("SELECT CAST(a AS CHAR(10)), CAST(b AS DECIMAL(10, 2)), CONVERT(c, UNSIGNED), CONVERT(d USING utf8mb4) FROM t", R, "select"),
    ("SELECT TRIM(BOTH 'x' FROM a), POSITION('a' IN b), SUBSTRING(a FROM 1 FOR 2) FROM t", R, "select"),
    ("SELECT JSON_EXTRACT(doc, '$.a'), doc->>'$.b', JSON_OBJECT('k', 1), JSON_ARRAYAGG(a) FROM t", R, "select"),
    ("SELECT * FROM JSON_TABLE(doc, '$[*]' COLUMNS (id FOR ORDINALITY, v VARCHAR(10) PATH '$.v')) AS jt", R, "select"),
    ("SELECT GROUP_CONCAT(DISTINCT a ORDER BY a SEPARATOR ',') FROM t", R, "select"),
    ("SELECT ROW_NUMBER() OVER (PARTITION BY a ORDER BY b), LAG(a) OVER w FROM t WINDOW w AS (ORDER BY a)", R, "select"),
    ("SELECT ST_Distance_Sphere(p, POINT(1, 2)), MBRContains(g, p) FROM places", R, "select"),
    ("SELECT MD5(a), SHA2(a, 256), HEX(a), UNHEX('41'), CRC32(a), UUID_TO_BIN(u) FROM t", R, "select"),
    ("SELECT * FROM t WHERE MATCH (a) AGAINST ('x' IN BOOLEAN MODE)", R, "select"),
    ("SELECT * FROM t WHERE a IN (SELECT b FROM u) AND EXISTS (SELECT 1 FROM v WHERE v.id = t.id)", R, "select"),
    ("SELECT * FROM t1 JOIN t2 USING (id) LEFT JOIN t3 ON (t3.id = t1.id) ORDER BY 1 LIMIT 10 OFFSET 5", R, "select"),
    ("SELECT * FROM t FORCE INDEX (i) WHERE a = 1", R, "select"),
    ("SELECT * FROM t USE INDEX (i) IGNORE INDEX FOR ORDER BY (j)", R, "select"),
    ("SELECT * FROM t PARTITION (p0, p1)", R, "select"),
    ("SELECT SQL_NO_CACHE STRAIGHT_JOIN HIGH_PRIORITY a FROM t", R, "select"),
    ("SELECT a FROM t UNION SELECT b FROM u UNION ALL SELECT c FROM v", R, "select"),
    ("SELECT a FROM t EXCEPT SELECT b FROM u INTERSECT SELECT c FROM v", R, "select"),
    ("(SELECT 1) UNION (SELECT 2) ORDER BY 1", R, "select"),
    ("((SELECT a FROM t))", R, "select"),
    ("SELECT * FROM (SELECT 1, 2) AS t (a, b)", R, "select"),
    ("SELECT * FROM (SELECT a FROM t) d (x)", R, "select"),
    ("SELECT * FROM t, LATERAL (SELECT * FROM u WHERE u.id = t.id) s", R, "select"),
    ("SELECT `select`, `update`, `delete` FROM `insert` WHERE `for` = 1", R, "select"),
    ("SELECT `from`.`into` FROM `from`", R, "select"),
    ("SELECT 'FOR UPDATE', \"INTO @x\", 'GET_LOCK(1)' FROM t", R, "select"),
    ("SELECT 'a;DELETE FROM t'", R, "select"),
    ("SELECT * FROM t WHERE a = 'x' /* FOR UPDATE */", R, "select"),
    ("SELECT * FROM t -- FOR UPDATE", R, "select"),
    ("SELECT * FROM t # FOR UPDATE", R, "select"),
    ("SELECT * FROM t WHERE lock = 1 AND next = 2", R, "select"),
    ("SELECT 1 FROM DUAL", R, "select"),
    ("SELECT * FROM t FOR SYSTEM_TIME AS OF TIMESTAMP '2020-01-01 00:00:00'", R, "select"),
    ("SELECT NOW(), CURDATE(), CURRENT_TIMESTAMP, UNIX_TIMESTAMP(), RAND(), UUID()", R, "select"),
    ("SELECT @@version, @@session.sql_mode", R, "select"),
    ("SELECT report_total(a) FROM t", R, "select"),
    ("SELECT analytics.safe_sum(a) FROM t", R, "select"),
    ("SELECT mixedcase(1), MIXEDCASE(2), db.MixedCase(3)", R, "select"),
    ("SELECT 1 /*+ MAX_EXECUTION_TIME(1000) */", R, "select"),
    ("SELECT /*+ BKA(t) */ a FROM t", R, "select"),
    ("SELECT COUNT(*) FROM t WHERE a MEMBER OF('[1, 2]')", R, "select"),
    ("SELECT VALUES(a) FROM t", R, "select"),
    # --- CTEs --------------------------------------------------------------------------------------
    ("WITH x AS (SELECT 1 AS a) SELECT * FROM x", R, "select"),
    ("WITH x (a, b) AS (SELECT 1, 2) SELECT * FROM x", R, "select"),
    ("WITH RECURSIVE r (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT * FROM r", R, "select"),
    ("WITH a AS (SELECT 1), b (c) AS (SELECT 2) SELECT * FROM a, b", R, "select"),
    ("WITH x AS (SELECT 1) (SELECT * FROM x)", R, "select"),
    ("WITH x AS (SELECT 1) TABLE x", R, "select"),
    ("SELECT * FROM (WITH x (a) AS (SELECT 1) SELECT a FROM x) y", R, "select"),
    ("WITH x AS (SELECT id FROM t) UPDATE t JOIN x USING (id) SET t.a = 1", P, "dml"),
    ("WITH x AS (SELECT id FROM t) DELETE FROM t WHERE id IN (SELECT id FROM x)", P, "dml"),
    ("WITH x AS (SELECT 1 FROM t FOR UPDATE) SELECT * FROM x", P, "for update"),
    ("WITH x AS (SELECT GET_LOCK('a', 1)) SELECT * FROM x", P, "volatile function get_lock"),
    ("WITH x AS (SELECT 1)", P, "unparsable"),
    # --- other reads -------------------------------------------------------------------------------
    ("TABLE t", R, "select"),
    ("TABLE t ORDER BY a LIMIT 1", R, "select"),
    ("VALUES ROW(1, 2), ROW(3, 4)", R, "select"),
    ("VALUES (1, 2), (3, 4)", R, "select"),
    ("SHOW TABLES", R, "show"),
    ("SHOW FULL PROCESSLIST", R, "show"),
    ("SHOW CREATE TABLE t", R, "show"),
    ("SHOW VARIABLES LIKE 'max%'", R, "show"),
    ("show global status", R, "show"),
    ("SHOW SLAVE STATUS", R, "show"),
    ("SHOW REPLICA STATUS", R, "show"),
    ("SHOW ALL SLAVES STATUS", R, "show"),
    ("SHOW GRANTS FOR CURRENT_USER()", R, "show"),
    ("SHOW GRANTS FOR 'app'@'%'", R, "show"),
    ("SHOW INDEX FROM t IN db", R, "show"),
    ("SHOW ENGINE INNODB STATUS", R, "show"),
    ("SHOW TABLES WHERE GET_LOCK('a', 1)", P, "volatile function get_lock"),
    ("SHOW WARNINGS", P, "show warnings"),
    ("SHOW ERRORS LIMIT 1", P, "show errors"),
    ("SHOW COUNT(*) WARNINGS", P, "show warnings"),
    ("SHOW PROFILES", P, "show profiles"),
    ("SHOW MASTER STATUS", P, "show master"),
    ("SHOW BINARY LOGS", P, "show binary"),
    ("SHOW BINLOG EVENTS", P, "show binlog"),
    ("SHOW SLAVE HOSTS", P, "show slave"),
    ("SHOW REPLICAS", P, "show replicas"),
    ("DESCRIBE t", R, "describe"),
    ("DESC t", R, "describe"),
    ("DESCRIBE `my table` col", R, "describe"),
    ("EXPLAIN t", R, "describe"),
    ("EXPLAIN SELECT * FROM t", R, "explain"),
    ("EXPLAIN FORMAT=JSON SELECT * FROM t", R, "explain"),
    ("EXPLAIN EXTENDED SELECT 1", R, "explain"),
    ("DESCRIBE SELECT 1", R, "explain"),
    ("EXPLAIN ANALYZE SELECT * FROM t", R, "explain analyze"),
    ("ANALYZE SELECT * FROM t", R, "explain analyze"),
    ("ANALYZE FORMAT=JSON SELECT * FROM t", R, "explain analyze"),
    ("EXPLAIN SELECT GET_LOCK('a', 1)", P, "explain volatile function get_lock"),
    ("EXPLAIN ANALYZE SELECT * FROM t FOR UPDATE", P, "explain for update"),
    ("EXPLAIN UPDATE t SET a = 1", P, "explain dml"),   # a read_only server refuses it (MariaDB 10.11)
    ("EXPLAIN DELETE FROM t", P, "explain dml"),
    ("EXPLAIN FORMAT=JSON INSERT INTO t VALUES (1)", P, "explain dml"),
    ("ANALYZE UPDATE t SET a = 1", P, "explain dml"),
    ("ANALYZE DELETE FROM t", P, "explain dml"),
    ("ANALYZE TABLE t", P, "analyze table"),
    ("ANALYZE NO_WRITE_TO_BINLOG TABLE t", P, "analyze table"),
    ("EXPLAIN FOR CONNECTION 12", P, "explain for connection"),
    ("EXPLAIN FORMAT=JSON INTO @v SELECT 1", P, "explain into"),
    ("EXPLAIN", P, "unparsable"),
    ("HELP 'contents'", R, "help"),
    # --- transaction control -----------------------------------------------------------------------
    ("START TRANSACTION READ ONLY", R, "begin read only"),
    ("start transaction with consistent snapshot, read only", R, "begin read only"),
    ("START TRANSACTION READ ONLY, READ WRITE", P, "begin"),
    ("START TRANSACTION", P, "begin"),
    ("START TRANSACTION READ WRITE", P, "begin"),
    ("START TRANSACTION WITH CONSISTENT SNAPSHOT", P, "begin"),
    ("BEGIN", P, "begin"),
    ("BEGIN WORK", P, "begin"),
    ("begin;", P, "begin"),
    ("COMMIT", R, "commit"),
    ("COMMIT WORK", R, "commit"),
    ("COMMIT AND CHAIN", R, "commit and chain"),
    ("COMMIT AND NO CHAIN NO RELEASE", R, "commit"),
    ("COMMIT RELEASE", R, "commit release"),
    ("ROLLBACK", R, "rollback"),
    ("ROLLBACK WORK AND CHAIN", R, "rollback and chain"),
    ("ROLLBACK TO SAVEPOINT a", R, "rollback to savepoint"),
    ("ROLLBACK WORK TO a", R, "rollback to savepoint"),
    ("SAVEPOINT a", R, "savepoint"),
    ("RELEASE SAVEPOINT a", R, "release savepoint"),
    ("START TRANSACTION READ ONLY; SELECT 1; COMMIT", R, "begin read only"),
    ("START TRANSACTION; SELECT 1; COMMIT", P, "begin"),
    ("XA START 'x'", P, "xa"),
    ("XA END 'x'", P, "xa"),
    ("XA COMMIT 'x' ONE PHASE", P, "xa"),
    ("XA RECOVER", P, "xa"),
    # --- writes ------------------------------------------------------------------------------------
    ("INSERT INTO t VALUES (1)", P, "dml"),
    ("INSERT INTO t (a) SELECT a FROM u", P, "dml"),
    ("INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE a = VALUES(a)", P, "dml"),
    ("UPDATE sbtest1 SET k = k + 1 WHERE id = 5", P, "dml"),
    ("DELETE FROM t WHERE id = 1", P, "dml"),
    ("REPLACE INTO t VALUES (1)", P, "dml"),
    ("LOAD DATA INFILE '/tmp/x' INTO TABLE t", P, "load data"),
    ("LOAD DATA LOCAL INFILE 'x' INTO TABLE t", P, "load data"),
    ("CALL p(1)", P, "call"),
    ("DO 1", P, "do"),
    ("DO SLEEP(1)", P, "do"),
    ("CREATE TABLE t (a INT)", P, "ddl"),
    ("CREATE TEMPORARY TABLE t (a INT)", P, "ddl"),
    ("ALTER TABLE t ADD COLUMN b INT", P, "ddl"),
    ("DROP TABLE t", P, "ddl"),
    ("TRUNCATE TABLE t", P, "ddl"),
    ("RENAME TABLE a TO b", P, "ddl"),
    ("GRANT SELECT ON db.* TO 'u'@'%'", P, "ddl"),
    ("CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END", P, "ddl"),
    ("OPTIMIZE TABLE t", P, "optimize"),
    ("FLUSH TABLES", P, "flush"),
    ("KILL QUERY 12", P, "kill"),
    ("SET NAMES utf8mb4", P, "set"),
    ("SET autocommit = 0", P, "set"),
    ("SET @x = 1", P, "set"),
    ("SET TRANSACTION READ ONLY", P, "set transaction"),
    ("SET STATEMENT max_statement_time = 1 FOR SELECT * FROM t", R, "select"),
    ("SET STATEMENT max_statement_time = 1 FOR UPDATE t SET a = 1", P, "dml"),
    ("SET STATEMENT sql_mode = @m FOR SELECT 1", P, "user variable"),
    ("SET STATEMENT max_statement_time = 1 FOR", P, "unparsable"),
    ("USE db", P, "use"),
    ("LOCK TABLES t READ", P, "lock tables"),
    ("UNLOCK TABLES", P, "unlock tables"),
    ("HANDLER t OPEN", P, "handler"),
    ("PREPARE s FROM 'SELECT 1'", P, "prepare"),
    ("EXECUTE s USING @a", P, "execute"),
    ("DEALLOCATE PREPARE s", P, "deallocate"),
    ("BEGIN NOT ATOMIC SELECT 1; END", P, "compound statement"),
    # --- reads that must stay on the primary -------------------------------------------------------
    ("SELECT * FROM t FOR UPDATE", P, "for update"),
    ("select * from t for update nowait", P, "for update"),
    ("SELECT * FROM t FOR UPDATE SKIP LOCKED", P, "for update"),
    ("SELECT * FROM t FOR SHARE", P, "for share"),
    ("SELECT * FROM t LOCK IN SHARE MODE", P, "lock in share mode"),
    ("SELECT * FROM (SELECT * FROM t FOR UPDATE) x", P, "for update"),
    ("SELECT * FROM t /*! FOR UPDATE */", P, "for update"),
    ("SELECT * FROM t /*!50000 FOR UPDATE */", P, "for update"),
    ("SELECT * FROM t /*M!100100 LOCK IN SHARE MODE */", P, "lock in share mode"),
    ("SELECT /*!40001 SQL_CALC_FOUND_ROWS */ * FROM t", P, "sql_calc_found_rows"),
    ("SELECT * FROM t/*! WHERE GET_LOCK('a', 1) */", P, "volatile function get_lock"),
    # a server failing a version gate (or MySQL, for /*M! */) skips the comment up to its first */:
    # both readings must allow a replica (checked on MariaDB 10.11)
    ("SELECT 1 /*!99999 ' */ ; DELETE FROM t -- ' */", P, "dml"),
    ("/*!99999 SELECT 1 FROM ( */ UPDATE t SET a = 1 /*!99999 ) x */", P, "dml"),
    ("/*M! SELECT 1 FROM ( */ UPDATE t SET a = 1 /*M! ) x */", P, "dml"),
    ("SELECT 1 /*!80000 ` */ FOR UPDATE -- ` */", P, "for update"),
    ("SELECT 1 /*!50000 ` */ FOR UPDATE -- ` */", R, "select"),   # 5.0: every server runs it as code
    # NO_BACKSLASH_ESCAPES / ANSI_QUOTES: a backslash may not escape, "..." may be an identifier
    ("SELECT 'a\\' ; DELETE FROM t -- '", P, "dml"),
    ('SELECT "a\\" , GET_LOCK(1, 2) -- "', P, "volatile function get_lock"),
    ("SELECT 'a\\\\' , b FROM t WHERE c = 'd\\\\'", R, "select"),   # SQL 'a\\': a\ or a\\, never open
    ("SELECT * FROM t WHERE a LIKE 'x\\_y' AND b = 'C:\\\\dir'", R, "select"),
    ('SELECT "GET_LOCK"(\'a\', 1)', P, "volatile function get_lock"),
    ('SELECT "myfunc"(1)', P, "unknown function myfunc"),
    ('SELECT "abc", "x" AS y FROM t', R, "select"),
    ("SELECT /*!40001 SQL_NO_CACHE */ * FROM t", R, "select"),
    ("SELECT 1 /*!99999 + 1 */", R, "select"),
    ("SELECT 1 /*M!100100 , NOW() */", R, "select"),
    ("/*!40101 SET NAMES utf8 */", P, "set"),
    ("SELECT 1 /*!99999 unclosed", P, "unparsable"),
    ("SELECT a INTO @v FROM t", P, "select into"),
    ("SELECT a FROM t INTO @v", P, "select into"),
    ("SELECT * FROM t INTO OUTFILE '/tmp/x'", P, "select into"),
    ("SELECT a FROM t INTO DUMPFILE '/tmp/x'", P, "select into"),
    ("SELECT @x", P, "user variable"),
    ("SELECT @x := 1", P, "user variable"),
    ("SELECT a FROM t WHERE b = @`v`", P, "user variable"),
    ("SELECT GET_LOCK('a', 1)", P, "volatile function get_lock"),
    ("SELECT get_lock ('a', 1)", P, "volatile function get_lock"),
    ("SELECT `GET_LOCK`('a', 1)", P, "volatile function get_lock"),
    ("SELECT RELEASE_LOCK('a')", P, "volatile function release_lock"),
    ("SELECT RELEASE_ALL_LOCKS()", P, "volatile function release_all_locks"),
    ("SELECT IS_USED_LOCK('a')", P, "volatile function is_used_lock"),
    ("SELECT IS_FREE_LOCK('a')", P, "volatile function is_free_lock"),
    ("SELECT SLEEP(1)", P, "volatile function sleep"),
    ("SELECT LAST_INSERT_ID()", P, "volatile function last_insert_id"),
    ("SELECT FOUND_ROWS()", P, "volatile function found_rows"),
    ("SELECT ROW_COUNT()", P, "volatile function row_count"),
    ("SELECT NEXTVAL(s)", P, "volatile function nextval"),
    ("SELECT LASTVAL(s)", P, "volatile function lastval"),
    ("SELECT SETVAL(s, 10)", P, "volatile function setval"),
    ("SELECT NEXT VALUE FOR s", P, "sequence"),
    ("SELECT PREVIOUS VALUE FOR s", P, "sequence"),
    ("SELECT s.nextval", P, "sequence"),
    ("SELECT MASTER_GTID_WAIT('0-1-1', 1)", P, "volatile function master_gtid_wait"),
    ("SELECT LOAD_FILE('/etc/passwd')", P, "volatile function load_file"),
    ("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 10", P, "sql_calc_found_rows"),
    ("SELECT myfunc(a) FROM t", P, "unknown function myfunc"),
    ("SELECT db.myfunc(a) FROM t", P, "unknown function db.myfunc"),
    ("SELECT `myfunc`(a) FROM t", P, "unknown function myfunc"),
    ("SELECT `concat`(a, b) FROM t", P, "unknown function concat"),
    ("SELECT other.safe_sum(a) FROM t", P, "unknown function other.safe_sum"),
    ("SELECT db.GET_LOCK('a', 1)", P, "unknown function db.get_lock"),   # a stored function (MariaDB)
    ("SELECT a, f(x) AS y FROM t", P, "unknown function f"),
    ("SELECT * FROM t WHERE a = (SELECT GET_LOCK('x', 0))", P, "volatile function get_lock"),
    ("SELECT * FROM (SELECT 1) AS GET_LOCK (a)", P, "volatile function get_lock"),
    # --- multi-statement texts ---------------------------------------------------------------------
    ("SELECT 1; SELECT 2", R, "select"),
    ("SELECT 1; DELETE FROM t", P, "dml"),
    ("SELECT ';'; DELETE FROM t", P, "dml"),
    ("SELECT 1 /*!; DELETE FROM t */", P, "dml"),
    ("SELECT 1 -- ; DELETE FROM t", R, "select"),
    ("SELECT 1; SHOW TABLES; DESCRIBE t", R, "select"),
    ("SELECT 1; SELECT @x", P, "user variable"),
    # --- unparsable --------------------------------------------------------------------------------
    ("SELECT 'abc", P, "unparsable"),
    ("SELECT `abc", P, "unparsable"),
    ("SELECT 1 /* never closed", P, "unparsable"),
    ("SELECT 1 /*! never closed", P, "unparsable"),
    ("SELECT 1; SELECT 'x", P, "unparsable"),
    ("/* /* */ */ SELECT 1", P, "unparsable"),
    ("+ SELECT", P, "unparsable"),
    ("BEGIN SELECT", P, "unparsable"),
    # --- empty -------------------------------------------------------------------------------------
    ("", R, "empty"),
    (";", R, "empty"),
    ("-- nothing here", R, "empty"),
    # --- hints -------------------------------------------------------------------------------------
    ("/* dbproxy:route=primary */ SELECT 1", P, "hint"),
    ("SELECT 1 -- dbproxy:route=primary", P, "hint"),
    ("SELECT 1 # dbproxy:route=primary", P, "hint"),
    ("/* DBPROXY:ROUTE = PRIMARY */ SELECT 1", P, "hint"),
    ("/* dbproxy:route=replica */ SELECT * FROM t FOR UPDATE", R, "hint"),
    ("/* dbproxy:route=replica */ DELETE FROM t", R, "hint"),
    ("/* dbproxy:route=replica */ SELECT 1 /* dbproxy:route=primary */", P, "hint"),
    ("SELECT 1; /* dbproxy:route=primary */ SELECT 2", P, "hint"),
    ("SELECT 'dbproxy:route=primary'", R, "select"),
    ("SELECT `dbproxy:route=primary`", R, "select"),
    ("SELECT 1 /*! dbproxy:route=primary */", R, "select"),  # code, not a hint (the server rejects it)
    ("/* dbproxy:route=primaryx */ SELECT 1", R, "select"),
    ("/* dbproxy:route=primary */", P, "hint"),
]


@pytest.fixture(scope="module")
def classifier() -> MysqlClassifier:
    return MysqlClassifier(read_only_functions=CONFIG_FUNCTIONS)


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 100
    assert len({sql for sql, _, _ in CASES}) == len(CASES), "duplicate SQL in the table"


@pytest.mark.parametrize(("sql", "route", "reason"), CASES, ids=[repr(c[0])[:60] for c in CASES])
def test_classification(classifier: MysqlClassifier, sql: str, route: Route, reason: str | None) -> None:
    result = classifier.classify(sql)
    assert isinstance(result, Classification)
    assert result.route is route, result
    if reason is not None:
        assert result.reason == reason


FLAG_CASES: list[tuple[str, dict[str, bool]]] = [
    ("BEGIN", {"begins_transaction": True}),
    ("START TRANSACTION", {"begins_transaction": True}),
    ("START TRANSACTION READ ONLY", {"begins_transaction": True, "begins_read_only": True}),
    ("COMMIT", {"ends_transaction": True, "neutral": True}),
    ("COMMIT AND CHAIN", {"ends_transaction": True, "neutral": True}),
    ("ROLLBACK", {"ends_transaction": True, "neutral": True}),
    ("ROLLBACK TO SAVEPOINT a", {"neutral": True}),
    ("SAVEPOINT a", {"neutral": True}),
    ("RELEASE SAVEPOINT a", {"neutral": True}),
    ("", {"neutral": True}),
    ("XA START 'x'", {"begins_transaction": True}),
    ("XA BEGIN 'x'", {"begins_transaction": True}),
    ("XA COMMIT 'x'", {"ends_transaction": True}),
    ("XA ROLLBACK 'x'", {"ends_transaction": True}),
    ("SET TRANSACTION READ ONLY", {}),
    ("SELECT 1", {}),
    (
        "START TRANSACTION READ ONLY; SELECT 1; COMMIT",
        {"begins_transaction": True, "begins_read_only": True, "ends_transaction": True},
    ),
    ("START TRANSACTION; SELECT 1; COMMIT", {"begins_transaction": True, "ends_transaction": True}),
    ("COMMIT; ROLLBACK", {"ends_transaction": True, "neutral": True}),
    ("/* dbproxy:route=replica */ BEGIN", {"begins_transaction": True}),
    ("/* dbproxy:route=primary */ COMMIT", {"ends_transaction": True}),
]


@pytest.mark.parametrize(("sql", "flags"), FLAG_CASES)
def test_transaction_flags(classifier: MysqlClassifier, sql: str, flags: dict[str, bool]) -> None:
    result = classifier.classify(sql)
    for name in ("begins_transaction", "begins_read_only", "ends_transaction", "neutral"):
        assert getattr(result, name) is flags.get(name, False), (name, result)


VOLATILE_CASES: list[tuple[str, bool]] = [
    ("SELECT 1", False),
    ("SELECT a FROM t WHERE id = 1", False),
    ("SELECT NOW()", True),
    ("SELECT * FROM t WHERE ts > CURRENT_TIMESTAMP - INTERVAL 1 DAY", True),
    ("SELECT CURRENT_DATE", True),
    ("SELECT UTC_TIMESTAMP()", True),
    ("SELECT RAND()", True),
    ("SELECT UUID()", True),
    ("SELECT CONNECTION_ID()", True),
    ("SELECT USER(), CURRENT_USER", True),
    ("SELECT DATABASE()", True),
    ("SELECT @@hostname", True),
    ("SELECT report_total(a) FROM t", False),   # configured read-only functions are stable
    ("SELECT 'NOW()'", False),
    ("SELECT `now` FROM t", False),
    ("SELECT 1; SELECT SYSDATE()", True),
    ("SHOW VARIABLES", False),
    ("EXPLAIN SELECT NOW()", True),
    ("SELECT 1 /*!99999 , NOW() */", True),
]


@pytest.mark.parametrize(("sql", "volatile"), VOLATILE_CASES)
def test_volatile_flag_for_the_result_cache(classifier: MysqlClassifier, sql: str, volatile: bool) -> None:
    result = classifier.classify(sql)
    assert result.route is R
    assert result.volatile is volatile


SESSION_ONLY_CASES = [
    ("SET autocommit = 1", True),
    ("SET NAMES utf8mb4 COLLATE utf8mb4_general_ci", True),
    ("SET @x = 1, @@session.sql_mode = 'ANSI'", True),
    ("SET @x = '(not a call)'", True),
    ("USE app", True),
    ("SET @x = 1; USE app", True),
    ("SET @x = my_counter()", False),          # a stored function may write
    ("SET @x = (SELECT COUNT(*) FROM t)", False),
    ("SET @x = 1; INSERT INTO t VALUES (1)", False),
    ("SET STATEMENT max_statement_time = 1 FOR UPDATE t SET a = 1", False),
    ("INSERT INTO t VALUES (1)", False),
    ("SELECT 1", False),
]


@pytest.mark.parametrize(("sql", "session_only"), SESSION_ONLY_CASES)
def test_session_only_flag_for_read_your_writes(classifier: MysqlClassifier, sql: str, session_only: bool) -> None:
    assert classifier.classify(sql).session_only is session_only


def test_hint_keeps_structural_flags() -> None:
    result = MysqlClassifier().classify("/* dbproxy:route=replica */ BEGIN")
    assert result == MysqlClassification(R, "hint", begins_transaction=True)


def test_configured_function_cannot_whitelist_side_effects() -> None:
    classifier = MysqlClassifier(read_only_functions=["get_lock", "last_insert_id", "myfunc"])
    assert classifier.classify("SELECT GET_LOCK('a', 1)").route is P
    assert classifier.classify("SELECT LAST_INSERT_ID()").route is P
    assert classifier.classify("SELECT myfunc(1), db.myfunc(2)").route is R
    assert classifier.classify("SELECT myschema.get_lock2(1)").route is P


def test_functions_blocker() -> None:
    functions = MysqlFunctions(["f", "db.g"])
    assert functions.blocker(["concat"]) is None
    assert functions.blocker(["concat"], quoted=True) == "unknown function concat"
    assert functions.blocker(["F"]) is None
    assert functions.blocker(["other", "f"]) is None
    assert functions.blocker(["g"]) == "unknown function g"
    assert functions.blocker(["DB", "G"]) is None
    assert functions.blocker(["sleep"]) == "volatile function sleep"


def test_cache_counts_hits_and_misses() -> None:
    classifier = MysqlClassifier()
    assert (classifier.hits, classifier.misses) == (0, 0)
    first = classifier.classify("SELECT 1 -- x")
    assert (classifier.hits, classifier.misses) == (0, 1)
    assert classifier.classify("SELECT 1 -- x") is first
    assert (classifier.hits, classifier.misses) == (1, 1)
    classifier.classify("select 1 -- x")  # keyed by exact text
    assert (classifier.hits, classifier.misses) == (1, 2)
    assert classifier.cached_entries == 2
    classifier.clear_cache()
    assert (classifier.hits, classifier.misses, classifier.cached_entries) == (0, 0, 0)


def test_caches_are_bounded_and_literals_share_one_verdict() -> None:
    classifier = MysqlClassifier(cache_size=3)
    for i in range(10):
        classifier.classify(f"SELECT c FROM sbtest1 WHERE id = {i} AND s = 'x{i}'")
    assert (classifier.misses, classifier.hits) == (1, 9)
    assert classifier.cached_entries <= 3
    for i in range(10):
        classifier.classify(f"SELECT {i} FROM t{i}")       # t0..t9: ten shapes
    assert classifier.misses == 11
    assert classifier.cached_entries <= 3


@pytest.mark.parametrize(("first", "second"), [
    # texts whose literal shape could be confused: they must never share a cache entry wrongly
    ("SELECT 'a\\'; DELETE FROM t; #'", "SELECT 'b\\'; DELETE FROM t; #'"),
    ("SELECT `it's` FROM t", "SELECT `it's` FROM t FOR UPDATE"),
    ("SELECT \"it's\", 1", "SELECT \"it's\", GET_LOCK('a', 1)"),
    ("SELECT 1 /* dbproxy:route=primary */", "SELECT 2"),
    ("SELECT 1 # dbproxy:route=primary", "SELECT 2"),
    ("SELECT f1(1)", "SELECT f2(1)"),
    ("SELECT 1e5", "SELECT 1ea"),
    ("SELECT @v1", "SELECT v1"),
    ("SELECT 1", "SELECT 'abc"),
    ("SELECT `a`, 1", "SELECT `a`, 'b"),
    ("SELECT 1 (1)", 'SELECT "b" (1)'),
])
def test_texts_the_literal_shape_could_confuse_are_classified_on_their_own(first: str, second: str) -> None:
    classifier = MysqlClassifier(["f1"])
    expected = MysqlClassifier(["f1"], cache_size=0).classify(second)
    classifier.classify(first)
    assert classifier.classify(second) == expected


@pytest.mark.parametrize(("sql", "shape"), [
    ("SELECT c FROM sbtest1 WHERE id=5023", "SELECT c FROM sbtest1 WHERE id=?"),
    ("SELECT t1.a, 'x''y', \"q\", 3.5e3, -7 FROM t1", "SELECT t1.a, ?, \"q\", ?, -? FROM t1"),
    ("SELECT `c1`, `it``s 2` FROM `t 3`", "SELECT `c1`, `it``s 2` FROM `t 3`"),
    ("SELECT f1(2), 1st, x.5, @v1, 0x1F", "SELECT f1(?), 1st, x.5, @v1, 0x1F"),
    ("SELECT 1 -- c", None),
    ("SELECT 1 # c", None),
    ("SELECT /* c */ 1", None),
    ("SELECT 'a\\'b'", None),
    ("SELECT 1, 'abc", None),
    ("SELECT `a", None),
    ("SELECT `a`, 'b", None),
    ("SELECT \"a", None),
])
def test_literal_shape(sql: str, shape: str | None) -> None:
    assert literal_shape(sql) == shape


LITERALS = st.sampled_from(["1", "22", "3.5", "'a'", "'b''c'", '"d"', "''", "-4", "1e3", "0x1F", "?"])
TEMPLATE_PIECES = st.sampled_from([
    "SELECT", "a", "FROM", "t", "t1", "WHERE", "=", "(", ")", ",", ";", "FOR UPDATE", "INTO", "@v", "@v1",
    "GET_LOCK(", "f1(", "NOW()", "'", '"', "`", "`q'`", "x", "e", "UNION", "DELETE", "LIMIT", ".", "@", "{}",
])


def _fill(pieces: list[str], literals: list[str], glue: str) -> str:
    filled = iter(literals)
    return glue.join(next(filled, "0") if piece == "{}" else piece for piece in pieces)


@settings(max_examples=500, deadline=None)
@given(st.lists(TEMPLATE_PIECES, max_size=14), st.lists(LITERALS, min_size=14, max_size=14),
       st.lists(LITERALS, min_size=14, max_size=14), st.sampled_from(["", " "]))
def test_texts_with_one_literal_shape_share_one_verdict(
    pieces: list[str], one: list[str], two: list[str], glue: str
) -> None:
    text_one, text_two = _fill(pieces, one, glue), _fill(pieces, two, glue)
    shape_one = literal_shape(text_one)
    if shape_one is not None and shape_one == literal_shape(text_two):
        functions = MysqlFunctions(["f1"])
        assert classify_sql(text_one, functions) == classify_sql(text_two, functions), (text_one, text_two)


SMALL_VOCABULARY = st.sampled_from(["SELECT", "1", "2.5", "'a'", "''", '"b"', "'", '"', "`", "`x'`", "x", ",", ";", "@v", "(", ")", "f1("])


@settings(max_examples=1500, deadline=None)
@given(st.lists(SMALL_VOCABULARY, max_size=5), st.lists(SMALL_VOCABULARY, max_size=5))
def test_independent_texts_with_one_shape_share_one_verdict(one: list[str], two: list[str]) -> None:
    text_one, text_two = " ".join(["SELECT", *one]), " ".join(["SELECT", *two])
    shape = literal_shape(text_one)
    if shape is not None and shape == literal_shape(text_two):
        functions = MysqlFunctions(["f1"])
        assert classify_sql(text_one, functions) == classify_sql(text_two, functions), (text_one, text_two)


def test_cache_size_zero_disables_caching() -> None:
    classifier = MysqlClassifier(cache_size=0)
    classifier.classify("SELECT 1")
    classifier.classify("SELECT 1")
    assert (classifier.hits, classifier.misses, classifier.cached_entries) == (0, 2, 0)


def test_long_texts_are_not_cached() -> None:
    classifier = MysqlClassifier()
    sql = "SELECT " + ", ".join(["1"] * MAX_CACHED_SQL_LENGTH)
    assert classifier.classify(sql).route is R
    assert classifier.classify(sql).route is R
    assert (classifier.hits, classifier.misses, classifier.cached_entries) == (0, 2, 0)


def test_negative_cache_size_is_rejected() -> None:
    with pytest.raises(ValueError):
        MysqlClassifier(cache_size=-1)


def test_deeply_nested_and_long_queries_are_fast() -> None:
    started = time.perf_counter()
    nested = "SELECT " + "(SELECT " * 3000 + "1" + ")" * 3000
    assert classify_sql(nested, MysqlFunctions()).route is R
    calls = "SELECT a" + ", f(" * 3000 + ")" * 3000
    assert classify_sql(calls, MysqlFunctions(["f"])).route is R
    ctes = "WITH " + ", ".join(f"c{i} (a) AS (SELECT {i})" for i in range(2000)) + " SELECT 1"
    assert classify_sql(ctes, MysqlFunctions()).route is R
    assert time.perf_counter() - started < 3.0


READ_SUFFIXES = ["FOR UPDATE", "FOR SHARE", "LOCK IN SHARE MODE", "INTO @v", "INTO OUTFILE '/x'", "/*! FOR UPDATE */"]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([sql for sql, route, _ in CASES if route is R and sql.upper().startswith("SELECT") and "--" not in sql
                        and "#" not in sql and "/*" not in sql and ";" not in sql]),
       st.sampled_from(READ_SUFFIXES))
def test_locking_or_into_suffix_always_sends_a_read_to_the_primary(sql: str, suffix: str) -> None:
    assert classify_sql(f"{sql} {suffix}", MysqlFunctions(CONFIG_FUNCTIONS)).route is P


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_classify_never_raises_on_arbitrary_text(sql: str) -> None:
    result = MysqlClassifier(cache_size=0).classify(sql)
    assert isinstance(result, MysqlClassification)


SQL_FRAGMENTS = st.sampled_from([
    "SELECT", "1", "FROM", "t", "WHERE", "(", ")", ";", "'", '"', "`", "/*", "*/", "/*!", "/*M!50000", "--", "-- ",
    "#", "\n", "FOR UPDATE", "GET_LOCK('a', 1)", "WITH", "x AS", "x (a) AS", "DELETE", "INSERT INTO", "VALUES",
    "START TRANSACTION", "READ ONLY", "COMMIT", "dbproxy:route=replica", "dbproxy:route=primary", "?", "@x", "@@x",
    ",", "EXPLAIN", "ANALYZE", "TABLE", "SHOW", "INTO", "SET", "STATEMENT", "BEGIN", "NOT ATOMIC", "END", "\\",
])


@settings(max_examples=500, deadline=None)
@given(st.lists(SQL_FRAGMENTS, max_size=20).map(" ".join))
def test_classify_never_raises_on_sql_like_text(sql: str) -> None:
    result = MysqlClassifier(cache_size=0).classify(sql)
    assert isinstance(result, MysqlClassification)
    if lex(sql).error:
        assert result.route is P or result.reason == "hint"


def _per_call_us(function: object, sql: str, number: int) -> float:
    assert callable(function)
    return min(timeit.repeat(lambda: function(sql), number=number, repeat=3)) / number * 1e6


def test_timing_sanity(capsys: pytest.CaptureFixture[str]) -> None:
    """Not an assertion: prints µs per call, for the record."""
    point = "SELECT c FROM sbtest1 WHERE id = 5023"
    classifier = MysqlClassifier()
    classifier.classify(point)
    functions = MysqlFunctions()
    other_ids = iter(range(10**9))
    lines = [
        f"classify(point select), exact-text cache hit: {_per_call_us(classifier.classify, point, 50000):.2f} us",
        f"classify(point select, new id each call), shape cache hit: "
        f"{_per_call_us(lambda _: classifier.classify(f'SELECT c FROM sbtest1 WHERE id = {next(other_ids)}'), point, 20000):.2f} us",
        f"classify_sql(point select, new id each call), uncached (lex + rules): "
        f"{_per_call_us(lambda _: classify_sql(f'SELECT c FROM sbtest1 WHERE id = {next(other_ids)}', functions), point, 5000):.2f} us",
    ]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
