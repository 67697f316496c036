"""Notebook 07 in the smoke profile (papermill, tiny-llama, seconds), and its chat panel."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from agent_helpers import load_handle, make_adapter

from ran import pipeline
from ran.util.results import Outputs


def test_notebook_07_runs_headless_in_the_smoke_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("RAN_ROOT", str(tmp_path))
    src = pipeline.NOTEBOOK_DIR / "07_agent.py"
    assert src in pipeline.list_notebooks()
    pipeline.run_notebook(src, Outputs("smoke"), progress=False)
    out = Outputs("smoke")
    doc = json.loads((out.results / "07_agent.json").read_text())
    res = doc["results"]
    assert doc["meta"]["model_name"] == "tiny-llama"
    heads = [f for f in doc["findings"] if f.get("headline")]
    assert len(heads) == 1 and heads[0]["text"].startswith("Free generation over 2 held-out keys")
    assert res["keys"]["n"] == res["keys_every_reply"]["n"] == 2
    assert {"stateful", "stateless", "always"} <= set(res["gate"])
    assert res["memory_check"]["memory"]["passes"] == res["memory_check"]["reset"]["passes"] > 5
    assert res["latency"]["max_concurrent"] == 1 and res["latency"]["max_waited_passes"] <= 1
    for name in ("07_agent_state.png", "07_agent_gate.png", "07_agent_clock.png"):
        assert (out.figures / name).stat().st_size > 1000


def test_chat_panel_builds_and_queues_messages(tmp_path):
    pytest.importorskip("ipywidgets")
    from ran.agent.config import AgentConfig
    from ran.agent.panel import chat_panel
    from ran.agent.runtime import ReservoirAgent
    from ran.agent.viz import Projection

    handle, tok = load_handle(make_adapter(tmp_path / "a"))
    agent = ReservoirAgent(handle, tok, None, AgentConfig())
    proj = Projection(np.random.default_rng(0).normal(size=(8, handle.reservoir.units)))
    panel = chat_panel(agent, proj)
    panel.send("hello there")
    panel.send("/idle 2")
    panel.send("/dance")  # shown as an error line, nothing queued
    assert [r.kind for r in panel.scheduler.queue] == ["message", "idle", "idle"]
    log, plot = panel.children[2].children  # set directly, not captured (see ran.agent.panel)
    assert "you&gt; hello there" in log.value and "you&gt; /dance\n! " in log.value
    (out,) = plot.outputs
    assert base64.b64decode(out["data"]["image/png"]).startswith(b"\x89PNG")
    panel.stop()
    handle.remove()
