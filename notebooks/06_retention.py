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
# # 06 · Retention: a fact told in running text, distractor passes, idle ticks
#
# Every earlier secret-word result wrote the key with one template and asked
# for it in the very next pass. Here the key sits **inside running text**
# (Shakespeare before and after the sentence, many write templates), then come
# `d` unrelated **distractor passes** (other text, other statements, other
# questions) and `n` **idle ticks** (u = 0), then a fresh question (many
# question templates). Everything at test is **held out**: keys, write and
# question templates, distractor wordings, filler nouns and plays never seen
# in training (`ran.tasks.realism`, pools in `ran.tasks.wordlists`).
#
# Levers, each on the same probe and budget: the **write side** (what drives
# the reservoir: the last token's attention output as before, mean or learned
# attention pooling of the layer input, one step per token; a learned **write
# gate** on how strongly a pass writes; `ran.injection.write`), and the **reservoir
# regime** (leak rate lr x spectral radius sr, a heat map: the best run's
# learned sides with the fixed reservoir swapped per cell), and the **read
# side**: free K/V slots, or the **decoded** slot (`ran.injection.decoded`:
# the state read back through pinv(W_in) and written into the residual stream
# through pinv(W_O), a few word-independent learned numbers), with or without
# the KL term that protects plain text (H1), or with a **read gate fitted before
# training** (`ran.training.read_gate`: a logistic regression on layer L's input,
# open at the end of question passes, shut on text, then frozen), trained with
# 0-4 distractor passes mixed in. References: the pure write side
# (no learned part), **no recurrence** (W = 0) and a trained recurrence (GRU);
# the **wide comparison** (`-p extended true`, saved as `06_extended`, outside
# `make all`'s budget) adds the prefix mechanism, the KL-trained read side and
# the KL trade-off. Controls on
# the identical episodes: reset, shuffled, stateless, oracle, chance. Logic
# lives in `ran.study.retention`, `ran.injection.write` and `ran.training.train`; figures in
# `ran.report.figures.retention`.

# %% [markdown]
# ## Imports

# %%
import time

import matplotlib.pyplot as plt
import pandas as pd
import torch

from ran.injection.config import InjectionConfig
from ran.injection.models import load_model
from ran.report.figures import retention as RV
from ran.reservoir import ReservoirConfig
from ran.study import h1_tradeoff as H1T
from ran.study import retention as RT
from ran.study import retention_findings as RTF
from ran.tasks.wordlists import corpus_keys
from ran.training import jobs
from ran.training.config import TrainConfig
from ran.training.train import train
from ran.util import results

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
profile = "default"  # smoke | default | paper
model_name = "smollm2-135m"  # the language model
seed = 0  # readout init, data order, probe episodes
layer = 15  # injected layer, -1 for the middle layer
threads = 2  # torch threads
k = 16  # candidates per question (chance 1/k)
k_large = 64  # the capacity point of the best configuration (0: skip)
k_large_steps = 40  # its optimiser steps (at 80 its validation peaked at step 20)
steps = 40  # optimiser steps per run (no early stopping: the budget is equal)
eval_every = 20  # validation every this many steps (the best validation step is kept)
learning_rate = 0.02  # peak AdamW learning rate (write sides may set their own: RT.WRITE_SIDES)
gate_init = 0.5  # read-gate logit at init
kl_weight = 0.0  # KL(base || injected) on plain text per step (0: off; notebook 03 uses 3.0)
kl_batch = 2  # text blocks per step for the KL term
kl_len = 48  # tokens per KL block
n_train = 3200  # training episodes per run
n_train_keys = 0  # training keys from the training plays (0: the 67 curated ones; 2000 learned nothing in 120 steps)
n_test = 96  # test episodes per point (identical for every control)
ref_rows = "pure,gru,prefix"  # rows near chance, tested on ref_n_test episodes per point
ref_n_test = 48  # test episodes per point of the reference rows
best = "decoded+asked"  # the write side of the best configuration (ran.study.retention.WRITE_SIDES)
best_lr = 0.01  # its leak rate
best_sr = 0.9  # its spectral radius
input_scaling = 0.1  # W_in scale of every run (small: the near-linear regime the decoder inverts)
units = 1024  # reservoir units N of every run
compare = "decoded,pure,gru"  # other write sides and references, best regime
h1_rows = "decoded"  # rows whose H1 (dPPL after a fact pass) is measured besides the best
kl_weights = ""  # the H1 trade-off: decoded+kl at each KL weight ("": skip)
grid_lr = "1.0,0.1,0.01,0.003"  # leak rates of the regime heat map (best run, reservoir swapped)
grid_sr = "0.5,0.9,1.2"  # spectral radii of the regime heat map
grid_n = 32  # test episodes per heat-map cell
train_distractors = "0"  # distractor counts mixed in training (comma list)
train_idle = "0"  # idle tick counts mixed in training
adapter_name = "smollm2-135m-fact-asked"  # the best run's adapter, under data/adapters/ (H1-safe)
memory_adapter = "smollm2-135m-fact"  # the adapter of ran demo and the agent (notebook 07), from:
memory_row = "decoded"  # ... this write side's run (reads at every prompt token; else the best)
d_list = "0,1,2,4,8,16"  # distractor passes tested
idle_list = "0,2,8,32"  # idle ticks tested
extended = False  # the wide comparison (`wide` below), saved as 06_extended; outside make all

