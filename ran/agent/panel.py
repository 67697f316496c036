"""An ipywidgets chat panel for a running agent, with a live plot of r(t) in a fixed PCA plane.

:func:`chat_panel` starts a :class:`ran.agent.scheduler.Scheduler` on the kernel's
event loop (idle ticks keep coming while you read) and returns a widget: a text
box and a Send button, the conversation (emitted text; silent passes and idle
ticks as grey lines) and the state plot, redrawn after every pass. Call
``panel.stop()`` to stop the scheduler.
"""

from __future__ import annotations

import asyncio

from ran.agent.config import SchedulerConfig
from ran.agent.demo import StateTrace
from ran.agent.scheduler import Scheduler
from ran.agent.viz import draw_trajectory


def chat_panel(agent, projection, config: SchedulerConfig | None = None, last: int = 60):
    """The widget (a VBox with ``send(text)`` and ``stop()`` attached); see the module docstring."""
    import ipywidgets as w
    from IPython.display import display
    from matplotlib.figure import Figure

    trace = StateTrace(agent)
    sched = Scheduler(agent, config or SchedulerConfig(idle_every=2.0))
    text = w.Text(
        placeholder="a message, or /idle 3, /review, /reset", layout=w.Layout(width="70%")
    )
    button = w.Button(description="Send")
    log, plot = w.Output(layout=w.Layout(height="260px", overflow="auto")), w.Output()
    status = w.HTML()
    loop = asyncio.get_event_loop()

    def redraw() -> None:
        c = agent.counters
        status.value = (f"<code>pass {c.passes} | {c.idle_ticks} idle ticks | {c.silent} silent | "
                        f"{c.emitted} emitted | buffer {agent.buffer.tokens}/{agent.buffer.budget} tokens</code>")  # fmt: skip
        fig = Figure(figsize=(5.0, 3.8), layout="constrained")
        draw_trajectory(fig.subplots(), projection, trace.rows[-last:], "r(t), fixed PCA plane")
        with plot:
            plot.clear_output(wait=True)
            display(fig)

    def on_event(ev) -> None:  # on the pass thread: hand over to the loop
        if ev.kind in ("emitted", "silent", "idle", "rejected", "warning"):
            loop.call_soon_threadsafe(show, ev)

    def show(ev) -> None:
        line = {"emitted": f"agent> {ev.text}", "rejected": f"! {ev.text}", "warning": f"! {ev.text}",
                "silent": f"· pass {ev.pass_index}: silent (p = {ev.data.get('p', 0):.2f})",
                "idle": f"· pass {ev.pass_index}: idle tick"}[ev.kind]  # fmt: skip
        with log:
            print(line)
        redraw()

    def send(message: str) -> None:
        from ran.agent.config import AgentError
        from ran.agent.script import parse_script, queue_item

        with log:
            print(f"you> {message}")
        try:
            items = parse_script([message])
        except AgentError as err:
            with log:
                print(f"! {err}")
            return
        for op, arg in items:
            queue_item(sched, op, arg)

    def on_click(_=None) -> None:
        if text.value.strip():
            send(text.value)
            text.value = ""

    button.on_click(on_click)
    text.continuous_update = False  # the value changes on Enter (or leaving the box): send it
    text.observe(lambda _: on_click(), names="value")
    agent.subscribe(on_event)
    task = loop.create_task(sched.run()) if loop.is_running() else None
    box = w.VBox([w.HBox([text, button]), status, w.HBox([log, plot])])

    def stop() -> None:
        sched.stop()
        trace.close()
        if on_event in agent.listeners:
            agent.listeners.remove(on_event)

    box.send, box.stop, box.scheduler, box.task, box.redraw = send, stop, sched, task, redraw
    redraw()
    return box
