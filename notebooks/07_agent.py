# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · The Reservoir Agent
#
# A persistent process around one injected model: the reservoir state r(t) and a
# token-budgeted context buffer belong to the runtime and are never wiped between
# passes. A scheduler runs a prompted pass when a message arrives and an unprompted
# one when an idle timer fires (an idle tick with u = 0, or a pass over the buffer);
# an output gate decides after every pass whether to emit or stay silent; every pass
# is checkpointed atomically. This notebook trains the gate on its own probe and
# scores it against a stateless gate and always-emit, measures interrupt latency
# and an elapsed-time readout of the state, plays the scripted conversation (a fact
# told in passing, unrelated turns and idle ticks, then a question; and the same
# script with the state reset before the question), and draws r(t) in a fixed PCA
# plane. With `interactive = True` the last cell is a chat panel with a live plot.
# Logic lives in `ran.agent`.

# %% [markdown]
# ## Imports

# %%
import shutil
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from ran.agent import demo, measure, replay, viz
from ran.agent import findings as agent_findings
from ran.agent.checkpoint import agent_identity
from ran.agent.config import AgentConfig
from ran.agent.gate import AlwaysEmit
from ran.agent.gate_probe import GateProbe
from ran.agent.gate_train import train_and_score
from ran.agent.runtime import GATE_DIR, ReservoirAgent
from ran.cli.common import load_adapter
from ran.tasks import wordlists as WL
from ran.util import results

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
profile = "default"  # smoke | default | paper
adapter = "data/adapters/smollm2-135m-fact"  # memory adapter (smoke: an untrained tiny one)
seed = 0  # gate probe, clock probe and the latency arrival times
n_train = 24  # gate probe training conversations
n_val = 8  # gate probe validation conversations (weight decay, threshold)
n_test = 16  # gate probe test conversations (reported)
turns = 8  # turns per gate conversation
clock_train = 24  # elapsed-time probe training episodes
clock_test = 16  # elapsed-time probe test episodes
latency_messages = 8  # messages of the interrupt-latency measurement
latency_idle_every = 0.05  # idle tick period (s) while they arrive
key = "castle"  # the fact of the scripted conversation
recall_keys = 16  # the script again for this many held-out test keys and templates (0: skip)
max_new_tokens = 16  # tokens per reply
interactive = False  # True: an ipywidgets chat panel with a live plot of r(t)
threads = 2  # torch threads (2: the notebook has the machine to itself)

# %%
outputs = results.Outputs(profile)
torch.set_num_threads(threads)
t0 = time.perf_counter()
# smoke: an untrained tiny-llama adapter and small probes, seconds
smoke = dict(adapter=str(outputs.build / "agent" / "tiny-adapter"), n_train=6, n_val=3, n_test=4, turns=6,
             clock_train=4, clock_test=3, latency_messages=3, recall_keys=2)  # fmt: skip
if profile == "smoke":
    globals().update(smoke)
    demo.smoke_adapter(adapter)  # written once
adapter_dir = Path(adapter) if Path(adapter).is_absolute() else results.REPO_ROOT / adapter
if not (adapter_dir / "adapter_config.json").is_file():
    raise FileNotFoundError(f"there is no trained memory adapter at {adapter_dir}; train it first "
                            "(python -m ran train CONFIG --out DIR) or pass -p adapter DIR.")  # fmt: skip
model, tok, handle, adapter_doc = load_adapter(adapter_dir)
model_name = adapter_doc["base_model"]["name"]
probe = GateProbe(n_train=n_train, n_val=n_val, n_test=n_test, turns=turns, seed=seed)
print(f"profile={profile}: {model_name}, adapter {adapter_dir.name}, N = {handle.reservoir.units}")

# %% [markdown]
# ## Compute
# ### The output gate: trained on its probe, against a stateless gate and always-emit
#
# Features after each pass: the final hidden state at the pass's last token, r(t)
# (the stateful gate only) and the pass kind. Held-out test wordings; precision and
# recall with Wilson 95% CIs, F1 with a bootstrap over conversations.

# %%
t1 = time.perf_counter()
probe_data = {}  # the features of every turn, kept for the PCA plane below
gates, gate_report = train_and_score(
    handle, tok, probe, agent_identity(handle), data_out=probe_data, outputs=outputs
)
gate_s = time.perf_counter() - t1
gate_path = gates["stateful"].save(adapter_dir / GATE_DIR)
for name in ("stateful", "stateless", "always"):
    s = gate_report[name]["scores"]
    print(f"{name:>9}: P {s['precision']['value']:.2f} R {s['recall']['value']:.2f} "
          f"F1 {s['f1']['value']:.2f} {np.round(s['f1']['ci95'], 2)}")  # fmt: skip

# %% [markdown]
# ### Elapsed time from the state, and interrupt latency

# %%
clock = measure.elapsed_probe(handle, tok, n_train=clock_train, n_test=clock_test, seed=seed,
                              outputs=outputs)  # fmt: skip