# %%
smoke = dict(model_name="tiny-llama", adapter_name="tiny-llama-fact-asked", memory_adapter="tiny-llama-fact", layer=-1, k=4, k_large=0, steps=3, eval_every=1, n_train=96,
             n_train_keys=0, n_test=16, ref_n_test=16, compare="pure", h1_rows="", kl_weights="1", grid_lr="0.1,0.01", grid_sr="0.9", grid_n=8, units=64,
             d_list="0,2", idle_list="0,4", train_distractors="0,1", train_idle="0,2")  # fmt: skip
# the wide comparison: python -m ran run --only 06 -p extended true (the default rows load cached)
wide = dict(compare="decoded,decoded+kl,pure,gru,prefix", kl_weights="3,30")
if profile == "smoke":
    globals().update(smoke)
default_compare = compare  # the rows make all trains (the wide findings name the others)
if extended:
    globals().update(wide)
name = "06_extended" if extended else "06_retention"  # results file and figure
outputs = results.Outputs(profile)
torch.set_num_threads(threads)
ints = results.parse_list
keys = list(corpus_keys(load_model(model_name)[1], n_train_keys)) if n_train_keys else []
probe_params = dict(k=k, n_train=n_train, n_val=64, n_test=32, **({"train_keys": keys} if keys else {}),
                    distractors=ints(train_distractors), idle_steps=ints(train_idle))  # fmt: skip
if profile == "smoke":
    probe_params |= dict(n_val=16)
reservoir = ReservoirConfig(units=units, input_scaling=input_scaling)
injection = InjectionConfig(layer=None if layer < 0 else layer, gate_init=gate_init,
                            query_gate=True, reservoir=reservoir)  # fmt: skip
base = TrainConfig(model_name=model_name, injection=injection, probe="fact_in_text",
                   probe_params=probe_params, steps=steps, learning_rate=learning_rate,
                   batch_size=16, warmup_steps=5, eval_every=eval_every, patience=0,
                   seed=seed, kl_weight=kl_weight, kl_batch=kl_batch, kl_len=kl_len)  # fmt: skip
print(f"profile={profile}: {model_name}, K={k}, {len(keys)} training keys, {steps} steps")

# %% [markdown]
# ## Compute
# ### Write sides at the best regime, the no-recurrence reference, the regime grid

# %%
t0 = time.perf_counter()
configs, _, large_cfg = RT.plan(base, best, best_lr, best_sr, results.parse_list(compare, str, allow_empty=True),
                                k_large=k_large, large_steps=k_large_steps)  # fmt: skip
kl_cfgs = H1T.kl_plan(base, best_lr, best_sr, ints(kl_weights, float, allow_empty=True))
jobs.train_all(
    [*configs.values(), *kl_cfgs.values(), *([large_cfg] if large_cfg else [])], outputs
)  # 2 workers
refs = results.parse_list(ref_rows, str, allow_empty=True)
memory_label = next((lb for lb in configs if lb.split(" ")[0] == memory_row), next(iter(configs)))
measured, train_s, runs = {}, 0.0, {}  # runs: hash, loaded, wall time of every training
for label, cfg in configs.items():
    run = train(cfg, outputs, progress=False, lazy=True)
    train_s += 0 if run.loaded else run.wall_time_s
    runs[label] = dict(hash=run.hash, loaded=run.loaded, wall_time_s=run.wall_time_s)
    nt = ref_n_test if label.split(" ")[0] in refs else n_test
    measured[label] = RT.study(run, outputs, ints(d_list), ints(idle_list), nt)
    if label == memory_label:  # the agent's and ran demo's memory
        memory = RT.save_adapter(run, outputs, memory_adapter)
    if label == next(iter(configs)):  # the best run: its adapter, H1, grid
        adapter = RT.save_adapter(run, outputs, adapter_name)
        h1 = {label: H1T.h1_point(run, n_test, outputs)}
        grid_rows = RT.regime_grid(run, outputs, ints(grid_lr, float), ints(grid_sr, float), grid_n,
                                   idle=max(ints(idle_list)), distractors=8)  # fmt: skip
        print("H1:", {k: round(v["dppl_pct"], 2) for k, v in h1.items()})
    if label.split(" ")[0] in results.parse_list(h1_rows, str, allow_empty=True):
        h1[label] = H1T.h1_point(run, n_test, outputs)
    m = measured[label]
    print(label, run.hash, {p["distractors"]: round(p["reservoir"]["acc"], 3) for p in m["distractors"]},
          {p["idle_steps"]: round(p["reservoir"]["acc"], 3) for p in m["idle"]})  # fmt: skip
    del run
