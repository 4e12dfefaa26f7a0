"""What a client's startup packet asks for (user, database, settings), decoded once per distinct packet."""

from __future__ import annotations

from dataclasses import dataclass

from .gucs import startup_gucs

# Distinct startup packets remembered; when full, the memo starts over.
KNOWN_PACKETS = 256


@dataclass(frozen=True, slots=True)
class StartupRequest:
    """The parts of a StartupMessage a client session uses. Shared by every client that sent the
    same packet: `gucs` must be copied before it is changed."""

    packet: bytes          # the whole startup packet (a key for per-packet caches)
    user: str
    database: str          # the user name when the packet names no database, as PostgreSQL does
    application_name: str
    replication: bool      # a replication connection was asked for
    gucs: dict[str, str]   # settings requested (startup_gucs); empty when options_error is set
    options_error: str     # why the settings cannot be used ("" when they can)


def startup_request(packet: bytes, params: dict[str, str]) -> StartupRequest:
    """The request of a StartupMessage (packet: its bytes, params: its decoded parameters)."""
    user = params.get("user", "")
    try:
        gucs, options_error = startup_gucs(params), ""
    except ValueError as exc:
        gucs, options_error = {}, str(exc)
    return StartupRequest(
        packet=packet,
        user=user,
        database=params.get("database") or user,
        application_name=params.get("application_name", ""),
        replication=params.get("replication", "false").lower() not in ("false", "0", "off", "no"),
        gucs=gucs,
        options_error=options_error,
    )


_known: dict[bytes, StartupRequest] = {}


def known_startup(packet: bytes) -> StartupRequest | None:
    """The request of a StartupMessage seen before whose bytes are exactly `packet`, else None.

    The fast path of a reconnecting client: one dict lookup instead of parsing the packet again.
    """
    return _known.get(packet)


def remember_startup(packet: bytes, params: dict[str, str]) -> StartupRequest:
    """startup_request(), kept for known_startup() of the same bytes."""
    request = startup_request(packet, params)
    if len(_known) >= KNOWN_PACKETS:
        _known.clear()
    _known[packet] = request
    return request



def forget_startups() -> None:
    """Empty the memo of known_startup() (tests)."""
    _known.clear()
