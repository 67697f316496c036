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
# # 03 · H1: cross-pass memory without destroying the language model
#
# Two questions. (1) Once only the readout and the gates are trained (a
# per-head gate and, by default, a per-token query gate that lets the memory
# open for some tokens only), does the reservoir carry information **across
# independent forward passes**? H1 is measured on the fact memory
# (`ran.fact_memory()`, `h1_run`), whose read gate is fitted before training to
# stay shut on plain text; the secret-word runs add the KL divergence from the
# base model on plain text (`kl_weight`) only when H1 is measured on them.
# Three probes (`ran.tasks.probes`), every control on the identical test episodes
# (`ran.tasks.episodes.evaluate`): *reset* (state wiped before the question),
# *shuffled* (another episode's state), *stateless* (gate closed = the base
# model), *oracle* (all passes in one context) and chance, with 95% Wilson
# CIs. (2) **Non-destruction**: held-out Shakespeare perplexity of the base,
# the injected model at init (must be bit-identical), the trained model with
# its state carried from block to block, and after 1000 carried passes; state
# norms after 1000 carried and 10,000 idle passes; 500-token greedy generation
# with the state advancing per forward call; the forward-time overhead.
# Logic lives in `ran.training.train`, `ran.study.h1`, `ran.evaluation.quality` and `ran.report.figures.probes`; evaluations are
# cached by run and code (`ran.util.memo`), so a warm rerun takes minutes.

# %% [markdown]
# ## Imports

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from ran.injection.config import InjectionConfig
from ran.injection.models import load_model
from ran.report.figures import probes as probe_viz
from ran.reservoir import ReservoirConfig
from ran.study import h1
from ran.tasks.data import shakespeare_lines, token_blocks
from ran.tasks.episodes import CONTROLS, evaluate
from ran.training import jobs
from ran.training.config import TrainConfig
from ran.training.train import train
from ran.util import results
from ran.util.configio import updated
from ran.util.memo import memo

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
profile = "default"  # smoke | default | paper
model_name = "smollm2-135m"  # the language model
seed = 0  # readout init, data order, probe episodes
layer = 15  # injected layer, -1 for the middle layer
threads = 2  # torch threads (2 when the notebook has the machine to itself)
lr = 0.02  # peak learning rate of the elapsed and idle runs
kl_weight = (
    0.0  # KL from the base model on plain text in the secret-word runs (0: off; H1 is measured
)
# on the fact memory, whose fitted read gate guards plain text; 3.0 when h1_run = "secret_word")
kl_batch = 2  # text blocks per step for the KL term
kl_len = 48  # tokens per KL block
query_gate = True  # per-token gate on the slots from layer L's input (opens for questions only)
input_scaling = 1.0  # reservoir input scaling of every run (see notebook 04's scaling)
n_train = 3200  # training episodes per probe
n_test = 128  # test episodes per probe (identical for every control)
k_list = "6,16,32,64"  # K of the capacity curve (comma string)
train_k_list = "16,64"  # K with trained readouts (a K uses the next trained K up)
steps_list = "100,120"  # optimiser steps per trained K (upper bound, early stopping)
lr_list = "0.02,0.05"  # peak learning rate per trained K (64 keys learn slowly at 0.02)
h1_k = 16  # K of the secret-word readout saved as the k adapter (and of the fact memory)
h1_run = "fact_memory"  # the run H1, generation and overhead are measured on: "fact_memory"
# (ran.fact_memory(), notebook 06's best configuration, the library's default) or
# "secret_word" (the easy-template readout at K = h1_k)
fact_overrides = "{}"  # TrainConfig overrides of the fact memory (JSON; smoke: a tiny one)
elapsed_steps = 50  # optimiser steps of the elapsed-passes run
k_max = 4  # elapsed passes: answers 0..k_max
pre_max = 4  # filler passes before the event, 0..pre_max (counting from the reset fails)
idle_sr_list = "0.9,1.1"  # spectral radii of the idle-retention runs
idle_k = 8  # keys of the idle-retention probe
idle_steps = 60  # optimiser steps of each idle-retention run
idle_train_list = "0,1,2,4,8,16"  # idle counts mixed in training
idle_eval_list = "0,2,8,32"  # idle counts tested
idle_n_test = 48  # test episodes per idle count
ppl_blocks = 16  # held-out blocks for perplexity
block_len = 256  # tokens per block
carried = 1000  # carried passes before the last perplexity
idle_long = 10000  # idle passes of the stability check
gen_tokens = 500  # greedy tokens per prompt
n_gen_prompts = 3  # generation prompts
overhead_reps = 10  # interleaved timing repetitions