grid_df = pd.DataFrame(grid_rows)
best_label = next(iter(configs))

# %% [markdown]
# ### H1 against recall: the KL weight (query-gated decoded read side, last step kept)

# %%
tradeoff = []
for label, cfg in kl_cfgs.items():
    run = train(cfg, outputs, progress=False, lazy=True)
    train_s += 0 if run.loaded else run.wall_time_s
    runs[label] = dict(hash=run.hash, loaded=run.loaded, wall_time_s=run.wall_time_s)
    tradeoff.append(H1T.tradeoff_point(run, outputs, n_test))
    p = tradeoff[-1]
    print(label, run.hash, round(p["d0"]["reservoir"]["acc"], 3), round(p["d"]["reservoir"]["acc"], 3),
          f"dPPL {p['h1']['dppl_pct']:+.2f}%", p["openness"])  # fmt: skip
    del run

# %% [markdown]
# ### Capacity: the best configuration at K = 64 (held-out keys)

# %%
large = None
if large_cfg is not None:
    run = train(large_cfg, outputs, progress=False, lazy=True)
    runs[f"K = {k_large}"] = dict(hash=run.hash, loaded=run.loaded, wall_time_s=run.wall_time_s)
    large = dict(hash=run.hash, train_min=run.wall_time_s / 60,
                 d0=RT.evaluate_condition(run, outputs, n_test, RT.POINT_CONTROLS),
                 d8=RT.evaluate_condition(run, outputs, n_test, RT.CURVE_CONTROLS, distractors=(8,)))  # fmt: skip
    print("K =", k_large, {c: round(large["d0"][c]["acc"], 3) for c in RT.POINT_CONTROLS})
    del run
compute_s = time.perf_counter() - t0

# %% [markdown]
# ## Figures

# %%
chance = 1.0 / k
bars = pd.DataFrame(RTF.bar_rows(measured))
fig = RV.figure({lb: m["distractors"] for lb, m in measured.items()},
                {lb: m["idle"] for lb, m in measured.items()}, bars, chance,
                grid_df if len(grid_df) > 1 else None)  # fmt: skip
fig_path = outputs.figure_path(f"{name}.png")
fig.savefig(fig_path, dpi=130, bbox_inches="tight")
plt.show()
trade_path = None
if tradeoff:
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    RV.tradeoff(ax, pd.DataFrame(H1T.tradeoff_rows(tradeoff)), chance, H1T.DPPL_TARGET_PCT)
    trade_path = outputs.figure_path("06_h1_tradeoff.png")
    fig.savefig(trade_path, dpi=130, bbox_inches="tight")
    plt.show()

# %% [markdown]
# ## Save

# %%
esn_path = outputs.results / "01_esn_dynamics.json"  # notebook 01 runs first in the pipeline
esn = RTF.esn_context(
    results.load_results("01_esn_dynamics", outputs) if esn_path.exists() else None
)
trade_blocks = H1T.tradeoff_findings(tradeoff, best_label, h1.get(best_label), trade_path, outputs)
if extended:  # the wide comparison's findings name the rows make all does not train
    default_rows = list(
        RT.plan(base, best, best_lr, best_sr, ints(default_compare, str, allow_empty=True))[0]
    )
    findings = RTF.extended_findings(measured, default_rows, k, fig_path, outputs, trade_blocks)  # fmt: skip
else:
    findings = RTF.findings(measured, best_label, grid_df, large, k, k_large, fig_path, outputs, h1, esn,
                           trade_blocks)  # fmt: skip
payload = dict(configs={lb: c.to_dict() | {"hash": c.config_hash()} for lb, c in configs.items()},
               measured=measured, grid=grid_rows, large=large, tradeoff=tradeoff, train_s=train_s, runs=runs, adapter=adapter, memory_adapter=memory, h1=h1,
               compute_s=compute_s, n_train_keys=len(keys), probe_params=probe_params | {"train_keys": len(keys)})  # fmt: skip
path = results.save_results(name, payload, outputs, seed=seed, model_name=model_name,
                            wall_time_s=time.perf_counter() - t0, findings=findings)  # fmt: skip
print(path)
for f in findings:
    print(f.get("text") or f.get("caption"))
