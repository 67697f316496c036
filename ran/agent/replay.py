"""Memoised agent computations: notebook 07's deterministic probes, replayed on a warm run.

The gate probe's features, the elapsed-time probe and the scripted conversation over many
keys are pure functions of the agent's weights (:func:`ran.agent.checkpoint.agent_identity`),
its output gate, its settings, its state and buffer at the call, and the code (the
computing layers' source digest and :func:`ran.util.memo.folder_digest` of ``ran/agent``). They are
saved with :func:`ran.util.memo.memo` under a key of all of those, so a warm rerun of the
notebook loads them instead of running the passes again. The interrupt latency measures the
machine and is never memoised.

A memoised call on a live agent (:func:`on_agent`) also saves what the call did to the agent
(the counters' increments, the buffer and the state it left), and a replay applies them: the
agent is where the computation would have left it. Only the event log and the checkpoints of
the replayed passes are not written again.
"""

from __future__ import annotations

from dataclasses import asdict

from ran.util.memo import cached, folder_digest, memo, tensor_digest

# AgentConfig fields that say where the agent writes, not what it computes
_WHERE = ("checkpoint_dir", "log_path", "restore")


def gate_key(gate) -> dict:
    """What a gate decides with: its kind, weights (digest), bias and threshold."""
    if not hasattr(gate, "weight"):
        return {"gate": type(gate).__name__}
    return {"gate": gate.name, "weights": tensor_digest([gate.weight, gate.mean, gate.std]),
            "bias": gate.bias, "threshold": gate.threshold}  # fmt: skip


def agent_key(agent) -> dict:
    """Everything a live agent's next passes depend on besides their input and the code."""
    state = agent.handle.state
    settings = {k: v for k, v in asdict(agent.config).items() if k not in _WHERE}
    return {"identity": agent.identity, "settings": settings, "threshold": agent.threshold,
            "state": None if state is None else tensor_digest([state]),
            "buffer": agent.buffer.to_list(), "dropped": agent.buffer.dropped} | gate_key(agent.gate)  # fmt: skip


def on_agent(outputs, name: str, key: dict, agent, fn, *args, **kwargs):
    """``fn(agent, *args, **kwargs)`` memoised under ``key`` and :func:`agent_key`; on a replay
    the agent's counters, buffer and state are set as the computation left them."""
    full = dict(key) | {"agent": agent_key(agent), "agent_code": folder_digest("agent")}

    def compute():
        before = dict(vars(agent.counters))
        value = fn(agent, *args, **kwargs)
        after = vars(agent.counters)
        return {"value": value, "counters": {k: after[k] - before[k] for k in before},
                "buffer": agent.buffer.to_list(), "dropped": agent.buffer.dropped,
                "state": agent.handle.state}  # fmt: skip

    replay = cached(outputs, name, full)
    out = memo(outputs, name, full, compute)
    if replay:
        for k, dv in out["counters"].items():
            setattr(agent.counters, k, getattr(agent.counters, k) + dv)
        agent.buffer.load(out["buffer"], out["dropped"])
        agent.handle.state = out["state"]
    return out["value"]
