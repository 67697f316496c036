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
# # 04 · The mechanisms compared, the attractor's claims, and scaling across models
#
# Three parts. (1) **Comparison** on one model of the memory mechanisms of
# `ran.mechanisms` (reservoir slots, persistent static slots, trained
# recurrence, the inference-time attractor; the extended comparison adds the
# reservoir prefix and the additive readout, outside `make all`'s budget):
# secret-word recall at every K (one readout trained at the largest K serves
# all), elapsed passes, idle retention, ΔPPL at init and after training,
# greedy generation, overhead, trainable parameters and training wall time,
# each with its controls (reset, shuffled, stateless, oracle, chance) and 95%
# CIs. (2) The **attractor layer's reported behaviours** (about 0% ΔPPL, about
# 6.5% overhead, degradation on ~500-token generation, fixed by gating +
# burn-in), measured on our model, with a verdict computed from stated
# tolerances. (3) **Scaling**: the same pipeline across models (profile
# `paper`: GPT-2 124M/355M, Qwen2.5 0.5B/1.5B; `smoke`: tiny random GPT-2,
# Qwen2, Llama) or across reservoir units x input scaling on the embedded
# model (profile `default`). Logic lives in `ran.study.compare`, `ran.evaluation.measure`,
# `ran.study.claims`, `ran.study.scaling` and `ran.report.figures.compare`.

# %% [markdown]
# ## Imports

# %%
import dataclasses
import time

import matplotlib.pyplot as plt
import torch

from ran.injection.config import InjectionConfig
from ran.report.figures import compare as compare_viz
from ran.reservoir import ReservoirConfig
from ran.study import claims as compare_claims
from ran.study import compare, scaling
from ran.study import tables as compare_tables
from ran.training import jobs
from ran.training.config import TrainConfig
from ran.util import results

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
profile = "default"  # smoke | default | paper
model_name = "smollm2-135m"  # the model of the comparison
seed = 0  # readout init, data order, probe episodes, bootstraps
layer = 15  # injected layer of the comparison, -1 for the middle layer
threads = 2  # torch threads (2 when the notebook has the machine to itself)
kinds = "reservoir,persistent,recurrent,attractor"  # the mechanisms compared (make all)
elapsed_kinds = "reservoir,recurrent"  # kinds that also run the elapsed probe ("all", "none")
k_list = "6,16"  # K of the recall test; readouts are trained at the largest
steps = 80  # optimiser steps of each recall run (upper bound, early stopping)
elapsed_steps = 40  # optimiser steps of each elapsed-passes run
batch = 16  # episodes per step
lr = 0.02  # peak learning rate
gate_init = 0.0  # gate logit at init (0: closed)
units = 512  # reservoir units of the comparison
input_scaling = 0.3  # reservoir input scaling of the comparison
kl_weight = 0.0  # weight of the KL divergence from the base model on plain text (0: off)
kl_batch = 2  # text blocks per step for the KL term
kl_len = 48  # tokens per KL block
n_train = 3200  # training episodes per probe
n_val = 64  # validation episodes per probe (early stopping)
n_test = 64  # test episodes per probe and K (identical for every control)
k_max = 4  # elapsed passes: answers 0..k_max
pre_max = 4  # elapsed passes: filler passes before the event, 0..pre_max
idle_list = "0,4,16"  # idle passes before the question (no idle training)
idle_k = 16  # keys of the idle-retention test
ppl_blocks = 8  # held-out perplexity blocks
block_len = 256  # tokens per block (and the overhead sequence length)
gen_tokens = 500  # greedy tokens per prompt
n_gen_prompts = 1  # held-out generation prompts
overhead_reps = 6  # interleaved timing repetitions
attractor_gate = 0.1  # attractor feedback gain g when on
tol_dppl = 1.0  # "about 0%": |ΔPPL| below this (%)
tol_overhead_low = 0.0  # "about 6.5%": overhead within [low, high] (%)
tol_overhead_high = 15.0
tol_rep4 = 0.05  # degraded: rep-4 above the base's by more than this
tol_ppl = 10.0  # degraded: perplexity under the base above the base's by more than this (%)
scale_models = "gpt2,gpt2-medium,Qwen/Qwen2.5-0.5B,Qwen/Qwen2.5-1.5B"  # paper profile's models
scale_units = "768,1024,896,1536"  # reservoir units per model (paper; one value: all)
scale_input_scaling = "0.3"  # input scaling per model (paper; one value: all)
units_list = "128,512"  # default profile: units axis, at the comparison's input_scaling
input_scaling_list = "0.3,1.0"  # default profile: input scaling axis, at the comparison's units
scale_k = 16  # keys of the scaling runs (the max K: the comparison's reservoir run is reused)
scale_steps = 80  # optimiser steps of each scaling run
scale_n_test = 64  # test episodes per scaling point
scale_ppl_blocks = 8  # perplexity blocks per scaling point
scale_block_len = 128  # tokens per block (and overhead length) per scaling point
scale_overhead_reps = 5  # timing repetitions per scaling point
extended = False  # also the extended comparison, saved as 04_extended (outside the 45-min budget of make all)
ext_k_list = "6,16,64"  # extended comparison: K of recall (readouts trained at the largest)
ext_elapsed_kinds = "all"  # extended comparison: kinds that also run the elapsed probe
ext_kinds = "reservoir,persistent,additive,recurrent,attractor,prefix"  # extended comparison: the mechanisms

