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
# # 02 · Surgery: a reservoir inside one attention layer
#
# `ran.mechanisms.reservoir_slots.inject` appends $M$ reservoir slots (keys and values read out of
# the reservoir state $r(t)$) to the keys/values of one mid layer $L$, after
# RoPE and outside the KV cache, behind a per-head gate $g$ closed at init:
# the layer returns $\text{plain} + \tanh(g)(\text{augmented} - \text{plain})$
# with "plain" computed by the model's own attention function, so at init the
# injected model is **bit-identical** to the untouched one. After each pass the
# reservoir is driven once by layer $L$'s attention output pooled at the last
# real token, normalised so that $W_{in}u$ has RMS `input_scaling` whatever the
# width. This notebook checks exactness (GQA Llama: the embedded SmolLM2-135M;
# a GPT-2-architecture model), shows where attention goes once the gate opens,
# and drives the reservoir with real attention streams to choose the pooling
# and `input_scaling`. Logic lives in `ran.mechanisms.reservoir_slots`, `ran.study.surgery`
# and `ran.report.figures.surgery`.

# %% [markdown]
# ## Imports

# %%
import time

import matplotlib.pyplot as plt
import torch

from ran.injection.config import InjectionConfig
from ran.report.figures import surgery as surgery_viz
from ran.reservoir import ReservoirConfig
from ran.study import surgery as A
from ran.util import results
from ran.util.memo import memo

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
profile = "default"  # smoke | default | paper
model_name = "smollm2-135m"  # model of the slot-attention and drive analyses
gpt2_name = "tiny-gpt2"  # GPT-2-architecture model of the exactness table (paper: gpt2)
seed = 0  # seed of the tiny models and of the random initial states
n_prompts = 48  # prompts in the stream (one pass each)
gate = 1.0  # gate logit g of the slot-attention figure, tanh(1) is 0.76
sr_list = "0.5,0.7,0.9,1.1,1.3"  # spectral radii of the sweep (comma string)
scaling_list = "0.03,0.1,0.3,1,3,10"  # input scalings of the sweep (comma string)
n_seeds = 3  # reservoir seeds of the sweep
max_saturation = 0.05  # saturation budget for choosing input_scaling
threads = 1  # torch threads (the CPU is shared: 1 is fastest)

# %%
smoke = dict(model_name="tiny-gpt2", gpt2_name="tiny-gpt2", n_prompts=12, n_seeds=1)
if profile == "smoke":
    globals().update(smoke)
if profile == "paper" and gpt2_name == "tiny-gpt2":
    gpt2_name, n_prompts = "gpt2", 128
outputs = results.Outputs(profile)
torch.set_num_threads(threads)
srs = results.parse_list(sr_list, float)
scalings = results.parse_list(scaling_list, float)
exact_models = list(dict.fromkeys([model_name, gpt2_name]))
default_res = ReservoirConfig()
default_inj = InjectionConfig()
texts = A.prompts(n_prompts)
print(
    f"profile={profile}: exactness on {exact_models}; analyses on {model_name}, {n_prompts} prompts"
)

# %% [markdown]
# ## Compute
# ### Bit-exactness at init and after `remove()`

# %%
t0 = time.perf_counter()
# cached by models, prompts, seed, library versions and code (ran.util.memo)
rows = memo(outputs, "exactness", dict(models=exact_models, texts=texts, seed=seed), A.exactness,
            exact_models, texts, seed=seed)  # fmt: skip
exact_s = time.perf_counter() - t0
n_equal = sum(r["equal"] and r["equal_after_remove"] for r in rows)
print(f"{n_equal}/{len(rows)} cases bit-identical ({exact_s:.0f} s)")
for r in rows:
    print(r)

# %% [markdown]
# ### Attention on the slots with the gate open, and real drive streams

# %%
t1 = time.perf_counter()
res_seeds = [default_res.seed + i for i in range(n_seeds)]
stream_key = dict(model=model_name, texts=texts, gate=gate, srs=srs, scalings=scalings,
                  reservoir=default_res, seeds=res_seeds, seed=seed)  # fmt: skip
streams = memo(outputs, "streams", stream_key, A.stream_analyses, model_name, texts, gate, srs,
               scalings, default_res, res_seeds, seed=seed)  # fmt: skip
mass, pstats, sweeps = streams["mass"], streams["pooling"], streams["sweeps"]
stream_s = time.perf_counter() - t1
best_pool = max(pstats, key=lambda p: pstats[p]["pr"])
chosen = A.choose_scaling(sweeps[default_inj.pooling], default_res.sr, max_saturation)
print(f"pooling stats: {pstats}; chosen input_scaling at sr={default_res.sr}: {chosen}")

# %% [markdown]
# ## Figures

# %%
fig = surgery_viz.slot_mass({model_name: mass})
p_mass = outputs.figure_path("02_slot_mass.png")
fig.savefig(p_mass, dpi=120)
plt.show()

# %%
fig = surgery_viz.sweep_maps(sweeps[default_inj.pooling], chosen=(default_res.sr, chosen))
p_sweep = outputs.figure_path("02_drive_sweep.png")
fig.savefig(p_sweep, dpi=120)
plt.show()

# %%
fig = surgery_viz.pooling_curves(sweeps, pstats, default_res.sr, max_saturation)
p_pool = outputs.figure_path("02_pooling.png")
fig.savefig(p_pool, dpi=120)
plt.show()

# %% [markdown]
# ## Save

# %%
figures = {"mass": p_mass, "sweep": p_sweep, "pooling": p_pool}
findings = A.findings(rows, exact_models, mass, sweeps, pstats, chosen, best_pool, figures, outputs,
                      model_name=model_name, n_prompts=n_prompts, n_seeds=n_seeds, max_saturation=max_saturation,
                      res=default_res, inj=default_inj)  # fmt: skip
payload = {
    "exactness": rows,
    "slot_mass": {"per_pass_head": mass["mass"], "layer": mass["layer"], "tanh_gate": mass["gate"]},
    "pooling": pstats,
    "sweeps": sweeps,
    "chosen_input_scaling": chosen,
    "best_pooling_by_pr": best_pool,
    "settings": dict(exact_models=exact_models, model_name=model_name, n_prompts=n_prompts,
                     gate=gate, srs=srs, scalings=scalings, reservoir_seeds=res_seeds,
                     max_saturation=max_saturation, reservoir=default_res, torch_threads=threads,
                     prompts=texts),
}  # fmt: skip
path = results.save_results("02_surgery", payload, outputs, seed=seed, model_name=model_name,
                            wall_time_s=time.perf_counter() - t0, findings=findings,
                            extra_meta={"timing": {"exactness_s": exact_s, "stream_s": stream_s}})  # fmt: skip
print(f"saved {outputs.rel(path)}")
