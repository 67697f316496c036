"""The Reservoir Agent: a persistent process whose reservoir state and context buffer are never wiped.

Modules, one concept each:

* :mod:`~ran.agent.config`: :class:`AgentConfig`, :class:`SchedulerConfig`, :class:`AgentError`;
* :mod:`~ran.agent.runtime`: :class:`ReservoirAgent`, the passes (prompted, idle, review);
* :mod:`~ran.agent.scheduler`: the asyncio :class:`Scheduler` (queue, idle timers);
* :mod:`~ran.agent.clock`: :class:`RealClock` and the tests' :class:`FakeClock`;
* :mod:`~ran.agent.events`: :class:`Event`, the JSON-lines log, the async fan-out;
* :mod:`~ran.agent.buffer`: the token-budgeted context buffer;
* :mod:`~ran.agent.checkpoint`: crash-safe checkpoints tied to the adapter;
* :mod:`~ran.agent.sanitize`: bad input made safe or refused;
* :mod:`~ran.agent.passes`: one pass's forward, features and reply;
* :mod:`~ran.agent.gate`, :mod:`~ran.agent.gate_probe`, :mod:`~ran.agent.gate_train`: the
  output gate, its probe, its training and scores;
* :mod:`~ran.agent.measure`: interrupt latency and the elapsed-time probe;
* :mod:`~ran.agent.findings`: notebook 07's findings sentences and captions;
* :mod:`~ran.agent.script`: scripted conversations; :mod:`~ran.agent.cli`: ``python -m ran agent``.

Example
-------
>>> from ran.agent import AgentConfig, ReservoirAgent  # doctest: +SKIP
>>> agent = ReservoirAgent.from_adapter("data/adapters/smollm2-135m-fact",
...                                     AgentConfig(checkpoint_dir="build/agent/ck"))
>>> agent.send("Agent, what is the capital of France?").text
"""

from __future__ import annotations

import importlib

_LAZY = {
    "AgentConfig": "ran.agent.config",
    "SchedulerConfig": "ran.agent.config",
    "AgentError": "ran.agent.config",
    "ReservoirAgent": "ran.agent.runtime",
    "Request": "ran.agent.runtime",
    "Counters": "ran.agent.runtime",
    "Scheduler": "ran.agent.scheduler",
    "RealClock": "ran.agent.clock",
    "FakeClock": "ran.agent.clock",
    "Event": "ran.agent.events",
    "read_log": "ran.agent.events",
    "OutputGate": "ran.agent.gate",
    "AlwaysEmit": "ran.agent.gate",
    "GateProbe": "ran.agent.gate_probe",
    "train_and_score": "ran.agent.gate_train",
    "run_script": "ran.agent.script",
    "parse_script": "ran.agent.script",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ran.agent' has no attribute {name!r}")