# %%
smoke = dict(model_name="tiny-llama", layer=-1, k_list="4,8", steps=3, elapsed_steps=2, batch=8, n_train=128,
             n_val=16, n_test=16, k_max=3, idle_list="0,2", idle_k=4, ppl_blocks=2, units=64, overhead_reps=2,
             block_len=32, gen_tokens=24, scale_models="tiny-gpt2,tiny-qwen2,tiny-llama", scale_units="64",
             scale_input_scaling="0.3", scale_k=4, scale_steps=3, scale_n_test=16, scale_ppl_blocks=2,
             scale_block_len=32, scale_overhead_reps=2, extended=True, ext_k_list="2,4,8")  # fmt: skip
if profile == "smoke":
    globals().update(smoke)
outputs = results.Outputs(profile)
torch.set_num_threads(threads)
kind_list = results.parse_list(kinds, str)
el_kinds = compare.parse_kinds(elapsed_kinds, kind_list)
ks = tuple(results.parse_list(k_list, int))
WRITE = ("The secret word is {key}.",)
inject_extra = dict(gate_init=gate_init)  # InjectionConfig fields of every run
train_extra = dict(warmup_steps=min(5, steps - 1), eval_every=20, patience=2,
                   kl_batch=kl_batch, kl_len=kl_len)  # fmt: skip
cc = compare.CompareConfig(
    model_name=model_name, layer=None if layer < 0 else layer, seed=seed, ks=ks, n_train=n_train,
    n_val=n_val, n_test=n_test, reservoir=ReservoirConfig(units=units, input_scaling=input_scaling),
    steps=steps, elapsed_steps=elapsed_steps, batch_size=batch, learning_rate=lr,
    kl_weight=kl_weight, secret_params=dict(write_templates=WRITE),
    elapsed_params=dict(k_max=k_max) | ({"pre_max": pre_max} if pre_max else {}),
    idle_counts=tuple(results.parse_list(idle_list, int)), idle_k=idle_k, ppl_blocks=ppl_blocks,
    block_len=block_len, gen_tokens=gen_tokens, n_gen_prompts=n_gen_prompts,
    overhead_reps=overhead_reps, train=train_extra | {"injection": inject_extra},
)  # fmt: skip
tol = compare_claims.Tolerances(tol_dppl, tol_overhead_low, tol_overhead_high, tol_rep4, tol_ppl)
t_start = time.perf_counter()
print(f"profile={profile}: {model_name}, kinds={kind_list}, K={ks} (trained at {cc.k_train})")

