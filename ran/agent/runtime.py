"""The Reservoir Agent's runtime: one injected model whose state and context buffer belong to it.

:class:`ReservoirAgent` owns the injected model (a :class:`ran.mechanisms.reservoir_slots.RANHandle`,
usually loaded from an adapter), the output gate, the reservoir state r(t), a
bounded context buffer and its counters. Nothing is ever wiped between passes.
A pass is one of

* **prompted** (:meth:`ReservoirAgent.send`): the message is cleaned
  (:mod:`ran.agent.sanitize`), run as one forward pass in a fresh context (or
  after the buffer, ``prepend_buffer``), and the gate reads the features the
  pass left. To emit, the state goes back to where the pass found it and
  ``generate()`` replies greedily (its prefill is the same pass), so the state
  advances exactly as the handle defines for generate();
* **idle** (:meth:`ReservoirAgent.idle`): ``handle.idle(1)``, u = 0; always silent
  (there is no text to reply to), the gate's probability is logged;
* **review** (:meth:`ReservoirAgent.review`): one forward pass over the buffer with
  no new input; silent unless ``review_emits``.

After every pass the state, the buffer and the counters are checkpointed
(:mod:`ran.agent.checkpoint`); on start the last checkpoint is restored. Passes
never overlap (a second concurrent call raises). Every step is reported as
:class:`ran.agent.events.Event` to the log and to listeners.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ran.agent import passes as P
from ran.agent.buffer import ContextBuffer, Entry
from ran.agent.checkpoint import Checkpointer, adapter_config_sha256, agent_identity
from ran.agent.config import AgentConfig, AgentError
from ran.agent.events import Event, EventLog
from ran.agent.gate import AlwaysEmit, OutputGate
from ran.agent.sanitize import Rejected, clean_message

GATE_DIR = "output_gate"  # the gate's folder inside an adapter folder


@dataclass
class Counters:
    """What the agent has done since it was first started (restored with the checkpoint)."""

    passes: int = 0  # committed passes of every kind
    prompted: int = 0
    idle_ticks: int = 0
    reviews: int = 0
    emitted: int = 0
    silent: int = 0
    rejected: int = 0  # messages refused (no pass)
    warnings: int = 0  # messages changed to be safe
    tokens_in: int = 0  # tokens run through the model in passes
    tokens_out: int = 0  # tokens generated
    buffer_dropped: int = 0  # buffer entries that left for the budget
    restores: int = 0  # starts from a checkpoint


@dataclass
class Request:
    """One unit of work for :meth:`ReservoirAgent.step`: a message or an unprompted pass."""

    kind: str  # "message", "idle", "review" or "reset"
    text: str | bytes | None = None  # the message
    submitted_at: float = field(default_factory=time.perf_counter)  # for latencies
    ahead: int | None = None  # passes in flight or queued before it when it arrived
    seq: int = 0  # arrival order (the scheduler numbers requests)


class ReservoirAgent:
    """A persistent agent around one injected model (see the module docstring).

    Parameters
    ----------
    handle : ran.mechanisms.reservoir_slots.RANHandle
        The injected model (``handle.model``), e.g. from :func:`ran.mechanisms.adapter.from_pretrained`.
    tokenizer
        The model's tokenizer.
    gate : OutputGate or AlwaysEmit, optional
        Decides emit or stay silent after each pass (default: always emit).
    config : AgentConfig, optional
    adapter_dir : str or Path, optional
        The adapter folder, recorded in the checkpoint manifest.
    """

    def __init__(self, handle, tokenizer, gate=None, config: AgentConfig | None = None,
                 adapter_dir=None):  # fmt: skip
        self.handle, self.model, self.tok = handle, handle.model, tokenizer
        self.config = config or AgentConfig()
        self.gate = gate if gate is not None else AlwaysEmit()
        self.identity = agent_identity(handle)
        self.hidden_size, self.units = int(self.model.config.hidden_size), handle.reservoir.units
        self.gate.check(self.identity, self.hidden_size, self.units)
        self.threshold = (
            self.config.threshold if self.config.threshold is not None else self.gate.threshold
        )
        self.buffer = ContextBuffer(tokenizer, self.config.buffer_tokens)
        self.counters = Counters()
        self.adapter_dir = None if adapter_dir is None else str(adapter_dir)
        self.listeners: list = []
        self.last_features = None  # (hidden, state, kind, p) of the last text pass
        self._lock = threading.Lock()
        self.log = EventLog(self.config.log_path) if self.config.log_path else None
        self.checkpointer = None
        if self.config.checkpoint_dir is not None:
            info = {"model": getattr(self.model, "_ran_model_name", None), "adapter": self.adapter_dir,
                    "adapter_config_sha256": adapter_config_sha256(adapter_dir), "units": self.units}  # fmt: skip
            self.checkpointer = Checkpointer(self.config.checkpoint_dir, self.identity, info)
        self.model.eval()
        self._start()

    @classmethod
    def from_adapter(cls, adapter_dir, config: AgentConfig | None = None, gate=None):
        """Load the adapter's base model, inject the adapter and start (or restore) an agent.

        ``gate``: an OutputGate, AlwaysEmit, a gate folder, or None for
        ``<adapter>/output_gate`` (always-emit when that folder does not exist).
        """
        from ran.cli.common import load_adapter

        _, tok, handle, _ = load_adapter(adapter_dir)
        if gate is None and (Path(adapter_dir) / GATE_DIR).is_dir():
            gate = Path(adapter_dir) / GATE_DIR
        if isinstance(gate, str | Path):
            gate = OutputGate.load(gate)
        return cls(handle, tok, gate, config, adapter_dir)

    # ------------------------------------------------------------------ events
    def subscribe(self, fn) -> None:
        """Call ``fn(event)`` for every event (from the thread that runs the pass)."""
        self.listeners.append(fn)

    def _publish(self, out: list, event: str, pass_index: int, text: str = "", **data) -> Event:
        ev = Event(event, pass_index, text=text, data=data)
        if self.log is not None:
            self.log.write(ev)
        for fn in list(self.listeners):
            fn(ev)
        out.append(ev)
        return ev

    # ------------------------------------------------------------------ lifecycle
    def _start(self) -> None:
        ck, record = self.checkpointer, None
        if ck is not None:
            if self.config.restore:
                record = ck.load(self.handle)
            else:
                ck.check_manifest()
            ck.write_manifest()
        if record is not None:
            self.buffer.load(record["buffer"], record["counters"].get("buffer_dropped", 0))
            known = {k: v for k, v in record["counters"].items() if k in asdict(Counters())}
            self.counters = Counters(**known)
            self.counters.restores += 1
        self.started = self._publish([], "started", self.counters.passes, restored=record is not None,
                      identity=self.identity, checkpoint=self.config.checkpoint_dir,
                      counters=asdict(self.counters), gate=self.gate.name)  # fmt: skip

    def close(self) -> None:
        """Report ``stopped`` and close the log (the last checkpoint is already on disk)."""
        self._publish([], "stopped", self.counters.passes, counters=asdict(self.counters))
        if self.log is not None:
            self.log.close()

    def reset_state(self) -> None:
        """Forget the reservoir state (the next pass starts from zeros); buffer and counters stay."""
        self.handle.reset_state()

    @property
    def state(self):
        """The reservoir state r(t) (1, N), or None before the first pass."""
        return self.handle.state

    # ------------------------------------------------------------------ passes
    def step(self, request: Request) -> list[Event]:
        """Run one request as one pass (a refused message runs none); returns its events.

        A pass that raises before it is committed leaves the state and the counters as
        they were (the buffer changes only at the pass's end)."""
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("a pass is already running; the agent's passes never overlap.")
        state, counters = self.handle.state, replace(self.counters)
        try:
            if request.kind == "message":
                return self._prompted(request)
            if request.kind == "idle":
                return self._idle(request)
            if request.kind == "review":
                return self._review(request)
            if request.kind == "reset":  # not a pass: no checkpoint until the next pass
                self.handle.reset_state()
                return [self._publish([], "reset", self.counters.passes, seq=request.seq)]
            raise AgentError(
                f"unknown request kind {request.kind!r}; use message, idle, review or reset."
            )
        except BaseException:  # a failed pass leaves the state and counters as they were
            if self.counters.passes == counters.passes:
                self.handle.state, self.counters = state, counters
            raise
        finally:
            self._lock.release()

    def send(self, message) -> Event:
        """A prompted pass now; returns its ``emitted``, ``silent`` or ``rejected`` event."""
        events = self.step(Request("message", message, ahead=0))
        return next(e for e in events if e.kind in ("emitted", "silent", "rejected"))

    def idle(self, n: int = 1) -> list[Event]:
        """``n`` idle ticks now; returns their ``idle`` events."""
        return [e for _ in range(n) for e in self.step(Request("idle")) if e.kind == "idle"]

    @contextlib.contextmanager
    def using_gate(self, gate):
        """Run with another output gate (and its threshold), e.g. :class:`AlwaysEmit` to hear
        every reply; the agent's own gate is back afterwards."""
        gate.check(self.identity, self.hidden_size, self.units)
        saved = self.gate, self.threshold
        self.gate, self.threshold = gate, gate.threshold
        try:
            yield self
        finally:
            self.gate, self.threshold = saved

    def review(self) -> Event:
        """A pass over the buffer now; returns its ``silent``, ``emitted`` or ``idle`` event."""
        events = self.step(Request("review"))
        return next(e for e in events if e.kind in ("emitted", "silent", "idle"))

    def _prompted(self, req: Request) -> list[Event]:
        out: list[Event] = []
        cfg, c = self.config, self.counters
        try:
            msg = clean_message(req.text, cfg.max_message_bytes)
        except Rejected as err:
            c.rejected += 1
            self._publish(out, "rejected", c.passes, str(err), seq=req.seq)
            return out
        for w in msg.warnings:
            c.warnings += 1
            self._publish(out, "warning", c.passes + 1, w, seq=req.seq)
        context = msg.text
        if cfg.prepend_buffer and len(self.buffer):
            context = self.buffer.render() + "\n" + msg.text
        ids, cut = P.encode(
            self.tok,
            context,
            cfg.max_message_tokens + (cfg.buffer_tokens if cfg.prepend_buffer else 0),
        )
        if cut:
            c.warnings += 1
            self._publish(
                out,
                "warning",
                c.passes + 1,
                f"the pass was cut to its last {ids.shape[1]} tokens ({cut} dropped).",
            )
        waited = req.ahead
        reply = self._run_text(out, "prompted", ids, req, waited, emit_allowed=True)
        dropped = self.buffer.add(Entry(c.passes + 1, "prompted", msg.text, reply))
        c.prompted += 1
        return self._commit(out, dropped, ids.shape[1])

    def _run_text(self, out, kind, ids, req, waited, emit_allowed) -> str | None:
        """Pass event, one forward, the gate, and a reply if it emits; returns the reply or None."""
        c, n = self.counters, self.counters.passes + 1
        self._publish(out, "pass", n, kind=kind, tokens=int(ids.shape[1]), waited_passes=waited,
                      seq=req.seq, queued_ms=1000 * (time.perf_counter() - req.submitted_at))  # fmt: skip
        t0 = time.perf_counter()
        before = self.handle.state
        hidden = P.forward(self.model, ids)
        p = self.gate.prob(hidden, P.state_vector(self.handle), kind)
        self.last_features = (hidden, P.state_vector(self.handle), kind, p)
        if not (emit_allowed and p >= self.threshold):
            c.silent += 1
            self._publish(out, "silent", n, p=p, pass_ms=1000 * (time.perf_counter() - t0), kind=kind,
                          seq=req.seq)  # fmt: skip
            return None
        self.handle.state = before  # generate()'s prefill is this same pass
        prompt = ids
        if self.config.reply_prompt != "{message}":
            text = self.tok.decode(ids[0], skip_special_tokens=True)
            prompt, _ = P.encode(
                self.tok, self.config.reply_prompt.format(message=text), ids.shape[1] + 64
            )
        reader = self.handle if self.config.read == "prompt" else None
        reply, n_new, first = P.generate(
            self.model, self.tok, prompt, self.config.max_new_tokens, reader
        )
        c.emitted += 1
        c.tokens_out += n_new
        first_ms = None if first is None else 1000 * (first - t0)
        latency = None if first is None else 1000 * (first - req.submitted_at)
        self._publish(out, "emitted", n, reply, p=p, kind=kind, tokens_out=n_new, first_token_ms=first_ms,
                      latency_ms=latency, waited_passes=waited, pass_ms=1000 * (time.perf_counter() - t0),
                      seq=req.seq)  # fmt: skip
        return reply

    def _idle(self, req: Request) -> list[Event]:
        out: list[Event] = []
        n = self.counters.passes + 1
        self._publish(out, "pass", n, kind="idle", seq=req.seq)
        t0 = time.perf_counter()
        self.handle.idle(1, batch_size=1 if self.handle.state is None else None)
        p = self.gate.prob(None, P.state_vector(self.handle), "idle")
        tick_ms = 1000 * (time.perf_counter() - t0)
        self._publish(out, "idle", n, p=p, tick_ms=tick_ms, seq=req.seq)
        self.counters.idle_ticks += 1
        return self._commit(out, [], 0)

    def _review(self, req: Request) -> list[Event]:
        if not len(self.buffer):
            return self._idle(req)  # nothing to review: an idle tick instead
        out: list[Event] = []
        ids, _ = P.encode(self.tok, self.buffer.render(), self.config.buffer_tokens)
        reply = self._run_text(out, "review", ids, req, None, emit_allowed=self.config.review_emits)
        dropped = (
            self.buffer.add(Entry(self.counters.passes + 1, "review", "", reply)) if reply else []
        )
        self.counters.reviews += 1
        return self._commit(out, dropped, ids.shape[1])

    def _commit(self, out: list, dropped: list, tokens: int) -> list[Event]:
        c = self.counters
        c.passes += 1
        c.tokens_in += int(tokens)
        c.buffer_dropped += len(dropped)
        if self.checkpointer is not None:
            t0 = time.perf_counter()
            path = self.checkpointer.save(self.handle, c.passes, self.buffer.to_list(), asdict(c))
            self._publish(out, "checkpoint", c.passes, path=str(path), buffer_tokens=self.buffer.tokens,
                          checkpoint_ms=1000 * (time.perf_counter() - t0))  # fmt: skip
        return out
