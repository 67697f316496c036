"""The agent's asyncio scheduler: when to run a pass, prompted or unprompted, one at a time.

:class:`Scheduler` keeps a FIFO queue of requests. A message (:meth:`submit`)
is queued and handled at the next tick, in arrival order, never dropped: one
prompted pass per message. When the queue is empty the scheduler waits on its
clock for the next timer (:class:`ran.agent.config.SchedulerConfig`): an idle
tick after ``idle_every`` seconds without a pass, a review pass after
``review_every`` seconds without a prompted pass or review. Input that arrives
meanwhile wakes it at once; input that arrives during a pass waits for that pass
to finish.

Passes run on one worker thread (the event loop stays free to take input while
the model computes) and are awaited one after the other, so two passes never
overlap; :attr:`Scheduler.max_concurrent` records it. Every event of the agent
reaches ``async for ev in scheduler.events()`` readers. A pass that raises is
reported as a ``warning`` event and the scheduler keeps running.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from ran.agent.clock import RealClock
from ran.agent.config import SchedulerConfig
from ran.agent.events import Event, EventHub
from ran.agent.runtime import Request


class Scheduler:
    """Runs an agent's passes from a queue and two idle timers (see the module docstring).

    Parameters
    ----------
    agent : ReservoirAgent (or anything with ``step(Request)``, ``subscribe(fn)`` and
        ``counters.passes``).
    config : SchedulerConfig, optional
    clock : RealClock or FakeClock, optional
    threaded : bool
        Run passes on a worker thread (default); False runs them on the loop itself.
    """

    def __init__(self, agent, config: SchedulerConfig | None = None, clock=None, threaded=True):
        self.agent = agent
        self.config = config or SchedulerConfig()
        self.clock = clock or RealClock()
        self.hub = EventHub()
        self.queue: deque[Request] = deque()
        self._wake = asyncio.Event()
        self._stop = False
        self._seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ran-agent") if threaded else None
        self.in_flight: Request | None = None
        self.running = 0  # passes running right now (0 or 1)
        self.max_concurrent = 0  # the most passes that ever ran at once
        self.passes = 0  # requests executed by this scheduler
        self.errors = 0  # passes that raised
        self.last_pass = self.last_text = None  # clock times the timers count from
        agent.subscribe(self.hub.publish)

    # ------------------------------------------------------------------ input
    def _enqueue(self, kind: str, text=None) -> Request:
        self._seq += 1
        ahead = sum(r.kind != "reset" for r in self.queue)  # passes that must run before it
        if self.in_flight is not None and self.in_flight.kind != "reset":
            ahead += 1
        req = Request(kind, text, time.perf_counter(), ahead, self._seq)
        self.queue.append(req)
        self._wake.set()
        return req

    def submit(self, message) -> Request:
        """Queue a message (call on the loop's thread); it runs at the next tick, in order."""
        return self._enqueue("message", message)

    def submit_threadsafe(self, message) -> None:
        """Queue a message from another thread (e.g. a stdin reader)."""
        if self._loop is None:
            raise RuntimeError("the scheduler is not running; start run() first.")
        self._loop.call_soon_threadsafe(self.submit, message)

    def request_idle(self, n: int = 1) -> None:
        """Queue ``n`` idle ticks behind the queued input (scripted conversations)."""
        for _ in range(n):
            self._enqueue("idle")

    def request_review(self) -> None:
        """Queue one review pass behind the queued input."""
        self._enqueue("review")

    def request_reset(self) -> None:
        """Queue a reset of the reservoir state (the reset control) behind the queued input."""
        self._enqueue("reset")

    def events(self):
        """Async iterator over every event from now on (ends when the scheduler stops)."""
        return self.hub.stream()

    def stop(self) -> None:
        """Stop after the pass in flight (requests still queued stay in :attr:`queue`)."""
        self._stop = True
        self._wake.set()

    # ------------------------------------------------------------------ timers
    def next_timer(self) -> tuple[float, str | None]:
        """``(deadline, kind)`` of the next unprompted pass (``inf, None``: no timer)."""
        timers = []
        if self.config.idle_every is not None:
            timers.append((self.last_pass + self.config.idle_every, "idle"))
        if self.config.review_every is not None:
            timers.append((self.last_text + self.config.review_every, "review"))
        return min(timers, key=lambda t: t[0]) if timers else (math.inf, None)

    # ------------------------------------------------------------------ the loop
    async def run(self, until_empty: bool = False) -> None:
        """Run passes until :meth:`stop` (or, with ``until_empty``, until the queue is empty)."""
        self._loop = asyncio.get_running_loop()
        self.hub.bind(self._loop)
        self._wake = asyncio.Event()  # bound to this loop (run() may be called from several)
        self._stop = False
        self.last_pass = self.last_text = self.clock.now()
        while not self._stop:
            if self.queue:
                await self._execute(self.queue.popleft())
                continue
            if until_empty:
                return
            deadline, kind = self.next_timer()
            self._wake.clear()
            if await self.clock.wait(self._wake, deadline) or kind is None:
                continue
            self._seq += 1
            await self._execute(Request(kind, None, time.perf_counter(), None, self._seq))
        self.hub.close()

    async def _execute(self, req: Request) -> None:
        before_pass = self.last_pass
        self.in_flight, self.running = req, self.running + 1
        self.max_concurrent = max(self.max_concurrent, self.running)
        try:
            if self._executor is not None:
                await self._loop.run_in_executor(self._executor, self.agent.step, req)
            else:
                self.agent.step(req)
        except Exception as err:  # noqa: BLE001 - the agent keeps running, the error is reported
            self.errors += 1
            text = f"the {req.kind} pass failed ({type(err).__name__}: {err}); the agent keeps running."
            self.hub.publish(Event("warning", self.agent.counters.passes, text=text))
        finally:
            self.running -= 1
            self.in_flight = None
            self.passes += 1
        now = self.clock.now()
        self.last_pass = now
        if req.kind in ("message", "review"):
            self.last_text = now
        if req.kind == "reset":  # not a pass: the timers keep counting
            self.last_pass = before_pass

    def close(self) -> None:
        """Release the worker thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