# %%
smoke = dict(model_name="tiny-llama", layer=-1, steps_list="6", lr_list="0.02", n_train=256, n_test=32,
             k_list="4,8", train_k_list="8", h1_k=8, elapsed_steps=4, idle_sr_list="0.9,1.1", idle_steps=4,
             idle_eval_list="0,2,8", idle_n_test=16, ppl_blocks=4, block_len=64, carried=50, idle_long=1000,
             gen_tokens=30, n_gen_prompts=1, overhead_reps=3,
             fact_overrides='{"steps": 3, "probe_params": {"n_train": 96, "n_val": 16},'
                            ' "injection": {"reservoir": {"units": 64}}}')  # fmt: skip
if profile == "smoke":
    globals().update(smoke)
outputs = results.Outputs(profile)
torch.set_num_threads(threads)
ks = results.parse_list(k_list)
train_ks = results.parse_list(train_k_list)
train_steps = dict(zip(train_ks, results.parse_list(steps_list), strict=True))
train_lr = dict(zip(train_ks, results.parse_list(lr_list, float), strict=True))
idle_srs = results.parse_list(idle_sr_list, float)
idle_train = tuple(results.parse_list(idle_train_list))
idle_eval = results.parse_list(idle_eval_list)
WRITE = ("The secret word is {key}.",)
injection = InjectionConfig(layer=None if layer < 0 else layer, query_gate=query_gate,
                            reservoir=ReservoirConfig(input_scaling=input_scaling))  # fmt: skip
common = dict(model_name=model_name, injection=injection, learning_rate=lr,
              batch_size=16, warmup_steps=5, eval_every=20, patience=2, seed=seed,
              kl_weight=kl_weight, kl_batch=kl_batch, kl_len=kl_len)  # fmt: skip
sw_params = dict(n_train=n_train, n_val=64, n_test=128, write_templates=WRITE)
fact_cfg = h1.fact_config(h1_run, model_name, h1_k, layer, seed, fact_overrides)  # None: sw
t_start = time.perf_counter()
print(f"profile={profile}: {model_name}, K={ks} (readouts at {train_ks}), steps={train_steps}")

# %% [markdown]
# ## Compute
# ### Every training run of the notebook
#
# Trained up front in 2 worker processes of 1 torch thread when the machine has 2
# cores (`ran.training.jobs.train_all`; bit-identical to training them one after another in one
# process of 1 thread, while this notebook's 2 threads would round differently); the
# cells below load them from the run cache.

# %%
cap_cfgs = {k: TrainConfig(probe="secret_word", probe_params=sw_params | {"k": k},
                           steps=train_steps[k], **common | {"learning_rate": train_lr[k]})
            for k in train_ks}  # fmt: skip
el_params = dict(k_max=k_max, pre_max=pre_max, n_train=n_train, n_val=64, n_test=n_test)
el_cfg = TrainConfig(probe="elapsed", probe_params=el_params, steps=elapsed_steps, **common)
id_params = dict(k=idle_k, idle_steps=idle_train, n_train=n_train, n_val=64, n_test=128,
                 write_templates=WRITE)  # fmt: skip
idle_cfgs = {sr: updated(TrainConfig(probe="idle_retention", probe_params=id_params,
                                     steps=idle_steps, **common),
                         injection={"reservoir": {"sr": sr}})
             for sr in idle_srs}  # fmt: skip
jobs.train_all([*cap_cfgs.values(), el_cfg, *idle_cfgs.values(), *([fact_cfg] if fact_cfg else [])],
               outputs)  # fmt: skip

# %% [markdown]
# ### Secret-word capacity (every control, identical test episodes)

# %%
runs, capacity = {}, {}
trained = {}
for k in train_ks:
    trained[k] = train(cap_cfgs[k], outputs, progress=False)
    runs[f"secret_word K={k}"] = trained[k]
