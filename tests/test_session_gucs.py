"""Session settings: startup parameters and options, replay SQL, SET/RESET tracking, reported changes."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from proxy.engines.postgres.gucs import GucState, startup_gucs
from proxy.engines.postgres.session_state import SetCommand


@dataclass
class FakeServer:
    gucs: dict[str, str] = field(default_factory=dict)


# ---- startup_gucs ------------------------------------------------------------------------------

def test_startup_params_and_options() -> None:
    params = {"user": "bob", "database": "app", "application_name": "psql",
              "options": "-c a=b --c-d=e"}
    assert startup_gucs(params) == {"application_name": "'psql'", "a": "'b'", "c_d": "'e'"}


@pytest.mark.parametrize(("options", "expected"), [
    ("-c work_mem=64MB", {"work_mem": "'64MB'"}),
    ("-cwork_mem=64MB", {"work_mem": "'64MB'"}),
    ("--work-mem=64MB", {"work_mem": "'64MB'"}),
    ("  -c  a=1   -c b=2 ", {"a": "'1'", "b": "'2'"}),
    ("-c Statement_Timeout=5s", {"statement_timeout": "'5s'"}),
    ("-c application_name=a\\ b", {"application_name": "'a b'"}),     # backslash-escaped space
    ("-c geqo=off -c geqo=on", {"geqo": "'on'"}),                       # last one wins
    ("-c myext.setting=x", {"myext.setting": "'x'"}),                   # custom (dotted) GUC
    ("-c empty=", {"empty": "''"}),
    ("-c search_path=app,public", {"search_path": "app,public"}),      # list: verbatim, not quoted
    ("", {}),
])
def test_startup_options(options: str, expected: dict[str, str]) -> None:
    assert startup_gucs({"user": "bob", "options": options}) == expected


def test_startup_param_names_are_lowercased_and_filtered() -> None:
    params = {"user": "bob", "database": "app", "replication": "database", "options": "",
              "DateStyle": "ISO, MDY", "TimeZone": "Europe/Paris",
              "server_version": "9.9", "is_superuser": "on", "standard_conforming_strings": "off",
              "bad name": "x", "1abc": "x", "_ok": "y"}
    assert startup_gucs(params) == {"datestyle": "'ISO, MDY'", "timezone": "'Europe/Paris'", "_ok": "'y'",
                                    "standard_conforming_strings": "'off'"}   # settable, so it is replayed


def test_startup_values_are_quoted_as_literals() -> None:
    assert startup_gucs({"application_name": "O'Brien"}) == {"application_name": "'O''Brien'"}
    assert startup_gucs({"search_path": '"$user", public'}) == {"search_path": '"$user", public'}


@pytest.mark.parametrize("options", ["-x", "work_mem=1", "-c", "-c noequals", "-c 'bad name'=1", "--=1"])
def test_startup_invalid_options(options: str) -> None:
    with pytest.raises(ValueError):
        startup_gucs({"options": options})


def test_startup_options_quotes_are_literal_like_postgres() -> None:
    assert startup_gucs({"options": "-c application_name=O'Brien"}) == {"application_name": "'O''Brien'"}


# ---- replay_sql --------------------------------------------------------------------------------

def test_replay_nothing_when_equal() -> None:
    state = GucState()
    assert state.replay_sql({}) == ""
    state.client = {"a": "'1'", "search_path": "app"}
    assert state.replay_sql({"search_path": "app", "a": "'1'"}) == ""


def test_replay_sets_new_and_changed_and_resets_server_only() -> None:
    state = GucState()
    state.client = {"a": "'1'", "b": "'2'", "search_path": "app, public"}
    server = {"a": "'1'", "b": "'3'", "c": "'x'"}
    assert state.replay_sql(server) == "SET b TO '2'; SET search_path TO app, public; RESET c"


def test_replay_resets_everything_for_a_client_without_settings() -> None:
    assert GucState().replay_sql({"a": "'1'", "timezone": "'UTC'"}) == "RESET a; RESET timezone"


# ---- apply -------------------------------------------------------------------------------------

def test_apply_set_and_reset() -> None:
    state, server = GucState(), FakeServer({"other": "'o'"})
    state.apply([SetCommand("work_mem", "'64MB'"), SetCommand("DateStyle", "'ISO'")], server)
    assert state.client == {"work_mem": "'64MB'", "datestyle": "'ISO'"}
    assert server.gucs == {"other": "'o'", "work_mem": "'64MB'", "datestyle": "'ISO'"}
    state.apply([SetCommand("work_mem", None), SetCommand("never_set", None)], server)
    assert state.client == {"datestyle": "'ISO'"}
    assert server.gucs == {"other": "'o'", "datestyle": "'ISO'"}
    assert state.replay_sql(server.gucs) == "RESET other"


def test_apply_reset_all_clears_both_sides() -> None:
    state, server = GucState(), FakeServer({"leftover": "'x'"})
    state.apply([SetCommand("a", "'1'"), SetCommand("all", None), SetCommand("b", "'2'")], server)
    assert state.client == {"b": "'2'"}
    assert server.gucs == {"b": "'2'"}


def test_apply_ignores_unsettable_and_invalid_names() -> None:
    state, server = GucState(), FakeServer()
    state.apply([SetCommand("server_version", "'1'"), SetCommand("is_superuser", "on"),
                 SetCommand("bad name", "'x'")], server)
    assert state.client == {} and server.gucs == {}


# ---- reported ----------------------------------------------------------------------------------

def test_reported_changes_are_recorded_on_both_sides() -> None:
    state, server = GucState(), FakeServer()
    state.reported([(b"application_name", b"from set_config"), (b"TimeZone", b"Asia/Tokyo")], server)
    assert state.client == {"application_name": "'from set_config'", "timezone": "'Asia/Tokyo'"}
    assert server.gucs == state.client


def test_reported_list_valued_settings_are_verbatim() -> None:
    state, server = GucState(), FakeServer()
    state.reported([(b"search_path", b'"$user", public')], server)
    assert state.client == {"search_path": '"$user", public'}


def test_reported_unsettable_and_invalid_names_are_ignored() -> None:
    state, server = GucState(), FakeServer()
    state.reported([(b"server_version", b"16.4"), (b"is_superuser", b"on"), (b"in_hot_standby", b"off"),
                    (b"server_encoding", b"UTF8"), (b"bad name", b"x")], server)
    assert state.client == {} and server.gucs == {}


def test_reported_normalized_echo_of_a_set_takes_the_server_spelling() -> None:
    # SET TimeZone TO 'utc' is echoed as ParameterStatus TimeZone=UTC.
    state, server = GucState(), FakeServer()
    state.apply([SetCommand("timezone", "'utc'"), SetCommand("search_path", '"App"')], server)
    state.reported([(b"TimeZone", b"UTC"), (b"search_path", b'"App"'), (b"work_mem", b"64MB")], server)
    # The server's spelling replaces the client's: replaying 'UTC' sets the same time zone.
    assert state.client == {"timezone": "'UTC'", "search_path": '"App"', "work_mem": "'64MB'"}
    assert server.gucs == state.client


def test_reported_real_change_replaces_the_set_value() -> None:
    state, server = GucState(), FakeServer()
    state.apply([SetCommand("timezone", "'UTC'")], server)
    state.reported([(b"TimeZone", b"Europe/Paris")], server)
    assert state.client == {"timezone": "'Europe/Paris'"} == server.gucs


def test_reported_case_only_change_of_a_case_sensitive_setting() -> None:
    state, server = GucState(), FakeServer()
    state.apply([SetCommand("application_name", "'myapp'")], server)
    state.reported([(b"application_name", b"MyApp")], server)    # e.g. set_config(..., 'MyApp', false)
    assert state.client == {"application_name": "'MyApp'"}


def test_clear() -> None:
    state, server = GucState(), FakeServer({"a": "'1'"})
    state.client = {"b": "'2'"}
    state.clear(server)
    assert state.client == {} and server.gucs == {}


# ---- welcome_parameters ------------------------------------------------------------------------

def test_welcome_parameters_overlay_startup_values() -> None:
    state = GucState()
    state.client = startup_gucs({"user": "bob", "application_name": "O'Brien", "timezone": "Europe/Paris",
                                 "work_mem": "64MB", "options": "-c search_path=app,public"})
    server = {"TimeZone": "UTC", "application_name": "", "DateStyle": "ISO, MDY", "search_path": '"$user"'}
    assert state.welcome_parameters(server) == {
        "TimeZone": "Europe/Paris", "application_name": "O'Brien", "DateStyle": "ISO, MDY",
        "search_path": "app,public"}
    assert server["TimeZone"] == "UTC"     # the cached server parameters are not modified


def test_welcome_parameters_without_client_settings_are_the_servers() -> None:
    assert GucState().welcome_parameters({"TimeZone": "UTC"}) == {"TimeZone": "UTC"}


def test_replayed_values_with_backslashes_read_back_whatever_standard_conforming_strings_says() -> None:
    assert startup_gucs({"application_name": "a\\b"}) == {"application_name": "E'a\\\\b'"}
