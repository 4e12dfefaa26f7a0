"""The MySQL probe's parsing (no server): GTID sets as positions, roles, lag and received positions."""

from __future__ import annotations

import pytest

from proxy.engines.mysql.probe import STOPPED_LAG, gtid_position, parse_probe

UUID_A = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
UUID_B = "4f22ab58-82db-22f2-af44-d91bb0530673"


@pytest.mark.parametrize(("text", "position"), [
    (None, None),
    ("", 0),
    ("0-1-42", 42),
    ("0-1-42,1-2-7", 49),                       # several domains: summed
    ("0-1-42, 1-2-7\n", 49),
    (f"{UUID_A}:1-42", 42),                     # MySQL: transactions in the intervals
    (f"{UUID_A}:1-42:50-51,\n{UUID_B}:5", 45),
])
def test_gtid_position(text: str | None, position: int | None) -> None:
    assert gtid_position(text) == position


@pytest.mark.parametrize("text", ["0-1", "0-1-x", f"{UUID_A}:1-", "a-b-c-d"])
def test_gtid_position_refuses_what_is_not_a_gtid_set(text: str) -> None:
    with pytest.raises(ValueError):
        gtid_position(text)


def slave(sql: str = "Yes", behind: str | None = "0", io_pos: str | None = "0-1-60") -> dict[str, str | None]:
    return {"Slave_IO_Running": "Yes", "Slave_SQL_Running": sql, "Seconds_Behind_Master": behind,
            "Gtid_IO_Pos": io_pos}


def test_a_writable_instance_without_replication_is_a_primary_at_its_binlog_position() -> None:
    result = parse_probe({"ro": "0", "written": "0-1-100", "replayed": "0-1-7"}, [])
    assert (result.ok, result.in_recovery, result.position, result.lag_seconds) == (True, False, 100, None)


def test_a_replica_reports_what_it_applied_received_and_its_lag() -> None:
    result = parse_probe({"ro": "1", "written": "0-1-50", "replayed": "0-1-55"}, [slave(behind="3", io_pos="0-1-60")])
    assert (result.in_recovery, result.position, result.receive_position, result.lag_seconds) == (True, 55, 60, 3.0)


def test_a_writable_instance_applying_a_primarys_changes_is_a_replica() -> None:
    assert parse_probe({"ro": "0", "written": "0-1-5", "replayed": "0-1-5"}, [slave()]).in_recovery


def test_a_replica_that_applies_nothing_counts_as_far_behind() -> None:
    stopped = parse_probe({"ro": "1", "written": "", "replayed": "0-1-55"}, [slave(sql="No", behind=None)])
    assert stopped.in_recovery and stopped.lag_seconds == STOPPED_LAG
    orphan = parse_probe({"ro": "ON", "written": "0-1-9", "replayed": ""}, [])   # read-only, no replication at all
    assert orphan.in_recovery and orphan.lag_seconds == STOPPED_LAG and orphan.position == 0


def test_mysql_8_column_names() -> None:
    row: dict[str, str | None] = {"Replica_SQL_Running": "Yes", "Seconds_Behind_Source": "2"}
    result = parse_probe({"ro": "1", "written": f"{UUID_A}:1-10", "replayed": f"{UUID_A}:1-10"}, [row])
    assert (result.in_recovery, result.position, result.lag_seconds) == (True, 10, 2.0)


def test_without_the_replication_status_the_role_comes_from_read_only_and_lag_is_unknown() -> None:
    replica = parse_probe({"ro": "1", "written": "0-1-3", "replayed": "0-1-8"}, None)
    primary = parse_probe({"ro": "0", "written": "0-1-9", "replayed": ""}, None)
    assert (replica.in_recovery, replica.position, replica.lag_seconds) == (True, 8, None)
    assert (primary.in_recovery, primary.position) == (False, 9)