for k in ks:
    res = trained[h1.readout_for(k, train_ks)]
    eps = h1.probe_test_episodes("secret_word", sw_params, seed, k=k, n_test=n_test)
    capacity[k], t_eval = h1.timed(memo, outputs, "capacity", dict(run=res.hash, k=k, n=n_test),
                                   evaluate, res.handle, res.tokenizer, eps, CONTROLS, 32)  # fmt: skip
    print(f"K={k} (readout K={h1.readout_for(k, train_ks)}, {t_eval:.0f} s): "
          + ", ".join(f"{c} {capacity[k][c]['acc']:.3f}" for c in CONTROLS))  # fmt: skip
sw_k = h1.readout_for(h1_k, train_ks)
sw_main = trained[sw_k]  # the k adapter (ran demo, README)
for k in train_ks:
    if trained[k] is not sw_main:
        del trained[k].model, trained[k].handle
main, h1_label = sw_main, f"secret_word K={sw_k}"  # serves H1, generation and overhead ...
if fact_cfg is not None:  # ... unless it is the fact memory, the library's default
    h1_label = h1.FACT_LABEL
    main = runs[h1_label] = train(fact_cfg, outputs, progress=False)
print(f"H1, generation and overhead on {h1_label} ({main.hash})")

# %% [markdown]
# ### Elapsed passes (scored on the answer step only)

# %%
el_run = train(el_cfg, outputs, progress=False)
runs["elapsed"] = el_run
elapsed = el_run.evaluate("test", CONTROLS)
print(", ".join(f"{c} {elapsed[c]['acc']:.3f}" for c in CONTROLS))
del el_run.model, el_run.handle

# %% [markdown]
# ### Idle retention across spectral radii (trained with mixed idle counts)

# %%
idle_curves = {}
for sr in idle_srs:
    r = train(idle_cfgs[sr], outputs, progress=False)
    runs[f"idle_retention sr={sr:g}"] = r
    idle_curves[f"sr={sr:g}"] = [
        memo(outputs, "idle", dict(run=r.hash, idle=n, n=idle_n_test), evaluate, r.handle,
             r.tokenizer, h1.probe_test_episodes("idle_retention", id_params, seed,
             idle_steps=(n,), n_test=idle_n_test), ("reservoir",), 32)["reservoir"]
        for n in idle_eval
    ]  # fmt: skip
    print(f"sr={sr:g}: " + ", ".join(f"{s['acc']:.2f}" for s in idle_curves[f"sr={sr:g}"]))
    del r.model, r.handle

# %% [markdown]
# ### H1: perplexity of the base, at init (bit-exact), trained, after carried passes

# %%
t_h1 = time.perf_counter()
plain, tok = load_model(model_name, seed=0)
blocks = token_blocks(tok, "test", block_len, ppl_blocks)
lines = [ln for ln in shakespeare_lines("train") if len(ln) >= 20][:carried]
h1_key = dict(
    run=main.hash, blocks=ppl_blocks, block_len=block_len, carried=carried, idle=idle_long
)
nd = memo(outputs, "h1", h1_key, h1.nondestruction, plain, main, blocks, lines, idle_long)
ppl, init_equal, carry = nd["ppl"], nd["init_equal"], nd["carry"]
after_blocks, idle_stab = nd["after_blocks"], nd["idle"]
ppl_s = time.perf_counter() - t_h1
base_ppl = ppl["base"].ppl
dppl = {name: 100 * (p.ppl / base_ppl - 1) for name, p in ppl.items()}
print({n: round(p.ppl, 4) for n, p in ppl.items()}, f"init logits equal: {init_equal}")
print(f"after {carried} carried passes: {carry['norm']:.3f}; after {idle_long} idle: "
      f"{idle_stab['norm']:.3g} finite={idle_stab['finite']} ({ppl_s:.0f} s)")  # fmt: skip

# %% [markdown]
# ### Greedy generation with the state advancing per forward call; overhead

