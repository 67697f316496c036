"""Clocks for the agent's scheduler: the real one and a fake one that tests move by hand.

The scheduler asks a clock two things: ``now()`` (seconds) and ``await wait(event,
deadline)``: sleep until ``event`` is set (True) or the clock reaches
``deadline`` (False). :class:`RealClock` uses the event loop's monotonic time.
:class:`FakeClock` never moves on its own: ``await clock.advance(dt)`` fires every
deadline up to ``now + dt`` in order, and after each one waits until the
scheduler is waiting on the clock again (its pass finished, whatever thread ran
it), so a test sees exactly the passes a real clock would have produced, in
fake seconds and real milliseconds.
"""

from __future__ import annotations

import asyncio
import math
import time


class RealClock:
    """Monotonic wall time (``time.monotonic``)."""

    def now(self) -> float:
        return time.monotonic()

    async def wait(self, event: asyncio.Event, deadline: float) -> bool:
        if event.is_set():
            return True
        timeout = None if math.isinf(deadline) else max(0.0, deadline - self.now())
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return event.is_set()
        return True


class FakeClock:
    """A clock that moves only when :meth:`advance` is awaited (see the module docstring)."""

    def __init__(self, start: float = 0.0, settle_timeout: float = 60.0):
        self.t = float(start)
        self.settle_timeout = settle_timeout  # real seconds to wait for the scheduler to settle
        self._sleepers: list[list] = []  # [deadline, future, event] of the coroutines waiting on us

    def now(self) -> float:
        return self.t

    @property
    def waiting(self) -> int:
        """How many coroutines wait on this clock right now (a waiter whose event is set is
        about to wake up, so it does not count)."""
        return sum(1 for _, fut, ev in self._sleepers if not fut.done() and not ev.is_set())

    async def wait(self, event: asyncio.Event, deadline: float) -> bool:
        if event.is_set():
            return True
        if deadline <= self.t:
            return False
        fut = asyncio.get_running_loop().create_future()
        entry = [deadline, fut, event]
        self._sleepers.append(entry)
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({waiter, fut}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._sleepers.remove(entry)
            waiter.cancel()
            if not fut.done():
                fut.cancel()
        return event.is_set()

    async def settle(self) -> None:
        """Return once something waits on the clock (the scheduler's passes are done)."""
        t0 = time.monotonic()
        while self.waiting == 0:
            if time.monotonic() - t0 > self.settle_timeout:
                raise TimeoutError(
                    f"nothing waited on the fake clock within {self.settle_timeout} s; "
                    "is the scheduler running?"
                )
            await asyncio.sleep(0.0005)

    async def advance(self, dt: float) -> None:
        """Move time forward by ``dt`` seconds, firing every deadline on the way in order."""
        if dt < 0:
            raise ValueError(f"a clock cannot go back; got dt = {dt}.")
        target = self.t + dt
        while True:
            await self.settle()
            due = [
                s
                for s in self._sleepers
                if not s[1].done() and not s[2].is_set() and s[0] <= target
            ]
            if not due:
                break
            entry = min(due, key=lambda s: s[0])
            self.t = max(self.t, entry[0])
            entry[1].set_result(None)
            await asyncio.sleep(0)
        self.t = target
