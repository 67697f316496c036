"""The agent's scheduler on a fake clock: order, no lost input, idle-timer rate, no overlap."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest

from ran.agent.clock import FakeClock, RealClock
from ran.agent.config import AgentError, SchedulerConfig
from ran.agent.events import Event
from ran.agent.scheduler import Scheduler


class StubAgent:
    """Records every request it runs (kind, text, fake time, real start/end) and checks
    that no two run at once; ``work`` real seconds per pass."""

    def __init__(self, clock, work: float = 0.0, fail_on: str | None = None):
        self.clock, self.work, self.fail_on = clock, work, fail_on
        self.counters = SimpleNamespace(passes=0)
        self.listeners, self.calls = [], []
        self.active, self.overlaps = 0, 0
        self._lock = threading.Lock()

    def subscribe(self, fn):
        self.listeners.append(fn)

    def step(self, req):
        with self._lock:
            self.active += 1
            self.overlaps += self.active > 1
        try:
            start = time.perf_counter()
            if self.work:
                time.sleep(self.work)
            if self.fail_on is not None and req.text == self.fail_on:
                raise RuntimeError("boom")
            self.calls.append((req.kind, req.text, self.clock.now(), start, time.perf_counter()))
            if req.kind != "reset":
                self.counters.passes += 1
            kind = {"message": "silent", "idle": "idle", "review": "silent", "reset": "reset"}[
                req.kind
            ]
            ev = Event(kind, self.counters.passes, data={"seq": req.seq, "text": req.text})
            for fn in self.listeners:
                fn(ev)
            return [ev]
        finally:
            with self._lock:
                self.active -= 1


async def _start(sched):
    task = asyncio.create_task(sched.run())
    await sched.clock.settle() if isinstance(sched.clock, FakeClock) else asyncio.sleep(0)
    return task


async def _finish(sched, task):
    sched.stop()
    await task
    sched.close()


def test_messages_run_in_arrival_order_before_any_idle_tick():
    async def main():
        clock = FakeClock()
        agent = StubAgent(clock)
        sched = Scheduler(agent, SchedulerConfig(idle_every=1.0), clock)
        task = await _start(sched)
        for i in range(5):
            sched.submit(f"m{i}")
        sched.request_idle(2)
        sched.submit("m5")
        await clock.advance(0.0)  # no time passes: only the queue runs
        kinds = [(k, t) for k, t, *_ in agent.calls]
        assert kinds == [("message", f"m{i}") for i in range(5)] + [("idle", None)] * 2 + [
            ("message", "m5")
        ]
        await clock.advance(1.0)  # now the idle timer fires once
        assert [k for k, *_ in agent.calls[8:]] == ["idle"]
        await _finish(sched, task)

    asyncio.run(main())


def test_a_burst_of_1000_messages_loses_nothing_and_passes_never_overlap():
    async def main():
        clock = FakeClock()
        agent = StubAgent(clock, work=0.0002)
        sched = Scheduler(agent, SchedulerConfig(idle_every=0.5, review_every=2.0), clock)
        stream = sched.events()
        got = []

        async def read():
            async for ev in stream:
                got.append(ev)

        reader = asyncio.create_task(read())
        task = await _start(sched)
        for i in range(1000):
            sched.submit(f"msg {i}")
            if i % 97 == 0:
                await asyncio.sleep(0.001)  # let passes start: later input arrives during them
        await clock.advance(0.0)
        await _finish(sched, task)
        await reader
        texts = [t for k, t, *_ in agent.calls if k == "message"]
        assert texts == [f"msg {i}" for i in range(1000)]
        assert [k for k, *_ in agent.calls] == ["message"] * 1000  # no tick while input waits
        assert agent.overlaps == 0 and sched.max_concurrent == 1
        spans = sorted((s, e) for *_, s, e in agent.calls)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
        assert [ev.data["text"] for ev in got] == texts  # every event reached the async reader
        assert not sched.queue

    asyncio.run(main())


def test_idle_ticks_come_at_the_configured_rate():
    async def main():
        clock = FakeClock()
        agent = StubAgent(clock)
        sched = Scheduler(agent, SchedulerConfig(idle_every=2.0), clock)
        task = await _start(sched)
        await clock.advance(100.0)
        times = [t for k, _, t, *_ in agent.calls]
        assert times == [2.0 * i for i in range(1, 51)]
        sched.submit("hello")  # a message restarts the idle timer
        await clock.advance(1.0)
        await clock.advance(1.5)
        assert [(k, t) for k, _, t, *_ in agent.calls[50:]] == [("message", 100.0), ("idle", 102.0)]
        await _finish(sched, task)

    asyncio.run(main())


def test_review_timer_counts_from_the_last_prompted_pass_or_review():
    async def main():
        clock = FakeClock()
        agent = StubAgent(clock)
        sched = Scheduler(agent, SchedulerConfig(idle_every=2.0, review_every=5.0), clock)
        task = await _start(sched)
        await clock.advance(12.0)
        got = [(k, t) for k, _, t, *_ in agent.calls]
        assert got == [("idle", 2.0), ("idle", 4.0), ("review", 5.0), ("idle", 7.0), ("idle", 9.0),
                       ("review", 10.0), ("idle", 12.0)]  # fmt: skip
        await _finish(sched, task)

    asyncio.run(main())


def test_input_during_a_pass_waits_for_it_and_is_handled_next():
    async def main():
        clock = FakeClock()
        agent = StubAgent(clock, work=0.05)
        sched = Scheduler(agent, SchedulerConfig(idle_every=1.0), clock)
        task = await _start(sched)
        first = sched.submit("first")
        while sched.in_flight is None:
            await asyncio.sleep(0.001)
        second = sched.submit("second")  # arrives while "first" runs
        assert (first.ahead, second.ahead) == (0, 1)  # the pass in flight goes first
        await clock.advance(0.0)
        assert [t for _, t, *_ in agent.calls] == ["first", "second"]
        assert agent.calls[1][3] >= agent.calls[0][4]  # started after the first one ended
        await _finish(sched, task)

    asyncio.run(main())


def test_a_failing_pass_is_reported_and_the_scheduler_keeps_running():
    async def main():
        clock = FakeClock()
        agent = StubAgent(clock, fail_on="bad")
        sched = Scheduler(agent, SchedulerConfig(idle_every=None), clock, threaded=False)
        stream = sched.events()
        task = await _start(sched)
        for text in ("ok 1", "bad", "ok 2"):
            sched.submit(text)
        await clock.advance(0.0)
        await _finish(sched, task)
        events = [ev async for ev in stream]
        assert [t for _, t, *_ in agent.calls] == ["ok 1", "ok 2"]
        warning = next(ev for ev in events if ev.kind == "warning")
        assert "the message pass failed (RuntimeError: boom)" in warning.text
        assert sched.errors == 1

    asyncio.run(main())


def test_real_clock_ticks_and_stop_ends_the_event_stream():
    async def main():
        agent = StubAgent(RealClock())
        sched = Scheduler(agent, SchedulerConfig(idle_every=0.01))
        stream = sched.events()
        task = asyncio.create_task(sched.run())
        await asyncio.sleep(0.2)
        await _finish(sched, task)
        events = [ev async for ev in stream]
        assert len(events) >= 3 and {ev.kind for ev in events} == {"idle"}

    asyncio.run(main())


def test_fake_clock_and_config_refuse_bad_values():
    with pytest.raises(AgentError, match="idle_every must be a positive number"):
        SchedulerConfig(idle_every=0)
    with pytest.raises(AgentError, match="review_every"):
        SchedulerConfig(review_every=float("nan"))

    async def main():
        with pytest.raises(ValueError, match="cannot go back"):
            await FakeClock().advance(-1)

    asyncio.run(main())