# %% [markdown]
# ## Compute
# ### Comparison of the mechanisms (identical test episodes for every control)

# %%
t_cmp = time.perf_counter()
base = compare.compare_base(cc, outputs)
cmp, failed = compare.compare_all(cc, base, kind_list, el_kinds, outputs, attractor_gate)
cmp_s = time.perf_counter() - t_cmp
checks = compare_tables.must_shows(cmp, ks)

# %% [markdown]
# ### The attractor layer's reported behaviours

# %%
att = ("attractor (no gating)", "attractor (gating + burn-in)")
claim_rows = (compare_claims.claims(cmp[att[0]], cmp[att[1]], base.generation, tol)
              if set(att) <= set(cmp) else [])  # fmt: skip
for row in claim_rows:
    print(row)

# %% [markdown]
# ### Extended comparison (`extended`): recall up to K = 64, elapsed passes for every kind
#
# The same comparison with the readouts trained at the largest K of
# `ext_k_list` and the elapsed probe run by every kind. It costs more than the
# default profile's 45-minute budget allows, so it is a separate run
# (`python -m ran run --only 04 -p extended true`) saved as `04_extended`;
# the elapsed runs of the kinds above are reused from the cache.

# %%
t_ext = time.perf_counter()
if extended:
    cc_ext = dataclasses.replace(cc, ks=tuple(results.parse_list(ext_k_list, int)))
    ext_kind_list = results.parse_list(ext_kinds, str)
    cmp_ext, failed_ext = compare.compare_all(
        cc_ext, base, ext_kind_list, compare.parse_kinds(ext_elapsed_kinds, ext_kind_list), outputs,
        attractor_gate)  # fmt: skip
ext_s = time.perf_counter() - t_ext

# %% [markdown]
# ### Scaling: across models (smoke, paper) or across units x input scaling (default)

# %%
t_scale = time.perf_counter()
if profile == "default":
    # two axes through the comparison's reservoir (units, input_scaling), whose run is reused
    grid = [(model_name, u, input_scaling) for u in results.parse_list(units_list, int)]
    grid += [(model_name, units, s) for s in results.parse_list(input_scaling_list, float)
             if s != input_scaling]  # fmt: skip
    x_key, group_key, scale_layer = "units", "input_scaling", None if layer < 0 else layer
else:
    models = results.parse_list(scale_models, str)
    grid = list(zip(models, scaling.per_model(models, scale_units, int),
                    scaling.per_model(models, scale_input_scaling, float), strict=True))  # fmt: skip
    x_key, group_key, scale_layer = "model_params", None, None
sw_scale = dict(k=scale_k, n_train=n_train, n_val=n_val, n_test=scale_n_test, write_templates=WRITE)
scale_cfgs = [TrainConfig(model_name=name, probe="secret_word",
                          probe_params=sw_scale, steps=scale_steps, batch_size=batch,
                          learning_rate=lr, kl_weight=kl_weight, seed=seed,
                          injection=InjectionConfig(
                              layer=scale_layer, **inject_extra,
                              reservoir=ReservoirConfig(units=n_units, input_scaling=isc)),
                          **train_extra)
              for name, n_units, isc in grid]  # fmt: skip
jobs.train_all([c for c in scale_cfgs if not scaling.point_cached(c, outputs, scale_n_test,
                scale_ppl_blocks, scale_block_len, scale_overhead_reps)], outputs)  # fmt: skip
points = []
for (name, n_units, isc), cfg in zip(grid, scale_cfgs, strict=True):
    pt = scaling.scaling_point(cfg, outputs, scale_n_test, scale_ppl_blocks, scale_block_len,
                               scale_overhead_reps)  # fmt: skip
    points.append(pt)
    print(f"{name} N={n_units} is={isc:g}: recall {pt['recall']['reservoir']['acc']:.3f} "
          f"(reset {pt['recall']['reset']['acc']:.3f}), ΔPPL {pt['dppl_trained']['dppl_pct']:+.2f}%, "
          f"overhead {pt['overhead']['median_ratio']:.3f}")  # fmt: skip
