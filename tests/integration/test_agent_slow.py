"""The scripted conversation on the embedded model with the trained memory adapter (slow).

A fact told inside a normal message, unrelated turns and idle ticks, then a question:
the agent answers with the fact, and the same script with the state reset before the
question does not. Skipped when ``data/adapters/smollm2-135m-fact`` is missing.
"""

from __future__ import annotations

import pytest

from ran.agent import demo
from ran.agent.config import AgentConfig
from ran.agent.gate import AlwaysEmit
from ran.agent.runtime import GATE_DIR, ReservoirAgent
from ran.mechanisms.adapter import CONFIG_NAME, load_adapter_config
from ran.util.results import REPO_ROOT

ADAPTER = REPO_ROOT / "data" / "adapters" / "smollm2-135m-fact"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (ADAPTER / CONFIG_NAME).is_file(),
        reason=f"the trained memory adapter {ADAPTER} is missing; train it "
        f"(python -m ran train CONFIG.json --out {ADAPTER}) to run the scripted conversation",
    ),
]


def _key() -> str:
    """A key the adapter never saw in training when its probe holds keys out, else its first."""
    from ran.tasks.probes import make_probe

    training = load_adapter_config(ADAPTER).get("training") or {}
    try:
        probe = make_probe(training["probe"], **(training.get("probe_params") or {}))
    except (KeyError, ValueError):
        return "castle"
    if hasattr(probe, "pool"):
        return probe.pool("keys", "test")[0]
    return probe.keys[0] if hasattr(probe, "keys") else "castle"


def test_scripted_conversation_answers_with_the_fact_and_not_after_a_reset():
    gate = None if (ADAPTER / GATE_DIR).is_dir() else AlwaysEmit()  # the adapter's gate if trained
    agent = ReservoirAgent.from_adapter(ADAPTER, AgentConfig(max_new_tokens=8), gate=gate)
    try:
        key = _key()
        check = demo.memory_check(agent, key)
        assert check["memory"]["emitted"], f"the gate stayed silent on the question: {check}"
        assert check["memory"]["has_key"], f"the reply does not contain {key!r}: {check}"
        assert not check["reset"]["has_key"], f"the reset control still answers {key!r}: {check}"
    finally:
        agent.handle.remove()
