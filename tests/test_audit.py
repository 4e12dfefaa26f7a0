"""The audit log without sockets (audit.py): statement kinds from both classifiers, masking, the writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from proxy.audit import AUDITED_KINDS, STATEMENT_TEXT_LIMIT, AuditLog, masked_text, statement_kind
from proxy.engines.mysql.classify import MysqlClassifier
from proxy.engines.postgres.classify import PgClassifier


@pytest.mark.parametrize(("sql", "kind"), [
    ("SELECT 1", "read"),
    ("SELECT * FROM t WHERE id = 3", "read"),
    ("BEGIN", "read"),
    ("COMMIT", "read"),
    ("SET search_path = x", "read"),
    ("SHOW work_mem", "read"),
    ("INSERT INTO t VALUES (1)", "write"),
    ("UPDATE t SET x = 1", "write"),
    ("SELECT * FROM t FOR UPDATE", "write"),
    ("SELECT nextval('s')", "write"),
    ("CREATE TABLE t (x int)", "ddl"),
    ("DROP TABLE t", "ddl"),
    ("ALTER TABLE t ADD COLUMN y int", "ddl"),
    ("GRANT SELECT ON t TO app", "ddl"),
    ("CREATE TABLE t2 AS SELECT 1", "ddl"),
    ("INSERT INTO t VALUES (1); DROP TABLE t", "unknown"),   # the verdict names only the first write
    ("/* dbproxy:route=replica */ DELETE FROM t", "unknown"),
    ("SELEKT nonsense", "unknown"),
])
def test_postgres_statement_kinds(sql: str, kind: str) -> None:
    assert statement_kind(PgClassifier().classify(sql), sql.encode()) == kind


@pytest.mark.parametrize(("sql", "kind"), [
    ("SELECT 1", "read"),
    ("USE app", "read"),
    ("SHOW TABLES", "read"),
    ("INSERT INTO t VALUES (1)", "write"),
    ("REPLACE INTO t VALUES (1)", "write"),
    ("CREATE TABLE t (x int)", "ddl"),
    ("TRUNCATE TABLE t", "ddl"),
    ("RENAME TABLE a TO b", "ddl"),
    ("UPDATE t SET x = 1; DROP TABLE t", "unknown"),
])
def test_mysql_statement_kinds(sql: str, kind: str) -> None:
    assert statement_kind(MysqlClassifier().classify(sql), sql.encode()) == kind


def test_settings_write_what_they_say() -> None:
    assert AUDITED_KINDS["none"] == frozenset()
    assert "read" not in AUDITED_KINDS["writes"] and "write" not in AUDITED_KINDS["ddl"]
    assert all("unknown" in AUDITED_KINDS[s] for s in ("ddl", "writes", "all"))


@pytest.mark.parametrize("sql", [
    "ALTER ROLE app PASSWORD 'hunter2'",
    "CREATE ROLE app LOGIN ENCRYPTED PASSWORD 'hunter2' VALID UNTIL 'infinity'",
    "ALTER USER app WITH PASSWORD $pw$hunter2$pw$",
    "CREATE USER 'app'@'%' IDENTIFIED BY 'hunter2'",
    "ALTER USER app IDENTIFIED WITH caching_sha2_password BY \"hunter2\"",
    "SET PASSWORD FOR app = PASSWORD('hunter2')",
    "GRANT ALL ON *.* TO app IDENTIFIED BY 'it''s hunter2'",
])
def test_password_literals_are_masked(sql: str) -> None:
    text, truncated = masked_text(sql.encode())
    assert "hunter2" not in text and "'***'" in text and not truncated


def test_text_is_cut_at_the_limit_on_a_character_boundary() -> None:
    text, truncated = masked_text(("é" * STATEMENT_TEXT_LIMIT).encode())
    assert truncated and len(text.encode()) <= STATEMENT_TEXT_LIMIT and set(text) == {"é"}
    assert masked_text(b"SELECT 1") == ("SELECT 1", False)


def test_writer_appends_json_lines_and_reopens(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    audit = AuditLog(str(first), "ddl", clock=lambda: 1767225600.25)
    audit.open()
    audit.admin_command("127.0.0.1:5000", "admin", "RELOAD", "ok")   # no loop: written at once
    audit.reopen(str(second), "all")
    audit.admin_login("127.0.0.1:5001", "admin", "failure", "password authentication failed")
    audit.close()
    line = json.loads(first.read_text())
    assert line == {"time": "2026-01-01T00:00:00.250Z", "event": "admin", "client": "127.0.0.1:5000", "user": "admin",
                    "command": "RELOAD", "outcome": "ok", "reason": ""}
    assert json.loads(second.read_text())["outcome"] == "failure"
    assert audit.kinds == AUDITED_KINDS["all"]


def test_reopen_failure_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    audit = AuditLog(str(path))
    audit.open()
    with pytest.raises(OSError):
        audit.reopen(str(tmp_path / "missing" / "b.jsonl"), "none")
    audit.refused("10.0.0.1", "main", "writer", "allowlist", 3)
    audit.close()
    assert json.loads(path.read_text())["dropped"] == 3
