"""Fault injection in a client's life (SPEC §13): what latency, error, drop and refuse faults do to a session.

Called by ClientSessionCore only while its cluster has faults (`cluster.faults` is the injector):

- `intercept` when a transaction starts (the client sent work and has no server): a latency fault
  holds the work for its delay, then the transaction goes on; an error fault answers the first
  batch with the fault's error as a server would (the rest of the pending work goes on); a drop
  fault lets the transaction run and closes the client's connection in the middle of the first
  reply (half of its first bytes are sent).
- `refuse` at login: a refuse fault fails the login with SQLSTATE 08004 / errno 1040.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING

from ..faults.injector import injected_error

if TYPE_CHECKING:
    from ..faults.injector import FaultInjector
    from .session import ClientSessionCore


def intercept(session: ClientSessionCore, injector: FaultInjector) -> bool:
    """A transaction starts with session._pending: True if a fault took the work over for now."""
    if session._fault_passed:   # its latency was served: the transaction goes on
        session._fault_passed = False
        return False
    table = injector.table
    statement = None
    if table.needs_statement:
        sql = session._first_statement(session._pending)
        statement = sql.decode("utf-8", "replace") if sql is not None else None
    instance = None
    if table.needs_instance:   # where the transaction would go now (borrow decides again, the same way)
        route = session._route(session._pending)
        target = session.cluster.choose_target(session.endpoint, route, session._min_position(route))
        instance = str(target) if target is not None else None
    login = session.login
    fault = injector.transaction_fault(session.cluster.name, session.endpoint.name,
                                       login.user.name if login is not None else None, instance, statement,
                                       session.peer)
    if fault is None:
        return False
    kind = fault.spec.kind
    loop = asyncio.get_running_loop()
    if kind == "latency":
        session._fault_timer = loop.call_later(fault.spec.latency, _delayed, session)
        return True
    if kind == "error":
        session._fail_batch(injected_error(fault), first_batch_only=True)
        if session._pending:
            loop.call_soon(session._need_server)   # the next batch is another transaction
        return True
    # drop: this session's writes to its client go through _write_then_drop from now on
    session.write = partial(_write_then_drop, session, fault.id)  # type: ignore[method-assign]
    return False


def _delayed(session: ClientSessionCore) -> None:
    session._fault_timer = None
    session._fault_passed = True
    session._need_server()


def _write_then_drop(session: ClientSessionCore, fault_id: int, data: bytes) -> None:
    transport = session.transport
    if transport is None or transport.is_closing():
        return
    transport.write(data[:len(data) // 2])
    session.close(f"connection dropped by fault {fault_id}")


def refuse(session: ClientSessionCore, user_name: str) -> None:
    """At login: raise the refusal if a refuse fault fires for this connection."""
    injector = session.cluster.faults
    if injector is None:
        return
    refusal = injector.refusal(session.cluster.name, session.endpoint.name, user_name, session.peer)
    if refusal is not None:
        session.app.refused(session, "fault")
        raise refusal
