"""The CI-sized slice of the fuzzing (bench/fuzz/): every seed and every past crash through its target,
and the bugs the fuzzers and the fault tests found, as byte-exact regression tests."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.fuzz.targets import _SCRAM_NONCE, TARGETS, _scram_verifier
from bench.inprocess import idle_server, logged_in_session, one_instance_config
from proxy.app import ProxyApp
from proxy.config import parse_config
from proxy.engines.postgres.wire import messages as m
from proxy.engines.postgres.wire.auth import ScramServerExchange
from proxy.engines.postgres.wire.responses import QUERY, ResponseTracker, Slot
from proxy.errors import ProtocolViolation

ROOT = Path(__file__).resolve().parent.parent
CORPORA = [ROOT / "bench" / "fuzz" / "seeds", Path(__file__).resolve().parent / "fuzz_regressions"]
INPUTS = sorted((target, path) for corpus in CORPORA for target in TARGETS if (corpus / target).is_dir()
                for path in (corpus / target).iterdir())


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_target_has_seeds(target: str) -> None:
    assert any(t == target for t, _ in INPUTS), f"no seeds for {target}"


def test_seeds_and_past_crashes_pass_their_targets() -> None:
    for target, path in INPUTS:
        try:
            TARGETS[target](path.read_bytes())
        except Exception as exc:   # noqa: BLE001 - report which input
            raise AssertionError(f"{target} failed on {path.name}: {exc!r}") from exc


# ---- the bugs, one test each ----------------------------------------------------------------------


def test_malformed_parameter_status_from_a_server_marks_it_terminated_instead_of_raising() -> None:
    """pg_responses crash: ParameterStatus with no NUL-terminated name raised ValueError in feed()."""
    tracker = ResponseTracker()
    tracker.push(Slot(QUERY))
    assert tracker.feed(b"S\x00\x00\x00\x04" + m.ready_for_query(b"I")) == b"S\x00\x00\x00\x04" + m.ready_for_query()
    assert tracker.terminated and not tracker.slots


def test_scram_client_final_with_the_proof_first_is_a_protocol_violation() -> None:
    """Found writing pg_scram: `p=` before `r=`/`c=` made server_final raise ValueError (rindex)."""
    exchange = ScramServerExchange(_scram_verifier(), nonce=_SCRAM_NONCE)
    nonce = exchange.server_first(b"n,,n=,r=abc").split(b",")[0][2:]
    with pytest.raises(ProtocolViolation):
        exchange.server_final(b"p=AAAA,c=biws,r=" + nonce)


def _pg_session() -> tuple[object, object]:
    app = ProxyApp(parse_config(one_instance_config()))
    cluster = app.clusters["main"]
    instance = cluster.config.instances[0]
    cluster.choose_target = lambda *_args, **_kwargs: instance  # type: ignore[method-assign]
    session, login = logged_in_session(app, "main", "app", "app", record=True)
    server = idle_server(cluster, instance, login, "app", record=True)
    return session, server


async def test_a_bad_message_length_pending_at_release_fails_the_client_not_the_server() -> None:
    """pg_frontend crash: garbage pipelined behind a query was handed on when the query's server was
    released, and its ProtocolViolation escaped from the *server's* data_received (a traceback in the
    log, the client never told). Also: it was buffered whole (100 MB here) instead of refused."""
    session, server = _pg_session()
    session.data_received(m.query("SELECT pg_sleep(1)") + b"Q\x7f\xff")   # type: ignore[attr-defined]
    session.data_received(b"\xff\xff" + b"x" * 100_000)                     # type: ignore[attr-defined]
    transport = session.transport  # type: ignore[attr-defined]
    assert transport.closed and len(session._pending) < 200_000  # type: ignore[attr-defined]
    assert b"C08P01\x00Minvalid message length 2147483647" in transport.data
    server.data_received(m.ready_for_query(b"I"))   # type: ignore[attr-defined]  # must not raise
    await asyncio.sleep(0)


async def test_a_bad_header_completed_while_the_server_is_busy_is_refused_at_once() -> None:
    session, server = _pg_session()
    session.data_received(m.query("SELECT 1") + b"Q\x00\x00")   # type: ignore[attr-defined]
    session.data_received(b"\x00\x00")                            # type: ignore[attr-defined]  # length 0: invalid
    transport = session.transport  # type: ignore[attr-defined]
    assert transport.closed and b"C08P01\x00" in transport.data
    server.data_received(m.message(b"C", b"SELECT 1\x00") + m.ready_for_query(b"I"))  # type: ignore[attr-defined]
    await asyncio.sleep(0)


async def test_server_lost_in_the_middle_of_a_data_row_closes_the_client_without_an_error_inside_it() -> None:
    """Found by tests/test_e2e_faults.py (cut after 40 kB of a 300 kB row): the ErrorResponse was
    written into the rest of the DataRow and the client hung, reading it as row data."""
    session, server = _pg_session()
    session.data_received(m.query("SELECT repeat('x', 300000)"))  # type: ignore[attr-defined]
    row = m.message(b"D", b"\x00\x01" + (300000).to_bytes(4, "big") + b"x" * 300000)
    server.data_received(m.message(b"T", b"\x00\x01a\x00" + bytes(18)) + row[:40_000])  # type: ignore[attr-defined]
    assert server.tracker.mid_message  # type: ignore[attr-defined]
    server.connection_lost(ConnectionResetError())  # type: ignore[attr-defined]
    transport = session.transport  # type: ignore[attr-defined]
    assert transport.closed and transport.data.endswith(row[:40_000])
