"""An ipywidgets chat panel for a running agent, with a live plot of r(t) in a fixed PCA plane.

:func:`chat_panel` starts a :class:`ran.agent.scheduler.Scheduler` on the kernel's
event loop (idle ticks keep coming while you read) and returns a widget: a text
box and a Send button, the conversation (emitted text; silent passes and idle
ticks as ``·`` lines) and the state plot with the counters, redrawn once each pass
has committed (its event arrives before the pass updates the counters). Call
``panel.stop()`` to stop the scheduler.

The conversation (its last ``keep`` lines) is an ``ipywidgets.HTML`` that scrolls
to its newest line; the plot is an ``ipywidgets.Output`` whose ``outputs`` are set
to one inline PNG. Neither is written with ``with out: print(...)`` or
``display(fig)``: the passes' events arrive in callbacks on the kernel's event
loop, after the cell has finished, where JupyterLab does not route captured
output to the widget (the log stayed empty), and a bare matplotlib ``Figure``
displayed there showed as its text repr.
"""

from __future__ import annotations

import asyncio
import base64
import html
import io
from collections import deque

from ran.agent.config import SchedulerConfig
from ran.agent.demo import StateTrace
from ran.agent.scheduler import Scheduler
from ran.agent.viz import draw_trajectory

DUPLICATE_S = 1.0  # the same message submitted again within this many seconds is one send

# The conversation box scrolls in a column-reverse flex box: its scroll position starts,
# and stays, at the bottom, so the newest lines are in view as idle ticks keep coming.
LOG_HTML = (
    '<div class="ran-chat-scroll" style="height: 260px; overflow: auto; display: flex; '
    'flex-direction: column-reverse">'
    '<pre style="margin: 0; flex-shrink: 0; white-space: pre-wrap">{}</pre></div>'
)


def chat_panel(
    agent, projection, config: SchedulerConfig | None = None, last: int = 60, keep: int = 200
):
    """The widget (a VBox with ``send(text)`` and ``stop()`` attached); see the module docstring.

    ``last``: passes drawn in the state plot; ``keep``: conversation lines kept.
    """
    import ipywidgets as w
    from matplotlib.figure import Figure

    trace = StateTrace(agent)
    sched = Scheduler(agent, config or SchedulerConfig(idle_every=2.0))
    text = w.Text(
        placeholder="a message, or /idle 3, /review, /reset", layout=w.Layout(width="70%")
    )
    button = w.Button(description="Send")
    log, plot = w.HTML(layout=w.Layout(width="45%")), w.Output()
    status = w.HTML()
    lines: deque[str] = deque(maxlen=keep)
    pending: set[asyncio.Task] = set()  # redraws waiting for their pass to commit
    loop = asyncio.get_event_loop()

    def redraw() -> None:
        c = agent.counters
        status.value = (f"<code>pass {c.passes} | {c.idle_ticks} idle ticks | {c.silent} silent | "
                        f"{c.emitted} emitted | buffer {agent.buffer.tokens}/{agent.buffer.budget} tokens</code>")  # fmt: skip
        fig = Figure(figsize=(5.0, 3.8), layout="constrained")
        draw_trajectory(fig.subplots(), projection, trace.rows[-last:], "r(t), fixed PCA plane")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        png = base64.b64encode(buf.getvalue()).decode("ascii")
        plot.outputs = ({"output_type": "display_data", "metadata": {},
                         "data": {"image/png": png, "text/plain": f"r(t) after pass {c.passes}"}},)  # fmt: skip

    def say(line: str) -> None:
        lines.append(line)
        log.value = LOG_HTML.format(html.escape("\n".join(lines)))

    def on_event(ev) -> None:  # on the pass thread: hand over to the loop
        if ev.kind in ("emitted", "silent", "idle", "rejected", "warning"):
            loop.call_soon_threadsafe(show, ev)

    def show(ev) -> None:
        line = {"emitted": f"agent> {ev.text}", "rejected": f"! {ev.text}", "warning": f"! {ev.text}",
                "silent": f"· pass {ev.pass_index}: silent (p = {ev.data.get('p', 0):.2f})",
                "idle": f"· pass {ev.pass_index}: idle tick"}[ev.kind]  # fmt: skip
        say(line)
        if ev.kind in ("rejected", "warning"):  # no pass to wait for (a failed one never commits)
            redraw()
        else:  # the event comes before the pass commits its counters and buffer
            task = loop.create_task(redraw_when_committed(ev.pass_index))
            pending.add(task)
            task.add_done_callback(pending.discard)

    async def redraw_when_committed(n: int, timeout: float = 10.0) -> None:
        deadline = loop.time() + timeout
        while agent.counters.passes < n and loop.time() < deadline:
            await asyncio.sleep(0.02)
        redraw()

    def send(message: str) -> None:
        from ran.agent.config import AgentError
        from ran.agent.script import parse_script, queue_item

        say(f"you> {message}")
        try:
            items = parse_script([message])
        except AgentError as err:
            say(f"! {err}")
            return
        for op, arg in items:
            queue_item(sched, op, arg)

    last_sent = {"text": None, "at": float("-inf")}

    def on_click(_=None) -> None:
        message, now = text.value, loop.time()
        if not message.strip():
            return
        text.value = ""
        # the browser can deliver one submission twice (the box's change on losing focus
        # and a resync of its value), back to back: a repeat within DUPLICATE_S is dropped
        if message == last_sent["text"] and now - last_sent["at"] < DUPLICATE_S:
            return
        last_sent.update(text=message, at=now)
        send(message)

    button.on_click(on_click)
    text.continuous_update = False  # the value changes on Enter (or leaving the box): send it
    text.observe(lambda _: on_click(), names="value")
    agent.subscribe(on_event)
    task = loop.create_task(sched.run()) if loop.is_running() else None
    box = w.VBox([w.HBox([text, button]), status, w.HBox([log, plot])])
    # CSS classes for the browser test (tests/acceptance/test_browser_agent.py) and styling
    for widget, name in ((box, "panel"), (text, "text"), (button, "send"), (status, "status"),
                         (log, "log"), (plot, "plot")):  # fmt: skip
        widget.add_class(f"ran-chat-{name}")

    def stop() -> None:
        sched.stop()
        trace.close()
        if on_event in agent.listeners:
            agent.listeners.remove(on_event)

    box.send, box.stop, box.scheduler, box.task, box.redraw = send, stop, sched, task, redraw
    redraw()
    return box
