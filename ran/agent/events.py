"""What the agent reports: :class:`Event` records, a JSON-lines log and an async fan-out.

Every pass produces events in order: ``pass`` (a pass started: prompted, idle or
review), then ``emitted`` (the reply text) or ``silent`` (the gate kept quiet) or
``idle`` (an idle tick ran), then ``checkpoint`` (the pass is on disk). Besides
those: ``started`` (fresh or restored), ``rejected`` (a message refused, with the
reason), ``warning`` (a message changed to be safe: invalid UTF-8, control
characters, truncation), ``reset`` (the state was forgotten on request) and
``stopped``.

:class:`EventLog` appends one JSON object per line and flushes it (a crash can
tear at most the last line, which :func:`read_log` skips). :class:`EventHub`
hands every event to any number of ``async for`` readers.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

KINDS = (
    "started",
    "pass",
    "emitted",
    "silent",
    "idle",
    "checkpoint",
    "rejected",
    "warning",
    "reset",
    "stopped",
)


@dataclass(frozen=True)
class Event:
    """One thing the agent did.

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`.
    pass_index : int
        The pass it belongs to (1-based; the pass count so far for ``started``,
        ``rejected`` and ``stopped``).
    time : float
        Wall-clock time (``time.time()``) when it happened.
    text : str
        The reply (``emitted``), the reason (``rejected``, ``warning``) or empty.
    data : dict
        Details: pass kind, gate probability, latencies, buffer size, paths.
    """

    kind: str
    pass_index: int
    time: float = field(default_factory=time.time)
    text: str = ""
    data: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}; kinds are {', '.join(KINDS)}.")

    def to_json(self) -> str:
        """One line of JSON (no NaN: non-finite numbers become null)."""
        from ran.util.results import to_jsonable

        return json.dumps(to_jsonable(asdict(self)), ensure_ascii=False, allow_nan=False)


class EventLog:
    """Appends events to a JSON-lines file, one flushed line each (thread-safe)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()

    def write(self, event: Event) -> None:
        line = event.to_json() + "\n"
        with self._lock:
            if self._fh.closed:
                return
            self._fh.write(line)
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            self._fh.close()


def read_log(path: str | Path) -> list[dict]:
    """The events of a log file as dicts; a torn last line (a killed writer) is skipped."""
    out = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class EventHub:
    """Fan-out of events to ``async for`` readers; events may be published from any thread.

    Each reader gets its own unbounded queue, so a slow reader never blocks a pass;
    :meth:`close` ends every reader's iteration after the events already queued.
    """

    def __init__(self):
        self._queues: list[asyncio.Queue] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop readers live on (publishing from other threads goes through it)."""
        self._loop = loop
        self._closed = False

    def publish(self, event: Event) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._put(event)
        else:
            loop.call_soon_threadsafe(self._put, event)

    def _put(self, event: Event | None) -> None:
        for q in self._queues:
            q.put_nowait(event)

    def close(self) -> None:
        """End every reader after what is queued (call on the loop's thread)."""
        self._closed = True
        self._put(None)

    def stream(self):
        """Async iterator over the events published from now on (until :meth:`close`).

        The reader is registered when this is called, not when iteration starts, so
        no event published in between is missed.
        """
        q: asyncio.Queue = asyncio.Queue()
        self._queues.append(q)
        if self._closed:
            q.put_nowait(None)
        return self._iterate(q)

    async def _iterate(self, q: asyncio.Queue):
        try:
            while True:
                ev = await q.get()
                if ev is None:
                    return
                yield ev
        finally:
            if q in self._queues:
                self._queues.remove(q)
