"""Scripted conversations: a text file of messages and commands played through the scheduler.

One line per item; blank lines and lines starting with ``#`` are skipped::

    I had a long day at the market. The secret word is castle.
    /idle 3            three idle ticks (u = 0)
    /review            one pass over the context buffer
    /wait 0.5          let 0.5 s pass on the scheduler's clock (its timers may fire)
    /reset             forget the reservoir state (the reset control)
    Agent, what was the secret word? It was

Everything else is a message. Items are queued in order, so a script gives the
same passes whatever the machine's speed (``/wait`` aside). :func:`play` runs
a script on a running scheduler; :func:`run_script` does it all synchronously
and returns the events.
"""

from __future__ import annotations

import asyncio
import threading

from ran.agent.clock import FakeClock
from ran.agent.config import AgentError, SchedulerConfig
from ran.agent.scheduler import Scheduler

COMMANDS = ("/idle", "/review", "/wait", "/reset")


def parse_script(text) -> list[tuple[str, object]]:
    """``[(op, arg), ...]`` with op in message, idle, review, wait, reset.

    ``text`` is a string or a list of lines; a bad command raises AgentError naming its line.
    """
    lines = text.splitlines() if isinstance(text, str) else list(text)
    items: list[tuple[str, object]] = []
    for no, raw in enumerate(lines, 1):
        line = raw.rstrip("\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        head, _, rest = line.strip().partition(" ")
        if not head.startswith("/") or head.startswith("//"):
            items.append(("message", line[1:] if head.startswith("//") else line))
            continue
        if head not in COMMANDS:
            raise AgentError(
                f"line {no}: unknown command {head!r}; commands are {', '.join(COMMANDS)}."
            )
        try:
            if head == "/idle":
                n = int(rest or 1)
                if n < 0:
                    raise ValueError
                items.append(("idle", n))
            elif head == "/wait":
                items.append(("wait", float(rest)))
            else:
                items.append((head[1:], None))
        except ValueError:
            raise AgentError(
                f"line {no}: {head} needs a non-negative number, got {rest!r}."
            ) from None
    return items


async def drained(scheduler: Scheduler, poll: float = 0.001) -> None:
    """Return when the queue is empty and no pass is in flight."""
    while scheduler.queue or scheduler.in_flight is not None:
        await asyncio.sleep(poll)


def queue_item(scheduler: Scheduler, op: str, arg) -> bool:
    """Queue one parsed script item (message, idle, review, reset) on ``scheduler``;
    False for any other item (``wait`` needs the event loop: :func:`play` handles it)."""
    actions = {
        "message": lambda: scheduler.submit(arg),
        "idle": lambda: scheduler.request_idle(arg),
        "review": scheduler.request_review,
        "reset": scheduler.request_reset,
    }
    if op not in actions:
        return False
    actions[op]()
    return True


async def play(scheduler: Scheduler, items) -> None:
    """Queue the items of a parsed script on a running scheduler, in order, and wait for
    every pass they ask for (``/wait`` first lets the queue drain)."""
    for op, arg in items:
        if queue_item(scheduler, op, arg):
            continue
        if op != "wait":
            raise AgentError(f"unknown script item {op!r}.")
        await drained(scheduler)
        if isinstance(scheduler.clock, FakeClock):
            await scheduler.clock.advance(arg)
        else:
            await asyncio.sleep(arg)
    await drained(scheduler)


async def play_running(scheduler: Scheduler, items) -> None:
    """Run ``scheduler`` while :func:`play` feeds it ``items``; stop it when they are done."""
    task = asyncio.create_task(scheduler.run())
    try:
        await play(scheduler, items)
    finally:
        scheduler.stop()
        await task


def run_sync(coro):
    """``asyncio.run(coro)``, also where an event loop already runs in this thread (a
    Jupyter kernel): then on a helper thread with its own loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict = {}

    def target():
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as err:  # noqa: BLE001 - re-raised on the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target, name="ran-agent-run-sync")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


def run_script(agent, script, config: SchedulerConfig | None = None, clock=None) -> list:
    """Play ``script`` (text, lines or parsed items) through a fresh scheduler; returns
    every event the agent reported meanwhile. The default config has no idle timer,
    so only the script's own passes run."""
    items = (
        script
        if script and isinstance(script, list) and isinstance(script[0], tuple)
        else parse_script(script)
    )
    events: list = []
    agent.subscribe(events.append)
    sched = Scheduler(agent, config or SchedulerConfig(idle_every=None), clock)

    try:
        run_sync(play_running(sched, items))
    finally:
        agent.listeners.remove(events.append)
        sched.close()
    return events
