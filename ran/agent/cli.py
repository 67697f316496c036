"""``python -m ran agent``: the Reservoir Agent in a terminal, or on a script.

``python -m ran agent [--adapter DIR] [--idle-every SECONDS] [--script FILE] ...``
loads the adapter (default ``data/adapters/smollm2-135m-fact``) and its output gate
(``<adapter>/output_gate``; trained on the gate probe and saved there the first
time), restores the last checkpoint of its home folder (default
``build/agent/<adapter name>``: ``checkpoint/`` and the ``events.jsonl`` log) and
reads lines from the terminal: each line is a message, ``/idle N``, ``/review``,
``/reset`` or ``/quit``. Emitted text is printed as ``agent> ...``; silent
passes and idle ticks update a status line (one line each when the output is
not a terminal). ``--script FILE`` plays a script (:mod:`ran.agent.script`) and
exits. User errors print one sentence and exit with code 2.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

USER_ERROR = 2


def add_agent_parser(sub) -> None:
    p = sub.add_parser(
        "agent",
        help="run the Reservoir Agent: a persistent chat loop with idle ticks and checkpoints",
        description="Run the Reservoir Agent on an adapter: messages, idle ticks, checkpoints.",
    )
    p.add_argument("--adapter", help="adapter folder (default: data/adapters/smollm2-135m-fact)")
    p.add_argument("--idle-every", type=float, default=5.0, metavar="SECONDS",
                   help="an idle tick after this many seconds without a pass (0: never; default 5)")  # fmt: skip
    p.add_argument("--review-every", type=float, default=0.0, metavar="SECONDS",
                   help="a pass over the context buffer after this many seconds (0: never)")  # fmt: skip
    p.add_argument("--home", help="checkpoint and log folder (default: build/agent/<adapter name>)")
    p.add_argument("--gate", help="output gate folder (default: <adapter>/output_gate)")
    p.add_argument("--always-emit", action="store_true", help="no gate: reply to every message")
    p.add_argument(
        "--fresh", action="store_true", help="start from a zero state (overwrites the checkpoint)"
    )
    p.add_argument(
        "--script",
        metavar="FILE",
        help="play this script (one message or command per line) and exit",
    )
    p.add_argument("--max-new-tokens", type=int, default=16, help="tokens per reply (default 16)")
    p.add_argument(
        "--buffer-tokens", type=int, default=256, help="token budget of the context buffer"
    )
    p.add_argument(
        "--prepend-buffer", action="store_true", help="run each message after the buffer"
    )


class Display:
    """Emitted text as lines; silent passes and idle ticks on one status line (or lines)."""

    def __init__(self, agent, out=None, tty: bool | None = None):
        self.agent, self.out = agent, out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.last = ""
        self._lock = threading.Lock()

    def status(self) -> str:
        c, b = self.agent.counters, self.agent.buffer
        return (f"[pass {c.passes} | {c.idle_ticks} idle ticks | {c.silent} silent | {c.emitted} emitted"
                f" | buffer {b.tokens}/{b.budget} tokens | {self.last}]")  # fmt: skip

    def _line(self, text: str) -> None:
        if self.tty:
            self.out.write("\r\x1b[2K" + text + "\n" + self.status())
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def __call__(self, ev) -> None:
        with self._lock:
            p = ev.data.get("p")
            if ev.kind == "emitted":
                self.last = f"emitted (p = {p:.2f})"
                self._line(f"agent> {ev.text}")
            elif ev.kind in ("rejected", "warning"):
                self._line(f"! {ev.text}")
            elif ev.kind == "started":
                how = (
                    f"restored at pass {ev.pass_index}"
                    if ev.data.get("restored")
                    else "fresh state"
                )
                self._line(
                    f"agent ready ({how}, gate {ev.data.get('gate')}); type a message, /quit to stop"
                )
            elif ev.kind == "reset":
                self._line("· reservoir state reset")
            elif ev.kind in ("silent", "idle"):
                self.last = f"{'idle tick' if ev.kind == 'idle' else 'silent'} (p = {p:.2f})"
                if self.tty:
                    self.out.write("\r\x1b[2K" + self.status())
                    self.out.flush()
                else:
                    self._line(f"· pass {ev.pass_index}: {self.last}")


def _resolve(args):
    """``(agent, scheduler config, script items or None)`` from the parsed arguments."""
    from ran.agent.config import AgentConfig, AgentError, SchedulerConfig
    from ran.agent.gate import AlwaysEmit, OutputGate
    from ran.agent.runtime import GATE_DIR, ReservoirAgent
    from ran.cli.common import load_adapter
    from ran.cli.demo import _adapter_dir
    from ran.util.results import Outputs

    adapter = _adapter_dir(args)
    home = Path(args.home) if args.home else Outputs().build / "agent" / adapter.name
    items = None
    if args.script:
        from ran.agent.script import parse_script

        if not Path(args.script).is_file():
            raise AgentError(f"the script file {args.script} does not exist.")
        text = Path(args.script).read_text(encoding="utf-8", errors="replace")
        items = parse_script(text)
    for name in ("idle_every", "review_every"):
        if getattr(args, name) < 0:
            raise AgentError(
                f"--{name.replace('_', '-')} must be >= 0 seconds, got {getattr(args, name)}."
            )
    sched_cfg = SchedulerConfig(
        idle_every=args.idle_every or None, review_every=args.review_every or None
    )
    cfg = AgentConfig(buffer_tokens=args.buffer_tokens, prepend_buffer=args.prepend_buffer,
                      max_new_tokens=args.max_new_tokens, checkpoint_dir=str(home / "checkpoint"),
                      restore=not args.fresh, log_path=str(home / "events.jsonl"))  # fmt: skip
    _, tok, handle, _ = load_adapter(adapter)
    if args.always_emit:
        gate = AlwaysEmit()
    else:
        gate_dir = Path(args.gate) if args.gate else adapter / GATE_DIR
        gate = (
            OutputGate.load(gate_dir)
            if gate_dir.is_dir() or args.gate
            else _train_gate(handle, tok, gate_dir)
        )
    agent = ReservoirAgent(handle, tok, gate, cfg, adapter)
    return agent, sched_cfg, items


def _train_gate(handle, tok, gate_dir: Path):
    from ran.agent.checkpoint import agent_identity
    from ran.agent.gate_train import train_and_score

    print(f"no output gate at {gate_dir}: training one on the gate probe (once) ...", flush=True)
    gates, report = train_and_score(handle, tok, identity=agent_identity(handle))
    gates["stateful"].save(gate_dir)
    f1 = report["stateful"]["scores"]["f1"]
    print(f"output gate saved to {gate_dir} (test F1 {f1['value']:.2f}, stateless "
          f"{report['stateless']['scores']['f1']['value']:.2f}, always-emit "
          f"{report['always']['scores']['f1']['value']:.2f})", flush=True)  # fmt: skip
    return gates["stateful"]


def _command(sched, line: str) -> bool:
    """Handle one typed line; False means quit."""
    from ran.agent.script import parse_script, queue_item

    if line.strip() in ("/quit", "/exit"):
        return False
    try:
        items = parse_script([line])
    except ValueError as err:  # shown and logged like the agent's own warnings
        sched.agent._publish([], "warning", sched.agent.counters.passes, str(err))
        return True
    for op, arg in items:
        queue_item(sched, op, arg)
    return True


async def _interactive(sched) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(sched.run())

    def on_line(line: str) -> None:
        if not _command(sched, line.rstrip("\n")):
            sched.stop()

    def reader() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(on_line, line)
        loop.call_soon_threadsafe(sched.stop)

    threading.Thread(target=reader, daemon=True, name="ran-agent-stdin").start()
    await task


def cmd_agent(args) -> int:
    """Run the agent until EOF, ``/quit`` or the end of the script."""
    from ran.agent.config import AgentError
    from ran.agent.scheduler import Scheduler
    from ran.agent.script import play_running
    from ran.cli.common import CLIError
    from ran.mechanisms.adapter import AdapterError

    try:
        agent, sched_cfg, items = _resolve(args)
    except (AgentError, AdapterError, CLIError) as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR
    display = Display(agent)
    agent.subscribe(display)
    display(agent.started)
    sched = Scheduler(agent, sched_cfg)
    try:
        asyncio.run(play_running(sched, items) if items is not None else _interactive(sched))
    except KeyboardInterrupt:
        pass
    finally:
        sched.close()
        agent.close()
    c = agent.counters
    print(f"\nagent stopped after {c.passes} passes ({c.emitted} emitted, {c.silent} silent, "
          f"{c.idle_ticks} idle ticks, {c.rejected} rejected); checkpoint: {agent.config.checkpoint_dir}")  # fmt: skip
    return 0
