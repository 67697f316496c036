"""Memoised agent computations (ran.agent.replay): a replay leaves the agent where the
computation would have, and anything the passes depend on makes a new entry."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from ran.agent.config import AgentConfig
from ran.agent.gate import AlwaysEmit
from ran.agent.replay import on_agent
from ran.agent.runtime import Counters
from ran.util.results import Outputs


class Buffer:
    def __init__(self):
        self.entries, self.dropped = [], 0

    def to_list(self):
        return [dict(e) for e in self.entries]

    def load(self, entries, dropped=0):
        self.entries, self.dropped = [dict(e) for e in entries], int(dropped)


def fake_agent(state=None):
    return SimpleNamespace(
        handle=SimpleNamespace(state=state), buffer=Buffer(), counters=Counters(),
        config=AgentConfig(max_new_tokens=4, log_path="/somewhere/events.jsonl"),
        identity="abc", threshold=0.5, gate=AlwaysEmit(),
    )  # fmt: skip


def talk(agent, word, calls):
    """Stands for passes: counts, appends to the buffer and moves the state."""
    calls.append(word)
    agent.counters.passes += 3
    agent.counters.emitted += 1
    agent.buffer.entries.append({"text": word})
    agent.handle.state = torch.full((1, 4), float(len(calls)))
    return {"reply": word.upper()}


def test_a_replay_applies_what_the_computation_did(tmp_path):
    out, calls = Outputs(root=tmp_path), []
    a = fake_agent()
    first = on_agent(out, "script", {"w": "hi"}, a, talk, "hi", calls)
    b = fake_agent()
    b.config = AgentConfig(
        max_new_tokens=4, log_path="/elsewhere.jsonl"
    )  # where it logs: no matter
    second = on_agent(out, "script", {"w": "hi"}, b, talk, "hi", calls)
    assert calls == ["hi"] and first == second == {"reply": "HI"}
    assert vars(b.counters) == vars(a.counters) and b.counters.passes == 3
    assert b.buffer.to_list() == a.buffer.to_list() == [{"text": "hi"}]
    assert torch.equal(b.handle.state, a.handle.state)


def test_state_buffer_gate_settings_and_key_are_part_of_the_entry(tmp_path):
    out, calls = Outputs(root=tmp_path), []
    on_agent(out, "script", {"w": "hi"}, fake_agent(), talk, "hi", calls)
    on_agent(out, "script", {"w": "hi"}, fake_agent(torch.ones(1, 4)), talk, "hi", calls)
    c = fake_agent()
    c.buffer.entries.append({"text": "earlier"})
    on_agent(out, "script", {"w": "hi"}, c, talk, "hi", calls)
    d = fake_agent()
    d.config = AgentConfig(max_new_tokens=8)
    on_agent(out, "script", {"w": "hi"}, d, talk, "hi", calls)
    e = fake_agent()
    e.threshold = 0.9
    on_agent(out, "script", {"w": "hi"}, e, talk, "hi", calls)
    on_agent(out, "script", {"w": "yo"}, fake_agent(), talk, "yo", calls)
    assert len(calls) == 6
