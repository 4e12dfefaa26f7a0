"""Pool policy and the pool itself with a fake clock and fake connections (no servers)."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.errors import BorrowTimeout, PoolRerouted, ServerConnectFailed
from proxy.pool.policy import idle_to_close, is_retired
from proxy.pool.pool import Pool, SharedLimit

SHORT = 0.05   # real seconds, for the asyncio waits only; aging uses the fake clock
LONG = 5.0     # a borrow timeout no test should reach


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeConn:
    def __init__(self, number: int, now: float) -> None:
        self.number = number
        self.created_at = now
        self.last_used = now
        self.generation = -1      # the pool must stamp its own
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return f"<conn {self.number}{' closed' if self.closed else ''}>"


class Factory:
    """The pool's connect callable: counts opens, can fail, can be held open with a gate."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.opened: list[FakeConn] = []
        self.fail: BaseException | None = None
        self.gate: asyncio.Event | None = None
        self.in_flight = 0
        self.peak_in_flight = 0      # most connects to the server at once

    async def __call__(self) -> FakeConn:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)   # a real connect always yields at least once
            if self.gate is not None:
                await self.gate.wait()
            if self.fail is not None:
                raise self.fail
        finally:
            self.in_flight -= 1
        conn = FakeConn(len(self.opened) + 1, self.clock())
        self.opened.append(conn)
        return conn


def make_pool(max_size: int = 3, **kwargs: float) -> tuple[Pool[FakeConn], Factory, FakeClock]:
    clock = FakeClock()
    factory = Factory(clock)
    pool: Pool[FakeConn] = Pool("test", factory, max_size, clock=clock, **kwargs)  # type: ignore[arg-type]
    return pool, factory, clock