print(f"clock: acc {clock['acc']:.2f} {np.round(clock['ci95'], 2)} (chance {clock['chance']:.2f}), "
      f"MAE {clock['mae_ticks']:.1f} ticks (constant guess {clock['mae_ticks_constant']:.1f})")  # fmt: skip
home = outputs.build / "agent" / f"07_{adapter_dir.name}"  # this run's checkpoint and log
shutil.rmtree(home, ignore_errors=True)  # every run starts from a fresh agent
cfg = AgentConfig(max_new_tokens=max_new_tokens, checkpoint_dir=str(home / "checkpoint"),
                  log_path=str(home / "events.jsonl"))  # fmt: skip
agent = ReservoirAgent(handle, tok, gates["stateful"], cfg, adapter_dir)
latency = measure.interrupt_latency(
    agent, n=latency_messages, idle_every=latency_idle_every, seed=seed
)
print(f"latency: waited passes {latency['waited_passes']}, first token median "
      f"{latency['first_token_ms']['median']:.0f} ms (p95 {latency['first_token_ms']['p95']:.0f})")  # fmt: skip

# %% [markdown]
# ### The scripted conversation and its reset control

# %%
agent.reset_state()
trace = demo.StateTrace(agent)
check = demo.memory_check(agent, key)
trace.close()
rows = trace.rows
n_memory = check["memory"]["passes"]
traces = {"as written": rows[:n_memory], "state reset before the question": rows[n_memory:]}
for name in ("memory", "reset"):
    print(
        f"{name}: emitted={check[name]['emitted']} reply={check[name]['reply']!r} has key={check[name]['has_key']}"
    )
over = heard = None
if recall_keys:
    pools = WL.POOLS
    args = (pools["keys"]["test"][:recall_keys], pools["write"]["test"], pools["question"]["test"])
    over = replay.on_agent(
        outputs, "recall_keys", {"args": args}, agent, demo.recall_over_keys, *args
    )
    with agent.using_gate(AlwaysEmit()):  # the memory alone: every reply emitted
        heard = replay.on_agent(
            outputs, "recall_keys", {"args": args}, agent, demo.recall_over_keys, *args
        )
    for name, o in (("gate", over), ("every reply", heard)):
        print(f"held-out keys ({name}): as written {o['memory']['hits']}/{o['n']} "
              f"({o['memory']['emitted']} emitted), reset {o['reset']['hits']}/{o['n']}")  # fmt: skip

# %% [markdown]
# ### r(t) in a fixed PCA plane
#
# The projection is fitted once on the states of the gate probe's test turns and
# kept fixed. With `interactive = True` this cell shows the chat panel (the plot
# follows every pass, idle ticks included); otherwise it draws the scripted
# conversation statically.

# %%
projection = viz.Projection(np.stack([s.numpy() for s in probe_data["test"]["state"]]))
if interactive:
    from IPython.display import display

    from ran.agent.config import SchedulerConfig
    from ran.agent.panel import chat_panel

    panel = chat_panel(agent, projection, SchedulerConfig(idle_every=2.0))
    display(panel)
else:
    fig = viz.trajectory_figure(projection, traces)
    p_traj = outputs.figure_path("07_agent_state.png")
    fig.savefig(p_traj, dpi=120, metadata={"Software": None})
    plt.show()

# %%
fig = viz.gate_figure(gate_report)
p_gate = outputs.figure_path("07_agent_gate.png")
fig.savefig(p_gate, dpi=120, metadata={"Software": None})
fig = viz.clock_figure(clock)
p_clock = outputs.figure_path("07_agent_clock.png")
fig.savefig(p_clock, dpi=120, metadata={"Software": None})
plt.show()

# %% [markdown]
# ## Save

# %%
figures = {"gate": p_gate, "clock": p_clock} | ({} if interactive else {"trajectory": p_traj})
findings = agent_findings.findings(model_name, key, check, gate_report, latency, clock, latency_idle_every,
                                   figures, outputs, over, cfg.read, heard)  # fmt: skip
payload = {
    "adapter": str(adapter_dir.name),
    "identity": agent.identity,
    "keys": over,
    "keys_every_reply": heard,
    "read": cfg.read,
    "gate": gate_report,
    "gate_path": outputs.rel(gate_path) if gate_path.is_relative_to(outputs.base) else str(gate_path),
    "clock": clock,
    "latency": latency,
    "memory_check": check,
    "counters": vars(agent.counters),
    "timing": {"gate_s": gate_s},
    "settings": dict(model_name=model_name, units=handle.reservoir.units, probe=probe.params(),
                     max_new_tokens=max_new_tokens, torch_threads=threads),
}  # fmt: skip
if not interactive:  # the chat panel keeps the agent running (and logging) after Run All
    agent.close()
path = results.save_results("07_agent", payload, outputs, seed=seed, model_name=model_name,
                            wall_time_s=time.perf_counter() - t0, findings=findings)  # fmt: skip
print(f"saved {outputs.rel(path)}")
for f in findings:
    print(f.get("text", f.get("caption")))
