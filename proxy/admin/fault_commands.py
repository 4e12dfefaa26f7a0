"""The admin console's fault injection commands (SPEC §13): FAULT ADD / DEL / CLEAR and SHOW FAULTS.

    FAULT ADD kind ...     (proxy/faults/words.py for the words)
    FAULT DEL id           FAULT CLEAR [id]
    SHOW FAULTS            id, kind, argument, scope, probability, expires_in, fired

Refused with SQLSTATE 55000 while `[server] faults` is false.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..faults.injector import FaultsDisabled
from ..faults.policy import FaultSpecError
from ..faults.words import from_words
from .commands import AdminError, Done, Result
from .resultset import Table

if TYPE_CHECKING:
    from ..core.app_view import AppView as ProxyApp

FAULT_COLUMNS = [("id", "int"), ("kind", "text"), ("argument", "text"), ("scope", "text"),
                 ("probability", "float"), ("expires_in", "float"), ("fired", "int")]


async def fault(app: ProxyApp, args: list[str]) -> Result:
    """FAULT ADD ... / FAULT DEL id / FAULT CLEAR [id]."""
    injector = app.faults
    if not injector.enabled:
        raise AdminError("55000", str(FaultsDisabled()))
    verb = args[0].upper() if args else ""
    if verb == "ADD":
        try:
            added = injector.add(from_words(args[1:]))
        except FaultSpecError as exc:
            raise AdminError("22023", f"FAULT ADD: {exc}") from None
        return Done("FAULT", f"fault {added.id} added: {added.spec.kind} {added.spec.argument()} "
                             f"{added.spec.scope()}".replace("  ", " "))
    if verb in ("DEL", "CLEAR") and len(args) == 2:
        try:
            fault_id = int(args[1])
        except ValueError:
            raise AdminError("22P02", f'invalid fault id "{args[1]}" (see SHOW FAULTS)') from None
        if injector.remove(fault_id) is None:
            raise AdminError("42704", f"no fault with id {fault_id} (see SHOW FAULTS)")
        return Done("FAULT", f"fault {fault_id} cleared")
    if verb == "CLEAR" and len(args) == 1:
        return Done("FAULT", f"{injector.clear()} fault(s) cleared")
    raise AdminError("42601", "usage: FAULT ADD kind [...] | FAULT DEL id | FAULT CLEAR [id] (SHOW HELP)")


def show_faults(app: ProxyApp) -> Table:
    return Table.of(FAULT_COLUMNS, [tuple(row.values()) for row in app.faults.rows()])
