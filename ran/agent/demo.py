"""The scripted conversation of the agent (notebook 07, the slow test) and its reset control.

:func:`memory_script` is a conversation in which a fact is stated inside a normal
message, followed by unrelated turns (statements and a question the agent
answers) and idle ticks, then a question about the fact. :func:`memory_check`
plays it twice from the same start: as written, and with the reservoir state
reset right before the question (``/reset``, the control). An agent whose memory
works answers the question with the fact the first time and not the second.

:class:`StateTrace` records r(t) after every pass (for the notebook's fixed PCA
projection); :func:`smoke_adapter` writes an untrained tiny-llama adapter (the
smoke profile).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FACT = "I spent the morning at the market with my sister. By the way, the secret word is {key}. Then we walked home."
AROUND = "I spent the morning at the market with my sister. {sentence} Then we walked home."
UNRELATED = (
    "The weather was cold all day.",
    "My neighbour fixed his old bicycle.",
    "Agent, what time does the bakery usually open?",
    "We had soup for dinner.",
)
QUESTION = "Agent, what was the secret word? The secret word was"


def memory_script(key: str = "castle", question: str = QUESTION, idle: tuple[int, int] = (3, 2),
                  reset: bool = False, fact: str = FACT) -> str:  # fmt: skip
    """The script: the fact, two unrelated turns, idle ticks, two more, idle ticks, the question."""
    lines = [
        fact.format(key=key),
        *UNRELATED[:2],
        f"/idle {idle[0]}",
        *UNRELATED[2:],
        f"/idle {idle[1]}",
    ]
    if reset:
        lines.append("/reset")
    lines.append(question)
    return "\n".join(lines) + "\n"


def _answer(events) -> tuple[str | None, bool]:
    last = [
        e for e in events if e.kind in ("emitted", "silent") and e.data.get("kind") == "prompted"
    ][-1]
    return (last.text if last.kind == "emitted" else None), last.kind == "emitted"


def memory_check(agent, key: str = "castle", question: str = QUESTION, fact: str = FACT,
                 replay: bool = True) -> dict:  # fmt: skip
    """Play :func:`memory_script` as written and with the state reset before the question,
    each from the agent's state at the call (restored in between). Returns both replies
    and whether each contains ``key`` (case-insensitive).

    ``replay=False`` plays only ``/reset`` and the question for the reset control: from a
    wiped state the reply depends on the question alone when prompts do not carry the
    context buffer, so replaying the conversation first changes nothing but the counters
    (``passes`` counts the passes played). It needs ``prepend_buffer`` off."""
    if not replay and agent.config.prepend_buffer:
        raise ValueError("replay=False needs prepend_buffer off: the buffer would carry the fact")
    start_state, start_buffer = agent.handle.state, agent.buffer.to_list()
    out = {"key": key, "question": question}
    for name, reset in (("memory", False), ("reset", True)):
        agent.handle.state = start_state
        agent.buffer.load(start_buffer, agent.buffer.dropped)
        script = memory_script(key, question, reset=reset, fact=fact)
        if reset and not replay:
            script = f"/reset\n{question}\n"
        out[name] = _play(agent, key, script)
    return out


def _play(agent, key: str, script: str) -> dict:
    """Run ``script``; the last prompted reply, whether it was emitted and names ``key``,
    and the passes played."""
    from ran.agent.script import run_script

    events = run_script(agent, script)
    reply, emitted = _answer(events)
    return {"reply": reply, "emitted": emitted, "has_key": bool(reply) and key.lower() in reply.lower(),
            "passes": sum(e.kind == "pass" for e in events)}  # fmt: skip


def recall_over_keys(agent, keys, writes, questions) -> dict:
    """:func:`memory_check` once per key, the fact told with ``writes[i % len(writes)]``
    (a ``{key}`` sentence inside :data:`AROUND`) and asked with ``"Agent, "`` before
    ``questions[i % len(questions)]``, each from the agent's state at the call. Returns the
    hit counts and Wilson 95% CIs as written and after the reset, and every reply. With
    ``prepend_buffer`` off the reset control skips the replay (``replay=False``: the same
    replies in about 60% of the time)."""
    from ran.util.stats import wilson_interval

    if not keys or not writes or not questions:
        raise ValueError("recall_over_keys needs at least one key, write and question template")
    start = agent.handle.state
    rows = []
    for i, key in enumerate(keys):
        fact = AROUND.format(sentence=writes[i % len(writes)])
        q = questions[i % len(questions)]
        question = "Agent, " + q[:1].lower() + q[1:]
        c = memory_check(agent, key, question, fact, replay=agent.config.prepend_buffer)
        agent.handle.state = start
        rows.append({"key": key, "fact": fact.format(key=key), "question": question,
                     "memory": c["memory"]["reply"], "reset": c["reset"]["reply"],
                     "memory_hit": c["memory"]["has_key"], "reset_hit": c["reset"]["has_key"]})  # fmt: skip
    n = len(rows)
    out = {"n": n, "rows": rows}
    for name in ("memory", "reset"):
        k = sum(r[f"{name}_hit"] for r in rows)
        out[name] = {"hits": k, "rate": k / n, "ci95": list(wilson_interval(k, n)),
                     "emitted": sum(r[name] is not None for r in rows)}  # fmt: skip
    return out


class StateTrace:
    """A listener that keeps r(t) after every pass: ``(pass_index, kind, state)`` rows."""

    def __init__(self, agent):
        self.agent = agent
        self.rows: list[tuple[int, str, np.ndarray]] = []
        agent.subscribe(self)

    def __call__(self, ev) -> None:
        if ev.kind in ("emitted", "silent", "idle") and self.agent.state is not None:
            kind = "idle" if ev.kind == "idle" else f"{ev.data.get('kind', 'prompted')}-{ev.kind}"
            self.rows.append(
                (ev.pass_index, kind, self.agent.state[0].detach().float().numpy().copy())
            )

    @property
    def states(self) -> np.ndarray:
        return np.stack([r[2] for r in self.rows]) if self.rows else np.zeros((0, 0))

    def close(self) -> None:
        if self in self.agent.listeners:
            self.agent.listeners.remove(self)


def smoke_adapter(folder, units: int = 64, seed: int = 0) -> Path:
    """An untrained tiny-llama adapter (gate open at tanh(1)), written once into ``folder``."""
    from ran.injection.config import InjectionConfig
    from ran.injection.models import load_model
    from ran.mechanisms.adapter import CONFIG_NAME
    from ran.mechanisms.reservoir_slots import inject
    from ran.reservoir.config import ReservoirConfig

    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        model, _ = load_model("tiny-llama", seed=seed)
        handle = inject(
            model, InjectionConfig(reservoir=ReservoirConfig(units=units, seed=seed), gate_init=1.0)
        )
        handle.save_pretrained(folder)
        handle.remove()
    return folder