async def settle(rounds: int = 5) -> None:
    """Let tasks the pool created run (no real time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def waiting_for(pool: Pool[FakeConn], n: int) -> None:
    for _ in range(100):
        if pool.waiting() >= n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"expected {n} waiters, have {pool.waiting()}")


# ---- policy ------------------------------------------------------------------------------------

def test_is_retired_by_generation_and_lifetime() -> None:
    conn = FakeConn(1, now=100.0)
    conn.generation = 2
    assert not is_retired(conn, 100.0, 2, max_lifetime=60)
    assert is_retired(conn, 100.0, 3, max_lifetime=60)              # expired generation
    assert not is_retired(conn, 159.9, 2, max_lifetime=60)
    assert is_retired(conn, 160.0, 2, max_lifetime=60)              # lifetime reached
    assert not is_retired(conn, 1e9, 2, max_lifetime=0)              # 0 = no limit


def test_idle_to_close_oldest_used_first_keeping_min_idle() -> None:
    conns = [FakeConn(i, now=0.0) for i in range(4)]
    for c, last in zip(conns, [10.0, 20.0, 30.0, 95.0], strict=True):   # LIFO order: most recent last
        c.generation, c.last_used = 0, last
    close = idle_to_close(conns, now=100.0, generation=0, idle_timeout=50, max_lifetime=0, min_idle=2)
    assert close == conns[:2]        # three are stale but two must stay; the least recently used go
    assert idle_to_close(conns, 100.0, 0, idle_timeout=0, max_lifetime=0, min_idle=0) == []
    assert idle_to_close(conns, 100.0, 0, idle_timeout=50, max_lifetime=0, min_idle=0) == conns[:3]


def test_idle_to_close_retired_ones_go_even_below_min_idle() -> None:
    conns = [FakeConn(i, now=0.0) for i in range(3)]
    for c in conns:
        c.generation = 0
    conns[1].generation = -1
    assert idle_to_close(conns, 10.0, 0, idle_timeout=300, max_lifetime=0, min_idle=3) == [conns[1]]
    assert idle_to_close(conns, 3600.0, 0, idle_timeout=0, max_lifetime=3600, min_idle=3) == conns


# ---- borrow / release --------------------------------------------------------------------------

async def test_borrow_opens_and_release_makes_idle() -> None:
    pool, factory, clock = make_pool()
    conn = await pool.borrow(LONG)
    assert factory.opened == [conn] and conn.generation == 0
    assert pool.in_use == {conn} and pool.size == 1
    clock.advance(7)
    pool.release(conn)
    assert pool.idle == [conn] and not pool.in_use and conn.last_used == clock.now
    assert await pool.borrow(LONG) is conn and len(factory.opened) == 1
    assert pool.borrows == 2


async def test_idle_connections_are_reused_lifo() -> None:
    pool, factory, _ = make_pool()
    a, b, c = [await pool.borrow(LONG) for _ in range(3)]
    for conn in (a, b, c):
        pool.release(conn)
    assert pool.idle == [a, b, c]
    assert await pool.borrow(LONG) is c
    assert await pool.borrow(LONG) is b
    assert len(factory.opened) == 3


async def test_max_size_is_respected() -> None:
    pool, factory, _ = make_pool(max_size=2)
    held = [await pool.borrow(LONG), await pool.borrow(LONG)]
    with pytest.raises(BorrowTimeout):
        await pool.borrow(SHORT)
    assert len(factory.opened) == 2 and pool.size == 2 and pool.in_use == set(held)


async def test_borrow_timeout() -> None:
    pool, _, _ = make_pool(max_size=1)
    await pool.borrow(LONG)
    started = time.monotonic()
    with pytest.raises(BorrowTimeout, match="within 0.05s") as exc:
        await pool.borrow(SHORT)
    assert time.monotonic() - started >= SHORT * 0.9
    assert exc.value.sqlstate == "53300"
    assert pool.timeouts == 1 and not pool.waiters and pool.waiting() == 0


async def test_waiters_are_served_fifo() -> None:
    pool, factory, _ = make_pool(max_size=1)
    conn = await pool.borrow(LONG)
    served: list[str] = []

    async def borrower(name: str) -> None:
        got = await pool.borrow(LONG)
        served.append(name)
        await asyncio.sleep(0)
        pool.release(got)

    tasks = []
    for name in ("first", "second", "third"):
        tasks.append(asyncio.create_task(borrower(name)))
        await waiting_for(pool, len(tasks))
    pool.release(conn)
    await asyncio.wait_for(asyncio.gather(*tasks), LONG)
    assert served == ["first", "second", "third"]
    assert factory.opened == [conn] and pool.idle == [conn] and not pool.waiters


async def test_new_borrower_does_not_jump_the_queue() -> None:
    pool, _, _ = make_pool(max_size=1)
    conn = await pool.borrow(LONG)
    waiter = asyncio.create_task(pool.borrow(LONG))
    await waiting_for(pool, 1)
    pool.release(conn)              # handed straight to the waiter, not put back in idle
    assert pool.idle == [] and pool.in_use == {conn}
    with pytest.raises(BorrowTimeout):
        await pool.borrow(SHORT)
    assert await waiter is conn


async def test_cancelled_waiter_does_not_leak_a_connection() -> None:
    pool, _, _ = make_pool(max_size=1)
    conn = await pool.borrow(LONG)
    waiter = asyncio.create_task(pool.borrow(LONG))
    await waiting_for(pool, 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    pool.release(conn)
    assert pool.idle == [conn] and not pool.in_use and pool.waiting() == 0
    assert await pool.borrow(SHORT) is conn


async def test_waiter_cancelled_just_after_being_handed_a_connection_gives_it_back() -> None:
    pool, _, _ = make_pool(max_size=1)
    conn = await pool.borrow(LONG)
    waiter = asyncio.create_task(pool.borrow(LONG))
    await waiting_for(pool, 1)
    pool.release(conn)              # the waiter's future now holds conn, but the task has not resumed
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert pool.idle == [conn] and not pool.in_use
    assert pool.size == 1


async def test_cancelled_waiter_does_not_block_later_borrows() -> None:
    pool, _, _ = make_pool(max_size=1)
    conn = await pool.borrow(LONG)
    waiter = asyncio.create_task(pool.borrow(LONG))
    await waiting_for(pool, 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    pool.discard(conn)              # e.g. the server connection died while in use
    assert pool.size == 0
    fresh = await pool.borrow(SHORT)
    assert fresh is not conn and not fresh.closed


# ---- park: queueing without a task ---------------------------------------------------------------

async def test_park_only_when_a_borrow_would_wait() -> None:
    pool, factory, _ = make_pool(max_size=1)
    assert pool.park(LONG) is None              # room to open one: borrow() would open it
    conn = await pool.borrow(LONG)
    pool.release(conn)
    assert pool.park(LONG) is None              # one idle
    held = await pool.borrow(LONG)
    fut = pool.park(LONG)
    assert fut is not None and pool.waiting() == 1 and pool.borrows == 3
    pool.release(held)                          # handed straight to the parked waiter, FIFO
    assert fut.done() and fut.result() is held and pool.in_use == {held} and not pool.idle
    await settle()
    assert len(factory.opened) == 1 and pool.wait_seconds_total >= 0


async def test_park_queues_behind_other_waiters_and_serves_fifo() -> None:
    pool, _, _ = make_pool(max_size=1)
    held = await pool.borrow(LONG)
    borrower = asyncio.create_task(pool.borrow(LONG))
    await waiting_for(pool, 1)
    parked = pool.park(LONG)
    assert parked is not None and pool.waiting() == 2
    pool.release(held)
    assert await borrower is held and not parked.done()
    pool.release(held)
    assert parked.result() is held


async def test_parked_waiter_times_out_with_borrow_timeout() -> None:
    pool, _, _ = make_pool(max_size=1)
    await pool.borrow(LONG)
    fut = pool.park(SHORT)
    assert fut is not None
    with pytest.raises(BorrowTimeout, match="within 0.05s"):
        await asyncio.wait_for(fut, LONG)
    assert pool.timeouts == 1 and not pool.waiters


async def test_cancelled_parked_waiter_is_skipped_by_release() -> None:
    pool, _, _ = make_pool(max_size=1)
    conn = await pool.borrow(LONG)
    fut = pool.park(LONG)
    assert fut is not None
    fut.cancel()
    await settle()
    pool.release(conn)
    assert pool.idle == [conn] and not pool.in_use and pool.waiting() == 0


async def test_park_refused_beside_sibling_pools_and_when_closed() -> None:
    clock = FakeClock()
    shared = SharedLimit(1)
    first: Pool[FakeConn] = Pool("a", Factory(clock), 1, clock=clock, shared=shared)  # type: ignore[arg-type]
    Pool("b", Factory(clock), 1, clock=clock, shared=shared)  # type: ignore[arg-type]
    await first.borrow(LONG)
    assert first.park(LONG) is None             # siblings share the limit: borrow() handles the room
    alone, _, _ = make_pool(max_size=1)
    await alone.borrow(LONG)
    alone.close()
    assert alone.park(LONG) is None


async def test_closing_pool_fails_parked_waiters_with_server_connect_failed() -> None:
    pool, _, _ = make_pool(max_size=1)
    await pool.borrow(LONG)
    fut = pool.park(LONG)
    assert fut is not None
    pool.close()
    with pytest.raises(ServerConnectFailed, match="closing"):
        await fut


async def test_rerouted_waiters_fail_with_pool_rerouted_and_the_pool_keeps_working() -> None:
    pool, _, _ = make_pool(max_size=1)
    held = await pool.borrow(LONG)
    parked = pool.park(LONG)
    waiting = asyncio.ensure_future(pool.borrow(LONG))
    await waiting_for(pool, 2)
    assert parked is not None and pool.reroute_waiters("gone") == 2
    with pytest.raises(PoolRerouted, match="gone"):
        await parked
    with pytest.raises(PoolRerouted):
        await waiting
    assert isinstance(PoolRerouted("x"), ServerConnectFailed)   # a parked session borrows again on it
    assert pool.waiting() == 0 and pool.reroute_waiters("again") == 0
    pool.release(held)
    assert await pool.borrow(LONG) is held


# ---- aging and maintenance ---------------------------------------------------------------------

async def test_maintain_closes_idle_past_idle_timeout_keeping_min_idle() -> None:
    pool, factory, clock = make_pool(max_size=5, min_idle=1, idle_timeout=60, max_lifetime=0)
    a, b, c = [await pool.borrow(LONG) for _ in range(3)]
    pool.release(a)
    clock.advance(10)
    pool.release(b)
    clock.advance(10)
    pool.release(c)
    clock.advance(45)               # a: 65 s idle, b: 55 s, c: 45 s
    pool.maintain()
    assert a.closed and pool.idle == [b, c]
    clock.advance(100)              # all stale now, but min_idle keeps the most recently used
    pool.maintain()
    await settle()
    assert b.closed and not c.closed and pool.idle == [c]
    assert len(factory.opened) == 3


async def test_maintain_retires_past_max_lifetime_and_refills_min_idle() -> None:
    pool, factory, clock = make_pool(max_size=5, min_idle=2, idle_timeout=0, max_lifetime=100)
    a, b = await pool.borrow(LONG), await pool.borrow(LONG)
    pool.release(a)
    pool.release(b)
    clock.advance(99)
    pool.maintain()
    assert pool.idle == [a, b] and not a.closed
    clock.advance(1)
    pool.maintain()
    assert a.closed and b.closed
    await settle()
    assert len(factory.opened) == 4 and pool.idle == factory.opened[2:]
    assert all(c.created_at == clock.now and not c.closed for c in pool.idle)


async def test_maintain_opens_min_idle_but_never_past_max_size() -> None:
    pool, factory, _ = make_pool(max_size=3, min_idle=5)
    held = await pool.borrow(LONG)
    pool.maintain()
    await settle()
    assert len(factory.opened) == 3 and len(pool.idle) == 2 and pool.in_use == {held}
    assert pool.size == 3
    pool.maintain()                  # already full: nothing more to open
    await settle()
    assert len(factory.opened) == 3


async def test_min_idle_that_cannot_be_opened_is_retried_with_a_backoff() -> None:
    """A database that does not exist (a configured pool) or a down instance: 1 s, 2 s, 4 s ... apart
    (at most MIN_IDLE_RETRY_MAX), not on every maintenance tick; one success resets it."""
    pool, factory, clock = make_pool(max_size=5, min_idle=2)
    factory.fail = ServerConnectFailed("database does not exist")
    pool.maintain()
    await settle()
    assert pool.connect_failures == 2 and pool.size == 0   # both min_idle opens of the round failed
    for wait, tries in ((0.5, 2), (0.6, 4), (1.5, 4), (0.6, 6), (3.9, 6), (0.2, 8)):
        clock.advance(wait)
        pool.maintain()
        await settle()
        assert pool.connect_failures == tries, (wait, tries)
    factory.fail = None
    clock.advance(8.1)
    pool.maintain()
    await settle()
    assert len(pool.idle) == 2 and pool._idle_failures == 0


async def test_maintain_counts_opens_in_flight() -> None:
    pool, factory, _ = make_pool(max_size=5, min_idle=2)
    factory.gate = asyncio.Event()
    pool.maintain()
    await settle()
    assert pool.opening == 2
    pool.maintain()                  # the two in flight count toward min_idle
    factory.gate.set()
    await settle()
    assert len(factory.opened) == 2 and len(pool.idle) == 2


async def test_maintain_then_borrow_in_the_same_tick_stays_within_max_size() -> None:
    pool, factory, _ = make_pool(max_size=2, min_idle=2)
    pool.maintain()                  # schedules two opens for min_idle
    conn = await pool.borrow(LONG)   # its connect starts before those tasks do
    await settle()
    assert conn in factory.opened
    assert factory.peak_in_flight <= pool.max_size


async def test_borrow_skips_idle_connections_past_max_lifetime() -> None:
    pool, factory, clock = make_pool(max_lifetime=100)
    old = await pool.borrow(LONG)
    pool.release(old)
    clock.advance(100)
    fresh = await pool.borrow(LONG)
    assert fresh is not old and old.closed and factory.opened == [old, fresh]


async def test_release_retires_a_connection_past_max_lifetime() -> None:
    pool, _, clock = make_pool(max_lifetime=100)
    conn = await pool.borrow(LONG)
    clock.advance(150)
    pool.release(conn)
    assert conn.closed and pool.idle == [] and pool.size == 0


async def test_expire_closes_idle_now_and_borrowed_on_release() -> None:
    pool, factory, _ = make_pool()
    idle, borrowed = await pool.borrow(LONG), await pool.borrow(LONG)
    pool.release(idle)
    pool.expire()
    assert pool.generation == 1
    assert idle.closed and pool.idle == []
    assert not borrowed.closed          # still in use: left alone until it comes back
    pool.release(borrowed)
    assert borrowed.closed and pool.idle == [] and pool.size == 0
    fresh = await pool.borrow(LONG)
    assert fresh is factory.opened[-1] and fresh.generation == 1


async def test_expire_also_retires_a_connection_being_opened() -> None:
    pool, factory, _ = make_pool()
    factory.gate = asyncio.Event()
    borrower = asyncio.create_task(pool.borrow(LONG))
    await settle()
    assert pool.opening == 1
    pool.expire()                    # e.g. failover: connections to the old server must all go
    factory.gate.set()
    conn = await borrower
    pool.release(conn)
    assert conn.closed


# ---- discard, connect failures, close ----------------------------------------------------------

async def test_discard_frees_capacity_and_opens_for_a_waiter() -> None:
    pool, factory, _ = make_pool(max_size=1)
    dead = await pool.borrow(LONG)
    waiter = asyncio.create_task(pool.borrow(LONG))
    await waiting_for(pool, 1)
    pool.discard(dead)
    assert dead.closed
    fresh = await asyncio.wait_for(waiter, LONG)
    assert fresh is not dead and factory.opened == [dead, fresh]
    assert pool.in_use == {fresh} and pool.size == 1


async def test_discard_an_idle_connection() -> None:
    pool, _, _ = make_pool()
    conn = await pool.borrow(LONG)
    pool.release(conn)
    pool.discard(conn)
    assert conn.closed and pool.idle == [] and pool.size == 0


async def test_closed_idle_connection_is_skipped_on_borrow() -> None:
    pool, factory, _ = make_pool()
    conn = await pool.borrow(LONG)
    pool.release(conn)
    conn.close()                     # the server went away while it sat idle
    fresh = await pool.borrow(LONG)
    assert fresh is not conn and len(factory.opened) == 2


@pytest.mark.parametrize("error", [OSError("connection refused"), TimeoutError()])
async def test_connect_failure_raises_and_does_not_leak_capacity(error: Exception) -> None:
    pool, factory, _ = make_pool(max_size=1)
    factory.fail = error
    with pytest.raises(ServerConnectFailed, match="could not connect to server for pool test") as exc:
        await pool.borrow(LONG)
    assert exc.value.__cause__ is error
    assert pool.size == 0 and pool.opening == 0 and pool.connect_failures == 1
    factory.fail = None
    conn = await pool.borrow(SHORT)           # the one slot is still available
    assert factory.opened == [conn]


async def test_connect_proxy_error_passes_through_unchanged() -> None:
    pool, factory, _ = make_pool(max_size=1)
    refused = ServerConnectFailed("server refused login: password authentication failed", "28P01")
    factory.fail = refused
    with pytest.raises(ServerConnectFailed) as exc:
        await pool.borrow(LONG)
    assert exc.value is refused and exc.value.sqlstate == "28P01"
    assert pool.size == 0 and pool.connect_failures == 1


async def test_connect_failure_for_a_waiter_is_reported_to_it() -> None:
    pool, factory, _ = make_pool(max_size=1)
    dead = await pool.borrow(LONG)
    waiter = asyncio.create_task(pool.borrow(LONG))
    await waiting_for(pool, 1)
    factory.fail = OSError("no route to host")
    pool.discard(dead)
    with pytest.raises(ServerConnectFailed, match="no route to host"):
        await asyncio.wait_for(waiter, LONG)
    assert pool.size == 0 and not pool.waiters


async def test_close_fails_waiters_and_refuses_borrows() -> None:
    pool, _, _ = make_pool(max_size=1)
    held = await pool.borrow(LONG)
    waiter = asyncio.create_task(pool.borrow(LONG))
    await waiting_for(pool, 1)
    pool.close()
    with pytest.raises(ServerConnectFailed, match="closing"):
        await waiter
    with pytest.raises(ServerConnectFailed, match="closed"):
        await pool.borrow(LONG)
    pool.release(held)
    assert held.closed and pool.size == 0


# ---- pools sharing one limit (MySQL login variants of one instance, user and database) -----------

def make_siblings(max_size: int = 2) -> tuple[Pool[FakeConn], Pool[FakeConn], Factory, Factory]:
    clock = FakeClock()
    shared = SharedLimit(max_size)
    fa, fb = Factory(clock), Factory(clock)
    a: Pool[FakeConn] = Pool("a", fa, max_size, clock=clock, shared=shared)  # type: ignore[arg-type]
    b: Pool[FakeConn] = Pool("b", fb, max_size, clock=clock, shared=shared)  # type: ignore[arg-type]
    return a, b, fa, fb


async def test_siblings_together_stay_within_the_shared_limit() -> None:
    a, b, fa, fb = make_siblings(2)
    held = [await a.borrow(LONG), await a.borrow(LONG)]
    waiter = asyncio.ensure_future(b.borrow(LONG))
    await waiting_for(b, 1)
    assert len(fb.opened) == 0 and a.size + b.size == 2
    # A connection of `a` coming back while only `b` has a waiter: closed, and `b` opens its own.
    a.release(held[0])
    conn = await asyncio.wait_for(waiter, 1)
    assert held[0].closed and conn is fb.opened[0] and a.size + b.size == 2
    # With nobody waiting in `b`, `a` keeps what comes back.
    a.release(held[1])
    assert a.idle == [held[1]] and not held[1].closed
    b.release(conn)
    assert a.size + b.size == 2


async def test_a_sibling_at_the_limit_closes_an_idle_connection_of_another() -> None:
    a, b, fa, fb = make_siblings(2)
    first, second = await a.borrow(LONG), await a.borrow(LONG)
    a.release(first)
    a.release(second)
    assert a.size == 2
    conn = await asyncio.wait_for(b.borrow(LONG), 1)
    assert conn is fb.opened[0] and first.closed and a.size == 1 and b.size == 1
    with pytest.raises(BorrowTimeout):
        await _second_borrow_times_out(a, b)


async def _second_borrow_times_out(a: Pool[FakeConn], b: Pool[FakeConn]) -> None:
    """`a` holds its last connection in use: `b` (already holding one) cannot grow past the limit."""
    held = await a.borrow(LONG)
    try:
        await b.borrow(SHORT)
    finally:
        a.release(held)


async def test_resize_changes_the_shared_limit() -> None:
    a, b, fa, fb = make_siblings(1)
    held = await a.borrow(LONG)
    a.resize(2)
    conn = await asyncio.wait_for(b.borrow(LONG), 1)
    assert a.size + b.size == 2 and not held.closed
    a.release(held)
    b.release(conn)