scale_s = time.perf_counter() - t_scale

# %% [markdown]
# ## Figures

# %%
fig = compare_viz.comparison_figure(cmp, ks)
p_cmp = outputs.figure_path("04_comparison.png")
fig.savefig(p_cmp, dpi=120)
plt.show()

# %%
if extended:
    fig = compare_viz.comparison_figure(cmp_ext, cc_ext.ks)
    p_ext = outputs.figure_path("04_extended.png")
    fig.savefig(p_ext, dpi=120)
    plt.show()

# %%
fig = compare_viz.scaling_figure(points, x_key, group_key)
p_scale = outputs.figure_path("04_scaling.png")
fig.savefig(p_scale, dpi=120)
plt.show()

# %% [markdown]
# ## Save

# %%
figures = {"comparison": p_cmp, "scaling": p_scale}
findings = scaling.findings(cmp, cc, base.generation, failed, claim_rows, tol, attractor_gate, points, x_key,
                            figures, outputs, scale_k=scale_k, scale_steps=scale_steps, scale_n_test=scale_n_test,
                            scale_ppl_blocks=scale_ppl_blocks, scale_block_len=scale_block_len,
                            scale_overhead_reps=scale_overhead_reps)  # fmt: skip
payload = {
    "comparison": {lab: {k: v for k, v in r.items()} for lab, r in cmp.items()},
    **checks,
    "failed": failed,
    "base": {"ppl": base.ppl.summary | {"block_nll": base.ppl.block_nll},
             "generation": base.generation, "prompts": base.prompts},
    "claims": {"rows": claim_rows, "timing_rows": compare_claims.timing_rows(claim_rows),
               "tolerances": tol, "attractor_gate": attractor_gate},
    "scaling": {"points": points, "x_key": x_key, "group_key": group_key},
    "settings": dict(model_name=model_name, layer=layer, kinds=kind_list, ks=ks,
                     k_train=cc.k_train, n_test=n_test, steps=steps, elapsed_steps=elapsed_steps,
                     kl_weight=kl_weight, idle_counts=cc.idle_counts, idle_k=idle_k,
                     ppl_blocks=ppl_blocks, block_len=block_len, gen_tokens=gen_tokens,
                     torch_threads=threads, scale_grid=grid, scale_k=scale_k,
                     scale_steps=scale_steps),
}  # fmt: skip
path = results.save_results("04_qwen_scaling", payload, outputs, seed=seed, model_name=model_name,
                            wall_time_s=time.perf_counter() - t_start - ext_s, findings=findings,
                            extra_meta={"timing": {"comparison_s": cmp_s, "scaling_s": scale_s}})  # fmt: skip
print(f"saved {outputs.rel(path)}")

# %%
if extended:
    ext_findings = compare_tables.findings(cmp_ext, cc_ext, base.generation, p_ext, outputs,
                                           failed_ext, compare_claims.gated(attractor_gate),
                                           cc_ext.ks[-1])  # fmt: skip
    ext_payload = {
        "comparison": cmp_ext,
        **compare_tables.must_shows(cmp_ext, cc_ext.ks),
        "failed": failed_ext,
        "settings": payload["settings"] | dict(kinds=ext_kind_list, ks=cc_ext.ks, k_train=cc_ext.k_train,
                                               elapsed_kinds=ext_elapsed_kinds),
    }  # fmt: skip
    path = results.save_results("04_extended", ext_payload, outputs, seed=seed,
                                model_name=model_name, wall_time_s=ext_s, findings=ext_findings,
                                extra_meta={"timing": {"comparison_s": ext_s}})  # fmt: skip
    print(f"saved {outputs.rel(path)}")