# %%
t_gen = time.perf_counter()
test_lines = [ln for ln in shakespeare_lines("test") if len(ln) >= 40]
prompts = [test_lines[i * len(test_lines) // max(1, n_gen_prompts)] for i in range(n_gen_prompts)]
gen = memo(outputs, "generation", dict(run=main.hash, prompts=prompts, tokens=gen_tokens),
           h1.generation_pair, plain, main, prompts, gen_tokens)  # fmt: skip
gen_state = gen.pop("state")
gen_mean = {n: {m: float(np.mean([s[m] for s in v])) for m in ("rep4", "distinct2", "base_ppl")}
            for n, v in gen.items()}  # fmt: skip
gen_s = time.perf_counter() - t_gen
main.handle.reset_state()
ovh = h1.overhead(plain, main.model, seq_len=block_len, reps=overhead_reps, seed=seed)
print(gen_mean, f"({gen_s:.0f} s); overhead ratio {ovh['median_ratio']:.3f}")

# %% [markdown]
# ## Figures

# %%
fig = probe_viz.capacity_curve(ks, capacity, CONTROLS)
p_cap = outputs.figure_path("03_capacity.png")
fig.savefig(p_cap, dpi=120)
plt.show()

# %%
fig = probe_viz.confusion(elapsed["answers"], {c: elapsed[c]["pred"] for c in
                          ("reservoir", "stateless", "reset")}, k_max + 1)  # fmt: skip
p_conf = outputs.figure_path("03_elapsed_confusion.png")
fig.savefig(p_conf, dpi=120)
plt.show()

# %%
fig = probe_viz.idle_curves(idle_eval, idle_curves, 1 / idle_k)
p_idle = outputs.figure_path("03_idle_retention.png")
fig.savefig(p_idle, dpi=120)
plt.show()

# %%
fig = probe_viz.dppl_bars(list(dppl), list(dppl.values()))
p_dppl = outputs.figure_path("03_dppl.png")
fig.savefig(p_dppl, dpi=120)
plt.show()

# %% [markdown]
# ## Save

# %%
run_info = {n: {"hash": r.hash, "config": r.config.to_dict(), "wall_time_s": r.wall_time_s,
                "loaded": r.loaded, "history": r.history} for n, r in runs.items()}  # fmt: skip
perplexity = {n: p.summary | {"dppl_pct": dppl[n], "block_nll": p.block_nll} for n, p in ppl.items()}  # fmt: skip
stability = {"carried": carry, "after_blocks": after_blocks, "idle": idle_stab, "after_generation": gen_state}  # fmt: skip
figures = {"capacity": p_cap, "elapsed": p_conf, "idle": p_idle, "dppl": p_dppl}
findings = h1.findings(model_name, h1_label, capacity, elapsed, idle_curves, perplexity, init_equal, stability, gen_mean,
                       ovh, run_info, figures, outputs, ks=ks, train_ks=train_ks, k_max=k_max, pre_max=pre_max,
                       n_test=n_test, idle_k=idle_k, idle_train=idle_train, idle_eval=idle_eval,
                       idle_n_test=idle_n_test, ppl_blocks=ppl_blocks, block_len=block_len, carried=carried,
                       idle_long=idle_long, gen_tokens=gen_tokens, n_gen_prompts=n_gen_prompts,
                       overhead_reps=overhead_reps, threads=threads)  # fmt: skip
payload = {
    "capacity": {k: capacity[k] for k in ks},
    "elapsed": elapsed,
    "idle_retention": {"idle_counts": idle_eval, "curves": idle_curves},
    "perplexity": perplexity,
    "init_logits_equal": init_equal,
    "stability": stability,
    "generation": gen, "generation_mean": gen_mean, "prompts": prompts,
    "overhead": ovh,
    "runs": run_info,
    "settings": dict(model_name=model_name, layer=layer, ks=ks, train_ks=train_ks, train_steps=train_steps,
                     train_lr=train_lr, h1_k=h1_k, h1_run=h1_run, h1_hash=main.hash,
                     n_test=n_test, input_scaling=input_scaling,
                     idle_srs=idle_srs, idle_train=idle_train, ppl_blocks=ppl_blocks,
                     block_len=block_len, carried=carried, idle_long=idle_long,
                     gen_tokens=gen_tokens, torch_threads=threads),
}  # fmt: skip
path = results.save_results("03_h1_nondestruction", payload, outputs, seed=seed,
                            model_name=model_name, wall_time_s=time.perf_counter() - t_start,
                            findings=findings,
                            extra_meta={"timing": {"h1_ppl_s": ppl_s, "generation_s": gen_s}})  # fmt: skip
print(f"saved {outputs.rel(path)}")
adapter = outputs.base / "data" / "adapters" / f"{model_name}-k{h1_k}"  # ran demo, README example
sw_main.handle.save_pretrained(adapter, model_name, sw_main.config)
print(f"adapter {outputs.rel(adapter)}")
